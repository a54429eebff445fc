"""Integer ops narrowed from int64 to int32 where their values are known to fit (qbuild.relax.narrow)."""

from __future__ import annotations

import numpy as np
import tvm
from test_kernels import CPU, run_builtin
from tvm import relax

from qbuild.quantize import emit
from qbuild.relax.graph import op_name
from qbuild.relax.integer_rewrites import integer_rewrites
from qbuild.relax.narrow import narrow_integers
from qbuild.relax.ranges import value_ranges

SHAPE = (1, 16, 6, 6)


def conv_requantize_module(weight: np.ndarray, multiplier: int | None = None, size: int = SHAPE[2]):
    """int8 conv + bias, rescaled in int64 as the quantizer emits it (a rounding shift, or a
    31-bit multiplier then the shift), clamped and cast to int8, plus an int8 residual; the
    input is (1, channels, size, size) for (channels, channels, 3, 3) weights."""
    bb = relax.BlockBuilder()
    channels = weight.shape[0]
    x = relax.Var("x", relax.TensorType((1, channels, size, size), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=1, out_dtype="int32"))
            acc = bb.emit(
                relax.op.add(acc, relax.const(np.arange(channels, dtype=np.int32).reshape(1, -1, 1, 1) * 100))
            )
            wide = bb.emit(relax.op.astype(acc, "int64"))
            if multiplier is not None:
                wide = bb.emit(relax.op.multiply(wide, relax.const(multiplier, "int64")))
            shift = 9 if multiplier is None else 39
            scaled = bb.emit(
                relax.op.right_shift(
                    relax.op.add(wide, relax.const(1 << (shift - 1), "int64")), relax.const(shift, "int64")
                )
            )
            clamped = bb.emit(
                relax.op.minimum(relax.op.maximum(scaled, relax.const(-127, "int64")), relax.const(127, "int64"))
            )
            residual = bb.emit(
                relax.op.add(relax.op.astype(clamped, "int8").astype("int64"), relax.op.astype(x, "int64"))
            )
            total = bb.emit(
                relax.op.minimum(relax.op.maximum(residual, relax.const(-127, "int64")), relax.const(127, "int64"))
            )
            out = bb.emit_output(relax.op.astype(total, "int8"))
        bb.emit_func_output(out)
    return bb.get()


def int64_ops(mod) -> list[str]:
    func = mod["main"]
    return [
        op_name(binding.value)
        for block in func.body.blocks
        for binding in block.bindings
        if str(binding.var.ty.dtype) == "int64"
    ]


def _weight(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (16, 16, 3, 3)).astype(np.int8)


def test_a_conv_range_is_its_weight_sums_times_the_data_range():
    weight = np.ones((16, 16, 3, 3), np.int8)
    weight[3] = -2
    mod = conv_requantize_module(weight)
    ranges = value_ranges(mod["main"])
    conv = next(b.var for b in mod["main"].body.blocks[0].bindings if op_name(b.value) == "relax.nn.conv2d")
    assert ranges[conv] == (-2 * 144 * 127, 2 * 144 * 128), "144 ones x [-128, 127], and a channel of -2s: both ends"


def test_a_shift_requantize_and_a_residual_add_run_in_int32_with_the_same_values():
    weight = _weight(1)
    mod = conv_requantize_module(weight)
    narrowed = narrow_integers()(mod)
    assert int64_ops(mod) and not int64_ops(narrowed), "every int64 op of the rescale fits in int32"
    x = np.random.default_rng(2).integers(-128, 128, SHAPE).astype(np.int8)
    target = CPU.tvm_target()
    reference = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    got, _ = run_builtin(mod, x)  # the builtin pipeline narrows
    np.testing.assert_array_equal(got, reference)


def test_a_31_bit_multiply_stays_in_int64_and_the_clamp_after_its_shift_narrows():
    mod = conv_requantize_module(_weight(3), multiplier=(1 << 30) + 12345)
    remaining = int64_ops(narrow_integers()(mod))
    assert "relax.multiply" in remaining and "relax.minimum" not in remaining
    x = np.random.default_rng(4).integers(-128, 128, SHAPE).astype(np.int8)
    reference = relax.VirtualMachine(tvm.compile(mod, CPU.tvm_target()), tvm.cpu())["main"](
        tvm.runtime.tensor(x)
    ).numpy()
    np.testing.assert_array_equal(run_builtin(mod, x)[0], reference)


def test_a_shift_by_32_or_more_stays_in_int64_though_its_values_fit():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            wide = bb.emit(relax.op.astype(x, "int64"))
            shifted = bb.emit(relax.op.right_shift(wide, relax.const(35, "int64")))  # -1 or 0: fits in int32
            out = bb.emit_output(relax.op.astype(shifted, "int32"))
        bb.emit_func_output(out)
    assert int64_ops(narrow_integers()(bb.get())) == ["relax.astype", "relax.right_shift"]


def test_no_kernel_of_a_calibrated_residual_network_writes_int64():
    """A block output feeds the next conv (through a requantize) and the next residual add, both
    starting with the same int8 -> int64 cast; merged into one (as EliminateCommonSubexpr did),
    FuseOps fused the cast into the producing kernel, which then wrote its output as int64."""
    import re

    import torch
    from test_quantize import images

    from qbuild.kernels.pipeline import lowering_passes
    from qbuild.kernels.vectors import of_target
    from qbuild.quantize import make, quantize
    from qbuild.trace import trace

    class TwoBlocks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.conv1, self.conv2 = (torch.nn.Conv2d(c, 16, 3, padding=1) for c in (3, 16, 16))

        def forward(self, x):
            a = torch.relu(self.stem(x))
            b = torch.relu(self.conv1(a) + a)
            return torch.relu(self.conv2(b) + b).mean(dim=(2, 3))

    torch.manual_seed(0)
    traced = trace(TwoBlocks().eval(), (1, 3, 16, 16))
    config = make(calibrate_mode="percentile", per_channel_weights=True, calibrate_samples=3)
    quantized = quantize(traced.inference_module(), None, images(3), config)
    target = CPU.tvm_target()
    with target:
        lowered = tvm.transform.Sequential(lowering_passes(of_target(target)))(quantized.mod)
    written = re.findall(r'R\.call_tir\(\w+, .*out_ty=R\.Tensor\(\([^)]*\), dtype="(\w+)"\)', lowered["main"].script())
    assert "int8" in written and "int64" not in written


def test_a_residual_rescale_of_int8_values_runs_in_int32():
    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((1, 4, 5, 5), "int8"))
    with bb.function("main", [q]):
        with bb.dataflow():
            out = bb.emit_output(emit.requantize(bb, q, 0.9794, None, "int64", "UPWARD", True))
        bb.emit_func_output(out)
    mod = bb.get()
    narrowed = int64_ops(tvm.transform.Sequential(integer_rewrites())(mod))
    assert "relax.multiply" in int64_ops(mod) and narrowed == ["relax.astype", None], "only the int64 result widens"
