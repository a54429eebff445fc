"""The blocked layouts between convs: AMX convs hand each other 64-channel blocks (``qbuild.kernels.layouts``)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from numpy.lib.stride_tricks import sliding_window_view
from tvm import relax

from qbuild.compile import compile_model
from qbuild.kernels import amx
from qbuild.kernels.layouts import convert_layouts, wide_convs
from qbuild.kernels.vectors import cpu_features, of_features
from qbuild.targets import TargetChoice, resolve_target

AMX_CPU = of_features(frozenset({"avx2", "avx512f", "avx512vnni", "amx-int8"}))
VNNI_CPU = of_features(frozenset({"avx2", "avx512f", "avx512vnni"}))


def _requantize(bb: relax.BlockBuilder, x: relax.Expr) -> relax.Expr:
    """int32 -> rounding shift by 4, clamp to [-127, 127], int8 (signed: no ReLU)."""
    y = bb.emit(relax.op.astype(x, "int64"))
    y = bb.emit(relax.op.right_shift(relax.op.add(y, relax.const(8, "int64")), relax.const(4, "int64")))
    y = bb.emit(relax.op.minimum(relax.op.maximum(y, relax.const(-127, "int64")), relax.const(127, "int64")))
    return bb.emit(relax.op.astype(y, "int8"))


def _requantize_reference(x: np.ndarray) -> np.ndarray:
    return np.clip((x.astype(np.int64) + 8) >> 4, -127, 127)


def _conv_reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """A "same"-padded, stride-1 dense conv in int64."""
    k = weight.shape[2]
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    windows = sliding_window_view(padded, (k, k), axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, weight.astype(np.int64))


def chain(x_shape: tuple, weights: list[np.ndarray]) -> tvm.IRModule:
    """int32 input, then per weight: requantize, conv (int32 out, "same" padding; one input channel
    per output channel: depthwise)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x
            for weight in weights:
                groups = int(y.ty.shape[1]) if weight.shape[1] == 1 else 1
                conv = relax.op.nn.conv2d(
                    _requantize(bb, y),
                    relax.const(weight),
                    padding=weight.shape[2] // 2,
                    groups=groups,
                    out_dtype="int32",
                )
                y = bb.emit(conv)
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _weights(rng: np.random.Generator, *shapes: tuple) -> list[np.ndarray]:
    return [rng.integers(-128, 128, shape).astype(np.int8) for shape in shapes]


def _convs(mod: tvm.IRModule) -> list[relax.Call]:
    values = [binding.value for block in mod["main"].body.blocks for binding in block.bindings]
    return [value for value in values if isinstance(value, relax.Call) and value.op.name == "relax.nn.conv2d"]


def test_amx_convs_hand_each_other_64_channel_blocks_and_a_depthwise_reader_keeps_its_own():
    rng = np.random.default_rng(3)
    mod = chain((1, 64, 14, 14), _weights(rng, (128, 64, 1, 1), (128, 128, 3, 3), (128, 1, 3, 3)))
    first, second, depthwise = _convs(mod)
    plan = wide_convs(mod["main"], AMX_CPU)
    assert plan == {first: (False, True), second: (True, False)}, "the depthwise conv reads 16-channel blocks"
    assert wide_convs(mod["main"], VNNI_CPU) == {}, "without AMX every conv keeps one register's lanes"
    layouts = [(c.attrs.data_layout, c.attrs.out_layout) for c in _convs(convert_layouts(AMX_CPU)(mod))]
    assert layouts == [("NCHW16c", "NCHW64c"), ("NCHW64c", "NCHW16c"), ("NCHW16c", "NCHW16c")]


def test_a_region_that_a_non_amx_conv_writes_stays_narrow():
    """A conv of 32 input channels is not an AMX conv: the 64 channels it writes stay in 16-channel
    blocks, which the AMX conv after it re-blocks itself (and that conv's own output is wide)."""
    rng = np.random.default_rng(4)
    mod = chain((1, 64, 14, 14), _weights(rng, (32, 64, 1, 1), (64, 32, 1, 1), (64, 64, 1, 1)))
    *_, third = _convs(mod)
    assert wide_convs(mod["main"], AMX_CPU) == {third: (False, True)}


def test_amx_convs_chained_through_64_channel_blocks_are_bit_exact_against_numpy():
    if not (amx.allowed() and "amx-int8" in cpu_features(resolve_target("cpu").tvm_target())):
        pytest.skip("this CPU has no AMX (the layouts are checked on any CPU above)")
    rng = np.random.default_rng(5)
    x = rng.integers(-3000, 3000, (1, 64, 14, 14)).astype(np.int32)
    weights = _weights(rng, (64, 64, 3, 3), (128, 64, 1, 1), (64, 128, 1, 1))
    mod = chain(x.shape, weights)
    assert list(wide_convs(mod["main"], AMX_CPU).values()) == [(False, True), (True, True), (True, True)]
    compiled = compile_model(mod, resolve_target("cpu"), "builtin")
    expected = x
    for weight in weights:
        expected = _conv_reference(_requantize_reference(expected), weight)
    got = compiled.vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_an_amx_build_multiplies_signed_data_as_it_is_on_any_cpu():
    """Cross-compiled for Sapphire Rapids: both convs on tiles, int8 data x int8 weights
    (``tdpbssd``), no +128 offset (which ``tdpbusd`` of unsigned data would need)."""
    rng = np.random.default_rng(6)
    mod = chain((1, 64, 14, 14), _weights(rng, (64, 64, 3, 3), (128, 64, 1, 1)))
    spec = {"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2}
    compiled = compile_model(mod, TargetChoice("cpu", "cpu", spec, "Intel Sapphire Rapids (AMX)", "test"), "builtin")
    assert compiled.kernels["functions"]["conv"] == 2
    assembly = compiled.sources()["s"]
    assert "tdpbssd" in assembly and "tdpbusd" not in assembly


def test_a_split_after_an_amx_conv_keeps_the_region_narrow_and_converts():
    """One half of a split feeds a depthwise conv, the other a dense one: ``ConvertLayout`` carries
    a layout through the split's tuple, so the conv before it keeps 16-channel blocks."""
    rng = np.random.default_rng(7)
    first, dense, depthwise = _weights(rng, (128, 128, 1, 1), (64, 64, 1, 1), (64, 1, 3, 3))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 128, 14, 14), "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.conv2d(_requantize(bb, x), relax.const(first), out_dtype="int32"))
            halves = bb.emit(relax.op.split(_requantize(bb, conv), 2, axis=1))
            left = bb.emit(
                relax.op.nn.conv2d(bb.emit(relax.TupleGetItem(halves, 0)), relax.const(dense), out_dtype="int32")
            )
            right = relax.op.nn.conv2d(
                bb.emit(relax.TupleGetItem(halves, 1)), relax.const(depthwise), padding=1, groups=64, out_dtype="int32"
            )
            out = bb.emit_output(relax.op.add(left, bb.emit(right)))
        bb.emit_func_output(out)
    mod = bb.get()
    assert _convs(mod)[0] not in wide_convs(mod["main"], AMX_CPU)
    assert len(_convs(convert_layouts(AMX_CPU)(mod))) == 3
