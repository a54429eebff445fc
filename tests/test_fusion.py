"""Which kernel a widening cast fuses into (qbuild.relax.fusion): a residual add of two convs'
int8 results widens both in the add's kernel; each conv writes its result as int8."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from test_kernels import CPU, SAPPHIRE_RAPIDS, ZEN4, run_builtin
from tvm import relax

from qbuild.kernels.cuda import fusion_passes
from qbuild.kernels.pipeline import lowering_passes
from qbuild.kernels.vectors import cpu_features, of_target
from qbuild.relax.fusion import widen_in_consumers

CHANNELS, SIZE = 16, 8


def _requantized(
    bb: relax.BlockBuilder, x: relax.Expr, weight: np.ndarray, shift: int, codes: str = "int8"
) -> relax.Expr:
    """An int8 conv's int32 sums, shifted right and clamped to ``codes`` (int8, or an imported
    model's uint8: a requantize)."""
    acc = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=weight.shape[2] // 2, out_dtype="int32"))
    scaled = bb.emit(relax.op.right_shift(acc, relax.const(shift, "int32")))
    info = np.iinfo(codes)
    return bb.emit(relax.op.astype(relax.op.clip(scaled, int(info.min) + (codes == "int8"), int(info.max)), codes))


def _downsample_block(seed: int = 0, codes: str = "int8") -> tvm.IRModule:
    """A ResNet block with a conv on its shortcut: relu(conv_a(x) + conv_b(x)), each requantized
    to ``codes`` and widened to int32 for the add."""
    rng = np.random.default_rng(seed)
    weights = [rng.integers(-128, 128, (CHANNELS, CHANNELS, k, k)).astype(np.int8) for k in (3, 1)]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, CHANNELS, SIZE, SIZE), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            main, shortcut = (_requantized(bb, x, w, shift, codes) for w, shift in zip(weights, (10, 8)))
            total = bb.emit(relax.op.add(relax.op.astype(main, "int32"), relax.op.astype(shortcut, "int32")))
            out = bb.emit_output(relax.op.astype(relax.op.clip(total, 0, 127), "int8"))
        bb.emit_func_output(out)
    return bb.get()


def _rescaled(value: relax.Expr, multiplier: int, shift: int) -> relax.Expr:
    """int8 codes widened to int32 and rescaled by a rounding multiply-shift."""
    product = relax.op.multiply(relax.op.astype(value, "int32"), relax.const(multiplier, "int32"))
    return relax.op.right_shift(
        relax.op.add(product, relax.const(1 << (shift - 1), "int32")), relax.const(shift, "int32")
    )


def _identity_block(channels: int) -> tvm.IRModule:
    """A calibrated ResNet block without a shortcut conv: a kernel's int8 output, read by a conv and by
    the residual add, each side rescaled to the add's scale (a rounding multiply-shift)."""
    rng = np.random.default_rng(6)
    first, second = (rng.integers(-128, 128, (channels, channels, 1, 1)).astype(np.int8) for _ in range(2))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, channels, SIZE, SIZE), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            block_input = _requantized(bb, x, first, 8)
            main = _requantized(bb, block_input, second, 10)
            total = bb.emit(relax.op.add(_rescaled(main, 1566283, 20), _rescaled(block_input, 5704462, 23)))
            out = bb.emit_output(relax.op.astype(relax.op.clip(total, 0, 127), "int8"))
        bb.emit_func_output(out)
    return bb.get()


def _kernel_outputs(mod: tvm.IRModule) -> list[tuple[str, str]]:
    """(kernel, dtype it writes) for each call_tir in ``main``."""
    return re.findall(r'R\.call_tir\((\w+), .*out_ty=R\.Tensor\(\([^)]*\), dtype="(\w+)"\)', mod["main"].script())


def _lowered(mod: tvm.IRModule, without_the_pass: bool = False) -> tvm.IRModule:
    target = CPU.tvm_target()
    passes = [
        p
        for p in lowering_passes(of_target(target))
        if not (without_the_pass and p.info.name == "qbuild.WidenInConsumers")
    ]
    with target:
        return tvm.transform.Sequential(passes)(mod)


@pytest.mark.parametrize("codes", ["int8", "uint8"])
def test_two_convs_summed_by_a_residual_add_both_write_their_codes_and_the_adds_kernel_widens_them(codes):
    block = _downsample_block(codes=codes)
    before, after = (_kernel_outputs(_lowered(block, without)) for without in (True, False))
    assert "int32" in {dtype for _, dtype in before}, "without the pass one conv's kernel writes the widened value"
    convs = [(name, dtype) for name, dtype in after if "conv2d" in name]
    assert len(convs) == 2 and "int32" not in {dtype for _, dtype in after}
    assert len(after) == len(before), "the cast moved between kernels; no kernel was added"
    ((with_add, _),) = [(name, dtype) for name, dtype in convs if "_add" in name]
    assert "in_consumer" in with_add
    assert [dtype for name, dtype in convs if name != with_add] == [codes], "the other conv writes its codes"


@pytest.mark.parametrize("target", [ZEN4, SAPPHIRE_RAPIDS], ids=["vnni", "amx"])
def test_the_conv_that_takes_the_add_rescales_the_shortcut_in_its_tile_loop(target):
    """The shortcut's whole rescale chain (cast, multiply, round, shift) is inlined into the add,
    which runs in the conv's tile loop: no int32 tensor the size of the output goes to memory."""
    from qbuild.kernels.schedule import KernelReport, conv_workload, schedule_function

    tvm_target = target.tvm_target()
    with tvm_target:
        lowered = tvm.transform.Sequential(lowering_passes(of_target(tvm_target)))(_identity_block(64))
    [(name, func)] = [(gv.name_hint, f) for gv, f in lowered.functions.items() if "_add" in gv.name_hint]
    report = KernelReport()
    scheduled = schedule_function(func.with_attr("global_symbol", name), frozenset(cpu_features(tvm_target)), report)
    sums_in_memory = [b for b in scheduled.body.block.alloc_buffers if b.scope() == "global" and b.dtype == "int32"]
    assert report.counts["conv"] == 1 and sums_in_memory == []
    assert conv_workload(func).amx == (target is SAPPHIRE_RAPIDS)


def test_the_rescaled_shortcut_in_the_tile_loop_computes_what_the_default_build_does():
    mod = _identity_block(64)
    x = np.random.default_rng(7).integers(-128, 128, (1, 64, SIZE, SIZE)).astype(np.int8)
    reference = relax.VirtualMachine(tvm.compile(mod, CPU.tvm_target()), tvm.cpu())["main"](tvm.runtime.tensor(x))
    got, _ = run_builtin(mod, x)
    np.testing.assert_array_equal(got, reference.numpy())


def test_the_moved_cast_computes_what_the_default_build_does():
    mod = _downsample_block(seed=3)
    x = np.random.default_rng(4).integers(-128, 128, (1, CHANNELS, SIZE, SIZE)).astype(np.int8)
    target = CPU.tvm_target()
    reference = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    got, _ = run_builtin(mod, x)
    np.testing.assert_array_equal(got, reference)


def test_a_shortcut_that_other_ops_also_read_is_left_to_fusion():
    """An identity shortcut (the block input, which the first conv also reads) widens in the add's
    kernel anyway: the pass leaves it alone."""
    weight = np.random.default_rng(5).integers(-128, 128, (CHANNELS, CHANNELS, 3, 3)).astype(np.int8)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, CHANNELS, SIZE, SIZE), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            main = _requantized(bb, x, weight, 10)
            total = bb.emit(relax.op.add(relax.op.astype(main, "int32"), relax.op.astype(x, "int32")))
            out = bb.emit_output(relax.op.astype(relax.op.clip(total, 0, 127), "int8"))
        bb.emit_func_output(out)
    mod = bb.get()
    legalized = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern()])(mod)
    assert widen_in_consumers()(legalized).same_as(legalized)


def test_the_cuda_pipeline_moves_the_cast_too():
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    with target:
        fused = tvm.transform.Sequential(fusion_passes(target))(_downsample_block())
    written = _kernel_outputs(fused)
    assert len([name for name, _ in written if "conv2d" in name]) == 2 and {dtype for _, dtype in written} == {"int8"}
