"""Sub-byte precisions: bit planes and packing, the bit-serial conv against NumPy, and the
quantizer's sub-byte layers end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from qbuild import plan
from qbuild.bitpack import WORD_BITS, Encoding, pack_channels, pack_conv_weights, unpack_channels
from qbuild.compile import compile_model
from qbuild.errors import QbuildError
from qbuild.kernels import MAX_AUTO_PAIRS, amx, auto_bitserial_pairs
from qbuild.kernels.bitserial import BitserialConv, reference
from qbuild.kernels.subbyte_convs import SubbyteConvs
from qbuild.quantize import make, quantize
from qbuild.subbyte import check_layers, random_values
from qbuild.targets import resolve_target
from qbuild.trace import trace

CPU = resolve_target("cpu")
ENCODINGS = [
    Encoding(1, "unsigned"),
    Encoding(2, "unsigned"),
    Encoding(4, "unsigned"),
    Encoding(2, "signed"),
    Encoding(4, "signed"),
    Encoding(8, "signed"),
    Encoding(1, "bipolar"),
]


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: f"{e.kind}{e.bits}")
def test_planes_times_coefficients_plus_offset_give_back_every_value(encoding):
    values = np.arange(encoding.low, encoding.high + 1)
    if encoding.kind == "bipolar":
        values = np.array([-1, 1])
    planes = encoding.planes(values)
    assert set(np.unique(planes)) <= {0, 1}
    rebuilt = np.tensordot(np.array(encoding.coefficients), planes.astype(np.int64), axes=1) + encoding.offset
    np.testing.assert_array_equal(rebuilt, values)


def test_values_outside_an_encoding_are_refused():
    with pytest.raises(ValueError):
        Encoding(2, "unsigned").planes(np.array([4]))
    with pytest.raises(QbuildError, match="bipolar"):
        Encoding(1, "signed")


def test_packing_puts_channel_k_at_bit_k_of_its_word_and_unpacks_losslessly():
    planes = np.zeros((2, 70), dtype=np.uint8)
    planes[0, 0] = planes[0, 33] = planes[1, 69] = 1
    packed = pack_channels(planes, axis=1)
    assert packed.dtype == np.uint32 and packed.shape == (2, 3)  # 70 channels -> 3 words, zero padded
    assert packed[0, 0] == 1 and packed[0, 1] == 2 and packed[1, 2] == 1 << (69 - 2 * WORD_BITS)
    random = np.random.default_rng(0).integers(0, 2, size=(3, 45, 2)).astype(np.uint8)
    np.testing.assert_array_equal(unpack_channels(pack_channels(random, axis=1), axis=1, channels=45), random)


def test_packed_weights_shrink_with_the_bits():
    weights = np.ones((64, 64, 3, 3), dtype=np.int64)
    int8_bytes = weights.astype(np.int8).nbytes
    one_bit = pack_conv_weights(weights, Encoding(1, "bipolar"), lanes=8)
    two_bit = pack_conv_weights(weights, Encoding(2, "signed"), lanes=8)
    assert one_bit.shape == (8, 2, 3, 3, 1, 8) and one_bit.nbytes * 8 == int8_bytes
    assert two_bit.nbytes * 4 == int8_bytes


def bitserial_module(spec: BitserialConv, data_shape: tuple[int, ...], weights: np.ndarray) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(spec.emit(bb, x, spec.pack(weights)))
        bb.emit_func_output(out)
    return bb.get()


def run_bitserial(spec: BitserialConv, data: np.ndarray, weights: np.ndarray, kernels: str = "builtin") -> tuple:
    compiled = compile_model(bitserial_module(spec, data.shape, weights), CPU, kernels)
    vm = relax.VirtualMachine(compiled.executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(data)).numpy(), compiled.kernels


def assert_scheduled_by_the_conv_rule(kernels: dict) -> None:
    """The conv was scheduled by the conv rule, not left as written. (A "generic" function is the
    legalized reshape of the input, which the VM runs as a view.)"""
    assert kernels["functions"]["conv"] == 1 and "unscheduled" not in kernels["functions"]


# (activation, weight, in channels, size, out channels, kernel, stride, padding)
CASES = {
    "W1A1 3x3": (Encoding(1, "unsigned"), Encoding(1, "bipolar"), 64, 8, 16, 3, 1, 1),
    "W2A2 3x3, channels not a word": (Encoding(2, "unsigned"), Encoding(2, "signed"), 40, 9, 24, 3, 1, 1),
    "W4A4 strided": (Encoding(4, "unsigned"), Encoding(4, "signed"), 16, 11, 8, 3, 2, 1),
    "signed inputs, 1x1": (Encoding(2, "signed"), Encoding(2, "signed"), 48, 7, 32, 1, 1, 0),
    "W1 with 3-bit signed inputs, 12 outputs": (Encoding(3, "signed"), Encoding(1, "bipolar"), 20, 6, 12, 3, 1, 1),
    "W8A2": (Encoding(2, "unsigned"), Encoding(8, "signed"), 32, 5, 8, 3, 1, 1),
    "W1A1 1x1 strided, unpadded, odd pixels": (Encoding(1, "unsigned"), Encoding(1, "bipolar"), 96, 9, 8, 1, 2, 0),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_the_bitserial_conv_is_bit_exact_against_numpy(case):
    activation, weight, cin, size, cout, k, stride, pad = CASES[case]
    rng = np.random.default_rng(len(case))
    data = random_values(rng, activation, (1, cin, size, size)).astype(np.int8)
    weights = random_values(rng, weight, (cout, cin, k, k))
    spec = BitserialConv(activation, weight, cout, (stride, stride), (pad, pad, pad, pad))
    got, kernels = run_bitserial(spec, data, weights)
    np.testing.assert_array_equal(got, reference(data, weights, (stride, stride), (pad, pad, pad, pad)))
    assert_scheduled_by_the_conv_rule(kernels)


def test_the_bitserial_conv_is_exact_with_tvms_untuned_kernels_too():
    activation, weight = Encoding(2, "unsigned"), Encoding(1, "bipolar")
    rng = np.random.default_rng(5)
    data = random_values(rng, activation, (1, 32, 6, 6)).astype(np.int8)
    weights = random_values(rng, weight, (8, 32, 3, 3))
    got, _ = run_bitserial(BitserialConv(activation, weight, 8, (1, 1), (1, 1, 1, 1)), data, weights, "untuned")
    np.testing.assert_array_equal(got, reference(data, weights, (1, 1), (1, 1, 1, 1)))


def test_for_a_cpu_with_vpopcntdq_the_bitserial_conv_counts_bits_with_vpopcnt():
    """Cross-compiled for AMD Zen 4 (AVX-512 VPOPCNTDQ; nothing built for it runs here): each
    vector of packed words is counted by one instruction, not LLVM's byte-shuffle expansion."""
    from test_kernels import ZEN4

    from qbuild.analysis import analyse_sources

    weights = random_values(np.random.default_rng(6), Encoding(1, "bipolar"), (16, 64, 3, 3))
    spec = BitserialConv(Encoding(1, "unsigned"), Encoding(1, "bipolar"), 16, (1, 1), (1, 1, 1, 1))
    compiled = compile_model(bitserial_module(spec, (1, 64, 8, 8), weights), ZEN4, "builtin")
    families = analyse_sources(compiled.sources())["instruction_census"]["families"]
    assert families["popcount (vpopcnt/popcnt)"] > 0
    assert_scheduled_by_the_conv_rule(compiled.kernels)


def test_bipolar_activations_are_refused_with_the_fix():
    with pytest.raises(QbuildError, match="unsigned"):
        BitserialConv(Encoding(1, "bipolar"), Encoding(1, "bipolar"), 8, (1, 1), (0, 0, 0, 0))


class Block(torch.nn.Module):
    """stem conv-relu, two 3x3 conv-relu with a residual add, a classifier: ResNet in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        a = torch.relu(self.stem(x))
        b = torch.relu(self.conv2(torch.relu(self.conv1(a))) + a)
        return self.fc(b.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    module = Block().eval()
    return module, trace(module, (1, 3, 12, 12))


def calibration(n: int = 2):
    rng = np.random.default_rng(1)
    return [rng.standard_normal((3, 12, 12)).astype(np.float32) for _ in range(n)]


# The sweep variants' settings, on 2 images, with MSE ranges at every width: the KL ranges that the
# sweep gives 8-bit tensors need fuller histograms than 2 images of 12 x 12 make.
SWEEP = {**plan.SWEEP, "calibrate_samples": 2, "calibrate_mode": "mse"}


def quantized_block(block, target=None, **overrides):
    _module, traced = block
    return quantize(
        traced.mod, traced.params, calibration(), make(**{**SWEEP, **overrides}), SubbyteConvs.for_target(target)
    )


def test_w1a1_keeps_the_edges_at_8_bits_and_runs_the_rest_bit_serially_on_unsigned_inputs(block):
    layers = quantized_block(block, nbit_weight=1, nbit_input=1, skip_conv_layers=[]).layers
    stem, conv1, conv2, dense = layers
    assert stem["weight_encoding"] == {"bits": 8, "kind": "signed"} and stem["kernel"] == "int8"
    assert dense["weight_encoding"] == {"bits": 8, "kind": "signed"}
    for conv in (conv1, conv2):  # both take ReLU outputs: unsigned 1-bit inputs, bipolar weights
        assert conv["input_encoding"] == {"bits": 1, "kind": "unsigned"}
        assert conv["weight_encoding"] == {"bits": 1, "kind": "bipolar"} and conv["kernel"] == "bitserial"
        assert conv["weight_bytes"] * 8 == 32 * 32 * 9  # one bit per weight


def test_a_sub_byte_model_computes_the_same_integers_bit_serially_and_on_the_int8_conv(block):
    x = calibration(1)[0][None]
    outputs = {}
    for kernel in ("bitserial", "int8"):
        quantized = quantized_block(block, nbit_weight=2, nbit_input=2, subbyte_kernel=kernel)
        assert {layer["kernel"] for layer in quantized.layers[1:3]} == {kernel}
        outputs[kernel] = compile_model(quantized.mod, CPU, "builtin")(x)
    np.testing.assert_array_equal(outputs["bitserial"], outputs["int8"])


def test_auto_takes_bit_serial_kernels_only_where_they_win(block):
    auto = {
        bits: {layer["kernel"] for layer in quantized_block(block, nbit_weight=bits, nbit_input=bits).layers[1:3]}
        for bits in (1, 4)
    }
    assert auto == {1: {"bitserial"}, 4: {"int8"}}


@pytest.mark.parametrize(
    "target, pairs",
    [
        ({"kind": "llvm", "mcpu": "znver4"}, MAX_AUTO_PAIRS),
        ({"kind": "llvm", "mattr": list(amx.MATTR)}, 0),
        ({"kind": "cuda", "arch": "sm_90"}, MAX_AUTO_PAIRS),
    ],
    ids=["vnni", "amx", "cuda"],
)
def test_auto_runs_nothing_bit_serially_where_int8_convs_run_on_amx_tiles(block, target, pairs):
    quantized = quantized_block(block, tvm.target.Target(target), nbit_weight=1, nbit_input=1)
    assert auto_bitserial_pairs(tvm.target.Target(target)) == pairs
    assert quantized.report()["auto_bitserial_pairs"] == pairs
    assert {layer["kernel"] for layer in quantized.layers[1:3]} == {"int8" if pairs == 0 else "bitserial"}


def test_the_kernel_check_builds_each_bitserial_conv_and_finds_it_exact(block):
    layers = quantized_block(block, nbit_weight=1, nbit_input=1).layers
    check = check_layers(layers)
    assert check["bitserial_layers"] == 2 and check["distinct_convs_checked"] == 1
    assert check["exact"] == 1 and check["mismatches"] == []


def test_4_bit_weights_stay_close_to_float_with_8_bit_inputs(block):
    module, _traced = block
    x = calibration(1)[0][None]
    expected = module(torch.from_numpy(x)).detach().numpy()
    got = compile_model(quantized_block(block, nbit_weight=4, nbit_input=8).mod, CPU, "builtin")(x)
    cosine = float(np.sum(expected * got) / (np.linalg.norm(expected) * np.linalg.norm(got)))
    assert cosine > 0.98


def test_bias_correction_cancels_the_mean_error_of_rounded_weights(block):
    module, _traced = block
    rng = np.random.default_rng(3)
    batch = [rng.standard_normal((1, 3, 12, 12)).astype(np.float32) for _ in range(8)]
    expected = np.concatenate([module(torch.from_numpy(x)).detach().numpy() for x in batch])
    mean_error = {}
    for corrected in (False, True):
        quantized = quantized_block(block, nbit_weight=2, nbit_input=8, bias_correction=corrected)
        assert all(layer["bias_correction"] == corrected for layer in quantized.layers[1:3])
        model = compile_model(quantized.mod, CPU, "builtin")
        got = np.concatenate([model(x) for x in batch])
        mean_error[corrected] = float(np.abs((got - expected).mean(axis=0)).mean())
    assert mean_error[True] < mean_error[False]


class Pointwise(torch.nn.Module):
    """A stem, then 1x1 convs on correlated channels: where GPTQ rounding applies."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.expand = torch.nn.Conv2d(32, 64, 1)
        self.project = torch.nn.Conv2d(64, 32, 1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        a = torch.relu(self.expand(torch.relu(self.stem(x))))
        return self.fc(self.project(a).mean(dim=(2, 3)))


def test_gptq_rounds_1x1_convs_and_brings_4_bit_weights_closer_to_float():
    torch.manual_seed(0)
    module = Pointwise().eval()
    traced = trace(module, (1, 3, 12, 12))
    batch = calibration(8)
    expected = np.concatenate([module(torch.from_numpy(x[None])).detach().numpy() for x in batch])
    error = {}
    for rounding in ("nearest", "gptq"):
        config = make(
            **{**SWEEP, "calibrate_samples": 8, "nbit_weight": 4, "nbit_input": 8, "weight_rounding": rounding}
        )
        quantized = quantize(traced.mod, traced.params, batch, config)
        assert [layer["weight_rounding"] for layer in quantized.layers[1:3]] == [rounding, rounding]
        model = compile_model(quantized.mod, CPU, "builtin")
        error[rounding] = float(np.linalg.norm(np.concatenate([model(x[None]) for x in batch]) - expected))
    assert error["gptq"] < error["nearest"]


def test_sub_byte_models_build_for_cuda_with_popcounts_or_int8_tensor_cores(block):
    """Built, not run: running them is the GPU machine's job."""
    from qbuild.targets import cuda_target

    for kernel, instruction in (("bitserial", "__popc"), ("int8", "wmma::mma_sync")):
        quantized = quantized_block(block, nbit_weight=2, nbit_input=2, subbyte_kernel=kernel)
        assert instruction in compile_model(quantized.mod, cuda_target("sm_90"), "builtin").sources()["cu"]
