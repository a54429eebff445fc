"""The Relax quantizer: exact integer arithmetic, which layers it touches, and its calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from numpy.lib.stride_tricks import sliding_window_view
from tvm import relax

from qbuild.errors import QbuildError
from qbuild.quantize import QConfig, make, quantize
from qbuild.quantize.calibrate import Histogram, threshold
from qbuild.quantize.fixed_point import requantize_reference
from qbuild.quantize.memo import Memory
from qbuild.trace import trace
from qbuild.verify import compare_logits


class ConvReluPool(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)


class Tiny(torch.nn.Module):
    """conv-bn-relu, a conv with a residual add, max pooling, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = torch.nn.BatchNorm2d(8)
        self.conv1 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)
        with torch.no_grad():
            self.bn0.running_mean.uniform_(-0.5, 0.5)
            self.bn0.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        a = torch.relu(self.bn0(self.conv0(x)))
        b = torch.relu(self.conv1(a) + a)
        return self.fc(torch.nn.functional.max_pool2d(b, 2).mean(dim=(2, 3)))


def build(module: relax.Expr):
    vm = relax.VirtualMachine(tvm.compile(module, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return lambda x: vm["main"](tvm.runtime.tensor(x))[0].numpy()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    module = Tiny().eval()
    return module, trace(module, (1, 3, 16, 16))


def images(n: int, shape=(3, 16, 16)):
    rng = np.random.default_rng(1)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def reference_conv_relu_pool(x, weight, bias, nbit_activation):
    """The integer arithmetic of qbuild's int8 conv, in NumPy (relay defaults: power-of-two scales)."""
    s_in = 8.0 / 128
    q_in = np.clip(np.floor(x * np.float32(1 / s_in) + np.float32(0.5)), -127, 127).astype(np.int64)
    s_w = 2.0 ** np.ceil(np.log2(np.abs(weight).max())) / 128
    q_w = np.clip(np.floor(weight / s_w + 0.5), -127, 127).astype(np.int64)
    windows = sliding_window_view(np.pad(q_in, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    acc = np.einsum("nchwij,ocij->nohw", windows, q_w)
    acc = acc + np.floor(bias / (s_in * s_w) + 0.5).astype(np.int64).reshape(1, -1, 1, 1)
    acc = np.maximum(acc, 0)
    s_act = 8.0 / 2 ** (nbit_activation - 1)
    q = requantize_reference(acc, s_in * s_w / s_act, 2 ** (nbit_activation - 1) - 1)
    pooled = q.reshape(1, 4, 4, 2, 4, 2).max(axis=(3, 5))
    return pooled.astype(np.float32) * np.float32(s_act)


@pytest.mark.parametrize("activation", [("int8", 8), ("int16", 16), ("int32", 32)])
def test_a_quantized_conv_is_bit_exact_against_the_numpy_integer_reference(activation):
    dtype, nbit = activation
    torch.manual_seed(0)
    module = ConvReluPool().eval()
    traced = trace(module, (1, 3, 8, 8))
    config = make(skip_conv_layers=None, dtype_activation=dtype, nbit_activation=nbit)
    quantized = quantize(traced.mod, traced.params, config=config)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = reference_conv_relu_pool(x, module.conv.weight.detach().numpy(), module.conv.bias.detach().numpy(), nbit)
    np.testing.assert_array_equal(build(quantized.mod)(x), expected)


def test_relay_defaults_skip_the_first_conv_and_the_dense_layer_and_stay_close_to_float(tiny):
    module, traced = tiny
    quantized = quantize(traced.mod, traced.params, config=make())
    fates = [(layer["op"], layer["index"], layer["status"], layer["reason"]) for layer in quantized.layers]
    assert fates == [
        ("nn.conv2d", 0, "skipped", "skip_conv_layers=[0]"),
        ("nn.conv2d", 1, "quantized", None),
        ("nn.dense", 0, "skipped", "skip_dense_layer=True"),
    ]
    x = images(1)[0][None]
    report = compare_logits(module(torch.from_numpy(x)).detach().numpy(), build(quantized.mod)(x))
    assert report["cosine_similarity"] > 0.99


def test_the_rewrite_emits_int8_operands_int32_accumulation_and_an_integer_residual_add(tiny):
    _module, traced = tiny
    script = quantize(traced.mod, traced.params, config=make()).mod.script()
    assert 'out_dtype="int32"' in script and 'dtype="int8"' in script
    assert "R.add(" in script and 'dtype="int64"' in script  # the residual add, rescaled in int64


class TwoReaders(torch.nn.Module):
    """A float tensor (after the skipped first conv) that two convs read, as a ResNet block's input
    is read by its first conv and by its shortcut's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv_a, self.conv_b = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 1)

    def forward(self, x):
        a = torch.relu(self.conv0(x))
        return (self.conv_a(a) + self.conv_b(a)).mean(dim=(2, 3))


def test_a_tensor_that_two_convs_read_is_quantized_once():
    torch.manual_seed(0)
    module = TwoReaders().eval()
    traced = trace(module, (1, 3, 16, 16))
    quantized = quantize(traced.mod, traced.params, config=make())
    assert [layer["status"] for layer in quantized.layers] == ["skipped", "quantized", "quantized"]
    assert quantized.mod.script().count("R.floor(") == 1  # one float -> int8 quantize, for both convs
    x = images(1)[0][None]
    report = compare_logits(module(torch.from_numpy(x)).detach().numpy(), build(quantized.mod)(x))
    assert report["cosine_similarity"] > 0.99


class TwoBlocks(torch.nn.Module):
    """Two residual blocks, each output a ReLU of a sum that the next block's conv and add read;
    block b's sums reach further below zero than above."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv1, self.conv2 = (torch.nn.Conv2d(c, 8, 3, padding=1) for c in (3, 8, 8))
        with torch.no_grad():
            self.conv1.bias.fill_(-2.0)

    def forward(self, x):
        a = torch.relu(self.stem(x))
        b = torch.relu(self.conv1(a) + a)
        return torch.relu(self.conv2(b) + b).mean(dim=(2, 3))


def test_a_residual_sum_that_a_relu_alone_reads_is_stored_at_the_relus_scale_for_the_next_conv():
    """Calibrated ranges are per tensor: at the sum's own scale, the block output would be
    requantized again for the next conv, which reads the ReLU's output."""
    from qbuild.relax.graph import bindings, op_name

    torch.manual_seed(0)
    module = TwoBlocks().eval()
    traced = trace(module, (1, 3, 16, 16))
    config = make(
        calibrate_mode="percentile",
        per_channel_weights=True,
        calibrate_samples=3,
        nbit_activation=8,
        dtype_activation="int8",
    )
    quantized = quantize(traced.mod, traced.params, images(3), config)
    producers = {binding.var: op_name(binding.value) for binding in bindings(quantized.mod)}
    conv_inputs = [
        binding.value.args[0] for binding in bindings(quantized.mod) if op_name(binding.value) == "relax.nn.conv2d"
    ]
    assert producers[conv_inputs[2]] == "relax.maximum", "conv2 reads block b's ReLU as it is, no requantize"
    x = images(1)[0][None]
    report = compare_logits(module(torch.from_numpy(x)).detach().numpy(), build(quantized.mod)(x))
    assert report["cosine_similarity"] > 0.99


def test_debug_enabled_ops_restricts_what_is_quantized(tiny):
    _module, traced = tiny
    quantized = quantize(
        traced.mod,
        traced.params,
        config=make(debug_enabled_ops=["nn.dense"], skip_dense_layer=False, skip_conv_layers=None),
    )
    assert [(layer["op"], layer["status"]) for layer in quantized.layers] == [
        ("nn.conv2d", "skipped"),
        ("nn.conv2d", "skipped"),
        ("nn.dense", "quantized"),
    ]


def test_a_skip_index_beyond_the_models_convolutions_is_rejected(tiny):
    _module, traced = tiny
    with pytest.raises(QbuildError, match=r"skip_conv_layers=\[5\] is out of range: the model has 2 convolutions"):
        quantize(traced.mod, traced.params, config=make(skip_conv_layers=[5]))


def test_data_driven_calibration_without_data_says_what_to_pass(tiny):
    _module, traced = tiny
    with pytest.raises(QbuildError, match="needs calibration images") as err:
        quantize(traced.mod, traced.params, config=make(calibrate_mode="percentile"))
    assert "--dataset" in err.value.fix


def test_calibration_in_chunks_gives_the_same_model(tiny):
    module, traced = tiny
    x = images(1)[0][None]
    outputs = []
    for chunk in (-1, 1):
        config = make(calibrate_mode="max", calibrate_chunk_by=chunk, calibrate_samples=3, per_channel_weights=True)
        quantized = quantize(traced.mod, traced.params, images(3), config)  # a new memory: measured again
        assert quantized.calibration["images"] == 3 and quantized.calibration["tensors"] > 0
        outputs.append(build(quantized.mod)(x))
    np.testing.assert_array_equal(*outputs)


def test_the_precisions_of_a_sweep_share_one_calibration_of_the_same_module_and_images(tiny):
    _module, traced = tiny
    memory = Memory()
    sweep = dict(calibrate_mode="mse", per_channel_weights=True, weight_rounding="gptq", calibrate_samples=3)
    module = traced.inference_module()
    x = images(1)[0][None]
    kept = {
        bits: build(quantize(module, None, images(3), make(nbit_weight=bits, **sweep), memory=memory).mod)(x)
        for bits in (8, 4)
    }
    assert memory.measurements == 1, "one calibration run for both precisions"
    quantize(module, None, images(3), make(nbit_weight=4, **{**sweep, "weight_rounding": "nearest"}), memory=memory)
    assert memory.measurements == 1, "statistics with Gram matrices serve a calibration that needs none"
    quantize(module, None, images(4), make(nbit_weight=4, **{**sweep, "calibrate_samples": 4}), memory=memory)
    assert memory.measurements == 2, "other images are measured again"
    fresh = build(quantize(module, None, images(3), make(nbit_weight=4, **sweep)).mod)(x)
    np.testing.assert_array_equal(kept[4], fresh)


def test_histogram_percentile_and_range_doubling_keep_every_value():
    histogram = Histogram()
    histogram.add(np.linspace(0.001, 1.0, 1000))
    histogram.add(np.linspace(0.001, 5.0, 1000))  # beyond the first range: bins merge, range doubles
    assert histogram.counts.sum() == 2000 and histogram.max_abs == 5.0
    assert histogram.percentile(100.0) == pytest.approx(5.0)
    assert histogram.percentile(50.0) == pytest.approx(1 / 1.2, abs=0.01)  # m*1000 + m/5*1000 = 1000


def test_zeros_do_not_pull_the_kl_threshold_down():
    values = np.maximum(np.random.default_rng(0).standard_normal(200_000), 0)  # half exact zeros
    histogram = Histogram()
    histogram.add(values)
    assert 0.7 * histogram.max_abs < histogram.kl_threshold(128) <= histogram.max_abs


def test_wide_tensors_are_never_clipped_by_calibration():
    histogram = Histogram()
    histogram.add(np.random.default_rng(0).laplace(size=100_000))
    config = make(calibrate_mode="percentile", calibrate_percentile=99.0)
    int8, int32 = QConfig.qmax(8), QConfig.qmax(32)  # positive codes of each width
    assert threshold(config, histogram, int8) < histogram.max_abs
    assert threshold(config, histogram, int32) == histogram.max_abs
    assert threshold(make(), histogram, int8) == 8.0  # global_scale ignores the data


def test_a_histograms_thresholds_follow_new_values():
    rng = np.random.default_rng(0)
    histogram = Histogram()
    histogram.add(rng.laplace(size=100_000))
    first = histogram.kl_threshold(128), histogram.mse_threshold(7)
    assert (histogram.kl_threshold(128), histogram.mse_threshold(7)) == first
    histogram.add(rng.laplace(size=100_000) * 4)  # a wider spread: other thresholds
    fresh = Histogram(counts=histogram.counts.copy(), upper=histogram.upper, max_abs=histogram.max_abs)
    assert (histogram.kl_threshold(128), histogram.mse_threshold(7)) == (
        fresh.kl_threshold(128),
        fresh.mse_threshold(7),
    )
    assert histogram.kl_threshold(128) != first[0]


def test_weights_rounded_once_per_precision_come_back_the_same_and_read_only():
    from qbuild.quantize.rewrite import Rewriter

    memory = Memory()
    weights = np.random.default_rng(0).laplace(size=(8, 16, 1, 1))
    gram = np.eye(16) * np.arange(1, 17)
    config = make(per_channel_weights=True, weight_scale="mse", weight_rounding="gptq", calibrate_mode="mse")
    first = Rewriter(config, lambda var, levels: 1.0, memory=memory).quantized_weights(weights, 0, 4, gram)
    again = Rewriter(config, lambda var, levels: 1.0, memory=memory).quantized_weights(
        weights.copy(), 0, 4, gram.copy()
    )
    other = Rewriter(config, lambda var, levels: 1.0, memory=memory).quantized_weights(weights, 0, 2, gram)
    assert memory.roundings == 2, "equal weights and Gram matrix at the same precision are rounded once"
    assert again[0] is first[0] and not first[0].flags.writeable and not first[1].flags.writeable
    assert other[0].max() < first[0].max()
    fresh = Rewriter(config, lambda var, levels: 1.0).quantized_weights(weights, 0, 4, gram)
    np.testing.assert_array_equal(fresh[0], first[0])


def test_a_model_with_every_layer_skipped_needs_no_calibration_run(tiny):
    _module, traced = tiny
    config = make(calibrate_mode="max", skip_conv_layers=[0, 1], skip_dense_layer=True, calibrate_samples=1)
    quantized = quantize(traced.mod, traced.params, images(1), config)
    assert quantized.calibration == {"mode": "max", "tensors": 0, "images": 1}
    assert {layer["status"] for layer in quantized.layers} == {"skipped"}


def test_mse_ranges_clip_harder_the_fewer_the_bits():
    histogram = Histogram()
    histogram.add(np.random.default_rng(0).laplace(size=100_000))
    config = make(calibrate_mode="mse")
    two_bit, four_bit, eight_bit = (threshold(config, histogram, levels) for levels in (1, 7, 127))
    assert two_bit < four_bit < eight_bit < histogram.max_abs


def test_kl_mse_ranges_are_kls_at_8_bits_and_mses_below():
    histogram = Histogram()
    histogram.add(np.random.default_rng(0).laplace(size=100_000))
    mixed, kl, mse = (make(calibrate_mode=mode) for mode in ("kl_mse", "kl_divergence", "mse"))
    assert threshold(mixed, histogram, 127) == threshold(kl, histogram, 127) != threshold(mse, histogram, 127)
    for levels in (1, 7, 15):
        assert (
            threshold(mixed, histogram, levels) == threshold(mse, histogram, levels) != threshold(kl, histogram, levels)
        )


def test_mse_weight_scales_lose_less_than_max_scales_at_low_bits():
    from qbuild.bitpack import Encoding
    from qbuild.quantize.rewrite import Rewriter

    weights = np.random.default_rng(0).laplace(size=(8, 16, 3, 3))
    errors = {}
    for mode in ("max", "mse"):
        rewriter = Rewriter(make(per_channel_weights=True, weight_scale=mode, nbit_weight=2), lambda var, levels: 1.0)
        q, step, _encoding = rewriter.quantized_weights(weights, 0, 2)
        errors[mode] = float(((q * step.reshape(-1, 1, 1, 1) - weights) ** 2).sum())
    assert errors["mse"] < errors["max"]
    assert Encoding(2, "signed").high == 1  # 2-bit symmetric weights are ternary


def test_gptq_rounding_loses_less_of_the_layer_output_than_rounding_to_nearest():
    from qbuild.quantize import gptq

    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((16, 16)) * np.linspace(0.1, 3.0, 16)[:, None]
    inputs = mixing @ rng.standard_normal((16, 2000))  # correlated channels of unequal size, like activations
    weights = rng.standard_normal((8, 16))
    step = np.abs(weights).max(axis=1) / 7  # 4-bit symmetric, per output row

    def rounded(column):
        return np.clip(np.round(column / step), -7, 7)

    nearest = np.clip(np.round(weights / step[:, None]), -7, 7)
    codes = gptq.round_columns(weights, inputs @ inputs.T, rounded, step)
    assert codes.min() >= -7 and codes.max() <= 7 and not np.array_equal(codes, nearest)

    def output_error(q):
        return np.linalg.norm(weights @ inputs - (q * step[:, None]) @ inputs)

    assert output_error(codes) < 0.8 * output_error(nearest)


def test_gptq_blocks_round_like_one_column_at_a_time():
    from qbuild.quantize import gptq

    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((40, 500)) * np.linspace(0.2, 2.0, 40)[:, None]
    weights = rng.standard_normal((6, 40))
    step = np.abs(weights).max(axis=1) / 7

    def rounded(column):
        return np.clip(np.round(column / step), -7, 7)

    one_at_a_time = gptq.round_columns(weights, inputs @ inputs.T, rounded, step, block=1)
    for block in (7, 16, 40, 128):
        assert np.array_equal(gptq.round_columns(weights, inputs @ inputs.T, rounded, step, block=block), one_at_a_time)


class PadThenConv(torch.nn.Module):
    """TF-style "same" padding: an explicit zero pad, then an unpadded strided conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(8, 8, 3, stride=2)

    def forward(self, x):
        return self.conv1(torch.nn.functional.pad(torch.relu(self.conv0(x)), (0, 1, 0, 1)))


def test_an_explicit_zero_pad_becomes_the_quantized_convs_own_padding_with_the_same_integers(monkeypatch):
    import qbuild.relax.fold_pads

    torch.manual_seed(0)
    traced = trace(PadThenConv().eval(), (1, 3, 8, 8))
    config = make(skip_conv_layers=None)

    def ops(mod):
        return [
            str(b.value.op.name)
            for block in mod["main"].body.blocks
            for b in block.bindings
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
        ]

    folded = quantize(traced.mod, traced.params, config=config).mod
    assert "relax.nn.pad" not in ops(folded)
    monkeypatch.setattr(qbuild.relax.fold_pads, "fold_pads_into_convs", lambda: tvm.transform.Sequential([]))
    unfolded = quantize(traced.mod, traced.params, config=config).mod
    assert "relax.nn.pad" in ops(unfolded)
    x = images(1, (3, 8, 8))[0][None]
    np.testing.assert_array_equal(build(folded)(x), build(unfolded)(x))


def test_mse_weight_scales_weigh_each_input_channels_error_by_its_energy_when_the_gram_is_known():
    from qbuild.quantize.rewrite import mse_steps

    rng = np.random.default_rng(3)
    rows = rng.standard_normal((32, 16))
    rows[:, 0] *= 6.0  # one channel of large weights ...
    energy = np.ones(16)
    energy[0] = 1e-3  # ... whose input hardly ever carries a value
    magnitude = np.abs(rows).max(axis=1)

    def output_error(steps):
        q = np.clip(np.round(rows / steps[:, None]), -7, 7) * steps[:, None]
        return float((((q - rows) ** 2) * energy).sum())

    plain = mse_steps(rows, magnitude, 7, "UPWARD")
    weighted = mse_steps(rows, magnitude, 7, "UPWARD", energy)
    assert (weighted <= plain).all() and (weighted < plain).any(), "the idle channel's outliers get clipped"
    assert output_error(weighted) < output_error(plain)


class PointwiseClamp(torch.nn.Module):
    """A 1x1 conv whose pre-activations span hundreds, clamped (ReLU6: to [0, 6]) and stored in the
    activation dtype (the max pooling takes them as integers)."""

    def __init__(self, weights: np.ndarray, low: float, high: float | None) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(weights.shape[1], weights.shape[0], 1, bias=False)
        self.low, self.high = low, high
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(weights))

    def forward(self, x):
        return torch.nn.functional.max_pool2d(torch.clamp(self.conv(x), self.low, self.high), 1)


def _clamped_exactly(low: float, high: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quantized output, float output, pre-activations) of ``PointwiseClamp`` on inputs and weights
    that lie on their own 8-bit grids (calibrate_mode="max", per-channel weights), so that the integer
    accumulator is exact and the only rounding left is the one into the clamp's codes."""
    rng = np.random.default_rng(3)
    codes = rng.integers(-127, 128, (1, 2, 6, 6))
    codes[0, 0, 0, 0] = 127
    x = (codes * np.float32(4 / 127)).astype(np.float32)
    weights = rng.integers(-127, 128, (4, 2, 1, 1)).astype(np.float32)
    weights[:, 0] = 127
    weights *= 0.5
    traced = trace(PointwiseClamp(weights, low, high).eval(), (1, 2, 6, 6))
    config = make(
        skip_conv_layers=None,
        nbit_activation=8,
        dtype_activation="int8",
        calibrate_mode="max",
        per_channel_weights=True,
        weight_scale="max",
    )
    quantized = quantize(traced.mod, traced.params, dataset=[x[0]], config=config)
    pre_activation = np.einsum("nchw,oc->nohw", x, weights[:, :, 0, 0])
    return build(quantized.mod)(x), np.clip(pre_activation, low, high), pre_activation


def test_a_relu6_after_a_conv_keeps_8_bit_resolution_over_its_own_output_range():
    got, expected, pre_activation = _clamped_exactly(0.0, 6.0)
    assert np.abs(pre_activation).max() > 100, "the pre-activations span hundreds"
    np.testing.assert_allclose(got, expected, atol=0.5 * 6 / 127 + 1e-5)


def test_a_one_sided_clamp_after_a_conv_clips_only_where_it_has_a_bound():
    got, expected, _ = _clamped_exactly(-1.0, None)  # traced as clip(x, -1, inf)
    assert expected.min() == -1.0 and expected.max() > 100
    np.testing.assert_allclose(got, expected, atol=0.5 * np.abs(expected).max() / 127 + 1e-4)
