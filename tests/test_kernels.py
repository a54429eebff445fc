"""Built-in CPU kernels: the same numbers as the reference, from scheduled code, on every shape."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import tvm
from numpy.lib.stride_tricks import sliding_window_view
from tvm import relax

from qbuild.compile import compile_model
from qbuild.kernels import conv2d
from qbuild.kernels.conv2d import AMX
from qbuild.kernels.pipeline import codegen_target, llvm_options, pipeline
from qbuild.kernels.tiles import ConvTile
from qbuild.kernels.vectors import AVX2, cpu_features
from qbuild.targets import TargetChoice, resolve_target

CPU = resolve_target("cpu")


def conv_module(
    x_shape, weight: np.ndarray, stride: int, padding: int, groups: int, out_dtype: str, x_dtype: str | None = None
):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, x_dtype or str(weight.dtype)))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(
                relax.op.nn.conv2d(
                    x, relax.const(weight), strides=stride, padding=padding, groups=groups, out_dtype=out_dtype
                )
            )
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    return bb.get()


def reference_conv(x: np.ndarray, weight: np.ndarray, stride: int, padding: int, groups: int) -> np.ndarray:
    """Exact NumPy conv (int64 or float64 accumulation), then ReLU."""
    wide = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64
    padded = np.pad(x.astype(wide), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k = weight.shape[2]
    windows = sliding_window_view(padded, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # n c oh ow kh kw
    per_group = weight.shape[0] // groups
    outs = []
    for g in range(groups):
        cin = slice(g * weight.shape[1], (g + 1) * weight.shape[1])
        w = weight[g * per_group : (g + 1) * per_group].astype(wide)
        outs.append(np.einsum("nchwij,ocij->nohw", windows[:, cin], w))
    return np.maximum(np.concatenate(outs, axis=1), 0)


# (in channels, size, out channels, kernel, stride, padding, groups)
SHAPES = {
    "3x3": (16, 14, 32, 3, 1, 1, 1),
    "1x1": (32, 7, 16, 1, 1, 0, 1),
    "strided": (16, 15, 24, 3, 2, 1, 1),
    "stem (3 input channels)": (3, 16, 8, 3, 2, 1, 1),
    "depthwise": (16, 12, 16, 3, 1, 1, 16),
    "odd channels": (5, 9, 6, 3, 1, 1, 1),
    "row of 7 pixels, 56 channels": (24, 7, 56, 3, 1, 1, 1),
    "input blocks of 4, output blocks of 8": (12, 10, 16, 3, 1, 1, 1),
    "blocks of 16 where the registers hold 16 lanes": (32, 8, 48, 3, 1, 1, 1),
}


def run_builtin(
    mod, x: np.ndarray, avx2: bool | None = None, tiles: dict | None = None, target: TargetChoice | None = None
):
    """``mod`` compiled with the builtin kernels (conv tiles from ``tiles`` by workload key) for
    ``target`` (default: this CPU; ``avx2``: override what it has, ``pipeline``), run on ``x``."""
    target = (target or CPU).tvm_target()
    relax_pipeline, report = pipeline("builtin", target, avx2, tiles)
    executable = tvm.compile(mod, target, relax_pipeline=relax_pipeline)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy(), report


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_integer_convs_are_bit_exact_against_numpy(shape):
    cin, size, cout, k, stride, padding, groups = SHAPES[shape]
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, cin, size, size)).astype(np.int8)
    weight = rng.integers(-128, 128, (cout, cin // groups, k, k)).astype(np.int8)
    got, report = run_builtin(conv_module(x.shape, weight, stride, padding, groups, "int32"), x)
    np.testing.assert_array_equal(got, reference_conv(x, weight, stride, padding, groups))
    assert report.counts["unscheduled"] == 0
    assert report.counts["conv"] == 1


@pytest.mark.parametrize("shape", ["3x3", "strided", "stem (3 input channels)", "depthwise"])
def test_float_convs_match_numpy(shape):
    cin, size, cout, k, stride, padding, groups = SHAPES[shape]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, cin, size, size)).astype(np.float32)
    weight = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    got, report = run_builtin(conv_module(x.shape, weight, stride, padding, groups, "float32"), x)
    np.testing.assert_allclose(got, reference_conv(x, weight, stride, padding, groups), rtol=1e-4, atol=1e-4)
    assert report.counts["conv"] >= 1


def test_an_rgb_stem_reads_its_image_as_one_block_and_the_ops_after_it_stay_blocked():
    from qbuild.kernels.pipeline import lowering_passes

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 16, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            stem = relax.op.nn.conv2d(x, relax.const(np.ones((8, 3, 3, 3), "float32")), padding=1)
            pooled = bb.emit(relax.op.nn.max_pool2d(relax.op.nn.relu(stem), 3, 2, 1))
            out = bb.emit_output(relax.op.nn.conv2d(pooled, relax.const(np.ones((8, 8, 1, 1), "float32"))))
        bb.emit_func_output(out)
    with CPU.tvm_target():
        lowered = tvm.transform.Sequential(lowering_passes(AVX2))(bb.get())
    calls = [
        str(binding.value.args[0].name_hint) for block in lowered["main"].body.blocks for binding in block.bindings
    ]
    assert calls[0] == "pack_data", "the image packed as one block of its 3 channels"
    assert [name for name in calls if "layout_transform" in name or "unpack" in name] == [calls[-1]], (
        "blocked from the stem to the output"
    )


def test_an_integer_stems_image_is_packed_padded_in_channel_quads_rows_in_parallel():
    from qbuild.kernels.pipeline import lowering_passes
    from qbuild.kernels.schedule import KernelReport, schedule_function

    weight = np.random.default_rng(13).integers(-128, 128, (16, 3, 3, 3)).astype(np.int8)
    mod = conv_module((1, 3, 64, 64), weight, 2, 1, 1, "int32")
    target = CPU.tvm_target()
    features = frozenset(cpu_features(target))
    with target:
        lowered = tvm.transform.Sequential(lowering_passes(AVX2))(mod)
    (pack,) = [f for gv, f in lowered.functions.items() if gv.name_hint == "pack_data"]
    (packed,) = [
        b.var for block in lowered["main"].body.blocks for b in block.bindings if "pack_data" in str(b.value.args[0])
    ]
    assert [int(d) for d in packed.ty.shape] == [1, 1, 66, 66, 4], "padded rows, 3 channels and a zero one"
    script = schedule_function(pack, features, KernelReport()).script()
    loops = [line.strip() for line in script.splitlines() if line.strip().startswith("for ")]
    assert "T.parallel(T.int64(66))" in loops[0], "the padded rows in parallel"
    assert loops[1:] == ["for x_1, i in T.grid(T.int64(66), T.int64(4)):"], "pixels and channels serial"


def test_the_quantize_before_an_integer_stem_stays_a_vectorized_pass_of_its_own():
    from qbuild.kernels.pipeline import lowering_passes

    weight = np.random.default_rng(14).integers(-128, 128, (16, 3, 3, 3)).astype(np.int8)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 32, 32), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            scaled = relax.op.round(relax.op.multiply(x, relax.const(np.float32(20.0))))
            codes = bb.emit(relax.op.astype(relax.op.clip(scaled, -127, 127), "int8"))
            conv = relax.op.nn.conv2d(codes, relax.const(weight), padding=1, out_dtype="int32")
            out = bb.emit_output(relax.op.nn.relu(conv))
        bb.emit_func_output(out)
    with CPU.tvm_target():
        lowered = tvm.transform.Sequential(lowering_passes(AVX2))(bb.get())
    packs = [f for gv, f in lowered.functions.items() if "pack_data" in gv.name_hint]
    assert len(packs) == 1
    assert "float32" not in packs[0].script(), "the pack moves bytes; the quantize runs before it, on whole rows"


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_an_explicit_zero_pad_before_a_conv_becomes_the_convs_own_padding(dtype):
    from qbuild.relax.fold_pads import fold_pads_into_convs

    rng = np.random.default_rng(4)
    x = (rng.integers(-128, 128, (1, 16, 9, 9)) if dtype == "int8" else rng.standard_normal((1, 16, 9, 9))).astype(
        dtype
    )
    weight = rng.integers(-128, 128, (16, 16, 3, 3)) if dtype == "int8" else rng.standard_normal((16, 16, 3, 3))
    weight = weight.astype(dtype)
    bb = relax.BlockBuilder()
    data = relax.Var("x", relax.TensorType(x.shape, dtype))
    with bb.function("main", [data]):
        with bb.dataflow():
            padded = bb.emit(relax.op.nn.pad(data, [0, 0, 0, 0, 0, 1, 0, 1]))  # TF "same" for stride 2
            conv = bb.emit(
                relax.op.nn.conv2d(padded, relax.const(weight), strides=2, out_dtype="int32" if dtype == "int8" else "")
            )
            out = bb.emit_output(relax.op.nn.relu(conv))
        bb.emit_func_output(out)
    mod = bb.get()
    folded = fold_pads_into_convs()(mod)["main"].body.blocks[0].bindings
    assert [str(b.value.op.name) for b in folded if isinstance(b.value, relax.Call)] == [
        "relax.nn.conv2d",
        "relax.nn.relu",
    ]
    got, _report = run_builtin(mod, x)
    expected = reference_conv(np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1))), weight, 2, 0, 1)
    if dtype == "int8":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_without_avx2_the_integer_conv_falls_back_to_plain_vector_code_and_stays_exact():
    cin, size, cout, k, stride, padding, groups = SHAPES["3x3"]
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, cin, size, size)).astype(np.int8)
    weight = rng.integers(-128, 128, (cout, cin, k, k)).astype(np.int8)
    mod = conv_module(x.shape, weight, stride, padding, groups, "int32")
    got, report = run_builtin(mod, x, avx2=False)
    np.testing.assert_array_equal(got, reference_conv(x, weight, stride, padding, groups))
    assert report.counts["conv"] >= 1


# A CPU with AVX2 and no AVX-512 (Haswell's instructions, which every AVX2 CPU runs), and one
# with AVX-512 VNNI, for cross-compiling (nothing built for Zen 4 runs here).
AVX2_CPU = TargetChoice("cpu", "cpu", {"kind": "llvm", "mcpu": "haswell", "num-cores": 2}, "Intel Haswell", "test")
ZEN4 = TargetChoice("cpu", "cpu", {"kind": "llvm", "mcpu": "znver4", "num-cores": 2}, "AMD Zen 4 (znver4)", "test")
SKYLAKE_SP = TargetChoice(
    "cpu", "cpu", {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}, "Intel Skylake-SP", "test"
)  # AVX-512 without VNNI


def _families(compiled) -> dict:
    from qbuild.analysis import analyse_sources

    return analyse_sources(compiled.sources())["instruction_census"]["families"]


def _census_families(target: TargetChoice, seed: int, channels: int = 16) -> tuple[dict, dict]:
    """(instruction families, kernel report) of one int8 3x3 conv of ``channels`` input channels
    and twice as many outputs compiled for ``target``."""
    weight = np.random.default_rng(seed).integers(-128, 128, (2 * channels, channels, 3, 3)).astype(np.int8)
    compiled = compile_model(conv_module((1, channels, 14, 14), weight, 1, 1, 1, "int32"), target, "builtin")
    return _families(compiled), compiled.kernels


def test_for_an_avx2_cpu_without_vnni_the_integer_conv_is_built_on_vpmaddwd():
    families, kernels = _census_families(AVX2_CPU, seed=4)
    assert families["s16*s16 pairs (vpmaddwd)"] > 0 and families["int8 dot VNNI (vpdpbusd)"] == 0
    assert kernels["set"] == "builtin" and kernels["functions"]["conv"] == 1


def _conv_workloads(mod, vnni: bool) -> list:
    from qbuild.kernels.pipeline import lowering_passes
    from qbuild.kernels.schedule import conv_workload

    with CPU.tvm_target():
        lowered = tvm.transform.Sequential(lowering_passes(AVX2.with_vnni(vnni)))(mod)
    workloads = [conv_workload(f) for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    return [w for w in workloads if w is not None]


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_the_vnni_compute_with_unsigned_activations_is_bit_exact_on_any_cpu(shape):
    """The VNNI form (activations + 128, the offset taken back out per channel) runs as plain
    vector code where the CPU lacks VNNI: its arithmetic is checked here on every CPU."""
    cin, size, cout, k, stride, padding, groups = SHAPES[shape]
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (1, cin, size, size)).astype(np.int8)
    weight = rng.integers(-128, 128, (cout, cin // groups, k, k)).astype(np.int8)
    mod = conv_module(x.shape, weight, stride, padding, groups, "int32")
    target = CPU.tvm_target()
    relax_pipeline, _ = pipeline("builtin", target, vnni=True)
    vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=relax_pipeline), tvm.cpu())
    np.testing.assert_array_equal(
        vm["main"](tvm.runtime.tensor(x)).numpy(), reference_conv(x, weight, stride, padding, groups)
    )
    if groups == 1 and cin % 4 == 0:
        assert any(w.summary.startswith("uint8 x int8 -> int32") for w in _conv_workloads(mod, vnni=True))


@pytest.mark.parametrize("vnni", [True, False], ids=["VNNI: bytes as they are", "no VNNI"])
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_a_conv_of_uint8_data_over_its_whole_range_is_bit_exact_on_any_cpu(shape, vnni):
    """uint8 data (an imported model's unsigned codes) x int8 weights: with VNNI a conv of channel
    quads, and a depthwise one, reads the bytes as they are (no offset; run as plain vector code
    where the CPU lacks VNNI); without, the int16 compute (``vpmaddubsw`` would saturate on them)."""
    cin, size, cout, k, stride, padding, groups = SHAPES[shape]
    rng = np.random.default_rng(12)
    x = rng.integers(0, 256, (1, cin, size, size)).astype(np.uint8)
    weight = rng.integers(-128, 128, (cout, cin // groups, k, k)).astype(np.int8)
    mod = conv_module(x.shape, weight, stride, padding, groups, "int32", x_dtype="uint8")
    target = CPU.tvm_target()
    relax_pipeline, _ = pipeline("builtin", target, vnni=vnni)
    vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=relax_pipeline), tvm.cpu())
    expected = reference_conv(x, weight, stride, padding, groups)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)
    quads = cin % 4 == 0 or AVX2.block(cin) < 4  # a stem (blocks under 4 channels) padded to quads
    reads_bytes = vnni and quads and (groups == 1 or groups == cin)
    assert [w.block.endswith(conv2d.UNSIGNED_BYTES) for w in _conv_workloads(mod, vnni)] == [reads_bytes]


def test_for_a_vnni_cpu_the_integer_conv_is_built_on_vpdpbusd():
    families, kernels = _census_families(ZEN4, seed=7)
    assert families["int8 dot VNNI (vpdpbusd)"] > 0 and families["s16*s16 pairs (vpmaddwd)"] == 0
    assert kernels["functions"]["conv"] == 1


@pytest.mark.parametrize("dtype, instruction", [("int8", "vpdpbusd"), ("float32", "vfmadd")])
def test_for_an_avx512_cpu_a_conv_block_is_sixteen_channels_on_zmm_registers(dtype, instruction):
    from qbuild.tune import conv_functions

    weight = np.random.default_rng(5).integers(-128, 128, (32, 32, 3, 3)).astype(dtype)
    mod = conv_module((1, 32, 14, 14), weight, 1, 1, 1, "int32" if dtype == "int8" else dtype)
    ((workload, _),) = conv_functions(mod, ZEN4.tvm_target()).values()
    assert (workload.out_blocks, workload.in_blocks) == (2, 2)
    assembly = compile_model(mod, ZEN4, "builtin").sources()["s"]
    assert any(instruction in line and "zmm" in line for line in assembly.splitlines())


def test_where_this_cpu_has_vnni_the_compiled_integer_conv_runs_vpdpbusd():
    if "avx512vnni" not in cpu_features(CPU.tvm_target()):
        pytest.skip("this CPU has no AVX-512 VNNI (the compute is tested on any CPU, the code cross-compiled)")
    weight = np.random.default_rng(8).integers(-128, 128, (16, 16, 3, 3)).astype(np.int8)
    compiled = compile_model(conv_module((1, 16, 8, 8), weight, 1, 1, 1, "int32"), CPU, "builtin")
    assert "vpdpbusd" in compiled.sources()["s"]


SAPPHIRE_RAPIDS = TargetChoice(
    "cpu", "cpu", {"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2}, "Intel Sapphire Rapids (AMX)", "test"
)
AMX_TILE_DOT = "int8 tile dot AMX (tdpbusd)"


def test_for_an_amx_cpu_an_int8_conv_of_64_channel_rows_is_built_on_tdpbusd_and_others_on_vpdpbusd():
    tiles, _ = _census_families(SAPPHIRE_RAPIDS, seed=10, channels=64)
    assert tiles[AMX_TILE_DOT] > 0 and tiles["int8 dot VNNI (vpdpbusd)"] == 0
    vectors, _ = _census_families(SAPPHIRE_RAPIDS, seed=10, channels=32)
    assert vectors[AMX_TILE_DOT] == 0 and vectors["int8 dot VNNI (vpdpbusd)"] > 0


def test_a_target_with_amx_is_refused_where_linux_withholds_the_tile_registers(monkeypatch):
    from qbuild.errors import QbuildError
    from qbuild.kernels import amx

    monkeypatch.setattr(amx, "allowed", lambda: False)
    spec = {"kind": "llvm", "mcpu": "sapphirerapids", "mattr": ["+amx-tile", "+amx-int8"]}
    with pytest.raises(QbuildError, match="tile registers.*plan again here"):
        TargetChoice("cpu", "cpu", spec, "a CPU with AMX", "test").tvm_target()
    assert SAPPHIRE_RAPIDS.tvm_target().kind.name == "llvm", "AMX through the mcpu only: built, never run here"


# (in channels, size, out channels, kernel, stride, padding) of convs whose input channels come in
# rows of 64: AMX's
AMX_SHAPES = {
    "3x3": (64, 14, 64, 3, 1, 1),
    "1x1 of 20 output blocks on rows of 7": (192, 7, 320, 1, 1, 0),
    "strided 3x3": (128, 15, 64, 3, 2, 1),
    "strided 1x1": (64, 8, 32, 1, 2, 0),
}


@pytest.mark.parametrize("shape", list(AMX_SHAPES), ids=list(AMX_SHAPES))
def test_on_an_amx_cpu_int8_convs_run_on_tile_registers_bit_exact_against_numpy(shape):
    from qbuild.kernels import amx

    if not (amx.allowed() and "amx-int8" in cpu_features(CPU.tvm_target())):
        pytest.skip("this CPU has no AMX (the code is cross-compiled for Sapphire Rapids on any CPU)")
    cin, size, cout, k, stride, padding = AMX_SHAPES[shape]
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (1, cin, size, size)).astype(np.int8)
    weight = rng.integers(-128, 128, (cout, cin, k, k)).astype(np.int8)
    mod = conv_module(x.shape, weight, stride, padding, 1, "int32")
    got, report = run_builtin(mod, x)
    np.testing.assert_array_equal(got, reference_conv(x, weight, stride, padding, 1))
    assert report.counts["conv"] == 1 and _conv_blocks(mod, CPU)[0].endswith(AMX)


def requantized_relu_module(x_shape, weight: np.ndarray, relu: bool, top: int = 127, stride: int = 1):
    """int32 input -> [ReLU] -> rounding shift, clamp to [-127, ``top``], int8 (a requantize) -> conv
    (depthwise for weights of one input channel; "same" padding)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.maximum(x, relax.const(0, "int32"))) if relu else x
            y = bb.emit(relax.op.astype(y, "int64"))
            y = bb.emit(relax.op.right_shift(relax.op.add(y, relax.const(8, "int64")), relax.const(4, "int64")))
            y = bb.emit(relax.op.minimum(relax.op.maximum(y, relax.const(-127, "int64")), relax.const(top, "int64")))
            y = bb.emit(relax.op.astype(y, "int8"))
            groups = x_shape[1] // weight.shape[1]
            out = bb.emit_output(
                relax.op.nn.conv2d(
                    y,
                    relax.const(weight),
                    strides=stride,
                    padding=weight.shape[2] // 2,
                    groups=groups,
                    out_dtype="int32",
                )
            )
        bb.emit_func_output(out)
    return bb.get()


def test_value_ranges_see_a_relu_then_a_requantize_as_seven_bit_data():
    from qbuild.relax.ranges import seven_bit_values

    weight = np.ones((8, 8, 3, 3), np.int8)
    for relu, expected in ((True, 1), (False, 0)):
        mod = requantized_relu_module((1, 8, 4, 4), weight, relu)
        int8_inputs = [v for v in seven_bit_values(mod) if str(v.ty.dtype) == "int8"]
        assert len(int8_inputs) == expected, "without the ReLU the data may be negative"


def test_every_int8_conv_of_a_quantized_resnet_reads_seven_bit_data():
    """Each conv input of a ResNet follows a ReLU (the stem's through max-pooling and the float
    -> int8 quantize; the rest through requantize shifts and clamps): all take the byte compute
    (of unsigned bytes: a VNNI CPU's ``vpdpbusd``). On AMX, the convs on tiles read int8 as it is."""
    from qbuild.models import load_model
    from qbuild.quantize import make, quantize
    from qbuild.trace import trace
    from qbuild.tune import conv_functions

    loaded = load_model("resnet18", "random", 32)
    traced = trace(loaded.module, loaded.input_shape)
    mod = quantize(traced.mod, traced.params, config=make()).mod
    summaries = [w.summary for w, _ in conv_functions(mod, ZEN4.tvm_target()).values()]
    integer = [s for s in summaries if not s.startswith("float32")]
    assert integer and all(s.startswith("uint8 x int8 -> int32") for s in integer), integer
    on_tiles = [w for w, _ in conv_functions(mod, SAPPHIRE_RAPIDS.tvm_target()).values() if w.amx]
    assert on_tiles and all(w.summary.startswith("int8 -> int32") for w in on_tiles)


def test_value_ranges_give_up_where_integer_arithmetic_may_wrap_around():
    from qbuild.relax.ranges import value_ranges

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            relu = bb.emit(relax.op.maximum(x, relax.const(0, "int32")))
            tripled = bb.emit(relax.op.multiply(relu, relax.const(3, "int32")))  # may overflow int32
            small = bb.emit(relax.op.right_shift(relu, relax.const(24, "int32")))
            out = bb.emit_output(relax.op.multiply(small, relax.const(3, "int32")))
        bb.emit_func_output(out)
    ranges = value_ranges(bb.get()["main"])
    assert ranges[relu][0] == 0 and ranges[small] == (0.0, 127.0)
    assert ranges[tripled] == (-math.inf, math.inf) and ranges[out] == (0.0, 381.0)


def test_value_ranges_follow_a_per_channel_requantize_shift():
    """A calibrated requantize multiplies and shifts each channel by its own constants."""
    from qbuild.relax.ranges import value_ranges

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2), "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            relu = bb.emit(relax.op.astype(relax.op.maximum(x, relax.const(0, "int32")), "int64"))
            scaled = bb.emit(relax.op.multiply(relu, relax.const(np.array([[3, 5]]), "int64")))
            out = bb.emit_output(relax.op.right_shift(scaled, relax.const(np.array([[30, 31]]), "int64")))
        bb.emit_func_output(out)
    assert value_ranges(bb.get()["main"])[out] == (0.0, float((2**31 - 1) * 5 // 2**30))


@pytest.mark.parametrize("channels", [16, 64])
def test_a_conv_of_seven_bit_data_multiplies_bytes_with_vpmaddubsw_and_stays_exact(channels):
    """Exact on this CPU, whichever instructions it has; without VNNI (an AVX2 CPU, cross-compiled) the
    bytes multiply pairwise (vpmaddubsw), with it they take vpdpbusd, and with AMX, rows of 64
    channels take tdpbusd."""
    rng = np.random.default_rng(9)
    x = rng.integers(-3000, 3000, (1, channels, 14, 14)).astype(np.int32)
    weight = rng.integers(-128, 128, (32, channels, 3, 3)).astype(np.int8)
    mod = requantized_relu_module(x.shape, weight, relu=True)
    compiled = compile_model(mod, CPU, "builtin")
    np.testing.assert_array_equal(
        compiled.vm["main"](tvm.runtime.tensor(x)).numpy(), _requantized_reference(x, weight, top=127)
    )  # no ReLU after this conv
    assert _families(compile_model(mod, AVX2_CPU, "builtin"))["u8*s8 pairs (vpmaddubsw)"] > 0
    features = cpu_features(CPU.tvm_target())
    if channels == 64 and "amx-int8" in features:
        assert _families(compiled)[AMX_TILE_DOT] > 0
    elif "avx512vnni" in features:
        assert _families(compiled)["int8 dot VNNI (vpdpbusd)"] > 0


def _run_on_avx2(x: np.ndarray, weight: np.ndarray, relu: bool, tile: ConvTile) -> np.ndarray:
    """``requantized_relu_module``'s conv compiled for an AVX2 CPU and run here, having checked
    that its default tile is ``tile`` and that the conv rule, not a fallback, scheduled it."""
    if "avx2" not in cpu_features(CPU.tvm_target()):
        pytest.skip("this CPU cannot run AVX2 code")
    mod = requantized_relu_module(x.shape, weight, relu=relu)
    [workload] = _conv_workloads(mod, vnni=False)
    assert workload.default_tile(AVX2) == tile
    compiled = compile_model(mod, AVX2_CPU, "builtin")
    assert compiled.kernels["functions"]["conv"] == 1, "scheduled by the conv rule, not a fallback"
    return compiled.vm["main"](tvm.runtime.tensor(x)).numpy()


def test_an_avx2_byte_conv_of_one_pixel_tiles_taking_its_input_blocks_in_passes_stays_exact():
    """64 channels in, 3 x 3: 18 kB of weights per tile, so the default tile takes 4 of the 8 input
    blocks per pass, its partial sums kept between passes (run here wherever this CPU has AVX2)."""
    rng = np.random.default_rng(12)
    x = rng.integers(-3000, 3000, (1, 64, 14, 14)).astype(np.int32)
    weight = rng.integers(-128, 128, (32, 64, 3, 3)).astype(np.int8)
    got = _run_on_avx2(x, weight, relu=True, tile=ConvTile(1, 4, 4))
    np.testing.assert_array_equal(got, _requantized_reference(x, weight, top=127))


def test_an_avx2_int16_pointwise_conv_of_one_pixel_tiles_taking_its_input_blocks_in_passes_stays_exact():
    """Signed data (no ReLU before the requantize) takes the int16 compute; 192 channels in, 1 x 1:
    24 kB of int16 weights per tile of 8 blocks, so 4 of the 24 input blocks per pass."""
    rng = np.random.default_rng(13)
    x = rng.integers(-3000, 3000, (1, 192, 7, 7)).astype(np.int32)
    weight = rng.integers(-127, 128, (64, 192, 1, 1)).astype(np.int8)
    got = _run_on_avx2(x, weight, relu=False, tile=ConvTile(1, 8, 4))
    data = np.clip((x.astype(np.int64) + 8) >> 4, -127, 127)
    np.testing.assert_array_equal(got, np.einsum("nchw,oc->nohw", data, weight[:, :, 0, 0].astype(np.int64)))


def test_on_an_avx2_cpu_qbuilds_kernels_compile_with_llvms_machine_combiner_off():
    """It turns a tile's chains of integer adds into trees that spill on 16 registers; AVX-512
    CPUs and TVM's own kernels keep it."""
    off = ["-x86-machine-combiner=false"]
    assert llvm_options("builtin", AVX2_CPU.tvm_target()) == off
    assert llvm_options("tuned", AVX2_CPU.tvm_target()) == off
    assert llvm_options("untuned", AVX2_CPU.tvm_target()) == []
    assert llvm_options("builtin", ZEN4.tvm_target()) == []
    assert llvm_options("builtin", tvm.target.Target({"kind": "cuda", "arch": "sm_90"})) == []
    target = codegen_target("builtin", AVX2_CPU.tvm_target())
    assert list(target.export()["cl-opt"]) == off and codegen_target("builtin", target) is target
    kept = tvm.target.Target({**AVX2_CPU.spec, "cl-opt": ["-x86-machine-combiner=true"]})
    assert codegen_target("builtin", kept) is kept, "a target's own setting of the option stays"
    mod = conv_module((1, 16, 8, 8), np.ones((16, 16, 1, 1), "int8"), 1, 0, 1, "int32")
    assert compile_model(mod, AVX2_CPU, "builtin").kernels["llvm_options"] == off


def _requantized_reference(x: np.ndarray, weight: np.ndarray, top: int, stride: int = 1) -> np.ndarray:
    """``requantized_relu_module``'s values (ReLU'd), exactly, with NumPy."""
    data = np.clip((np.maximum(x, 0).astype(np.int64) + 8) >> 4, -127, top)
    k = weight.shape[2]
    padded = np.pad(data, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    windows = sliding_window_view(padded, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    if weight.shape[1] == 1 < x.shape[1]:  # depthwise
        return np.einsum("nchwij,cij->nchw", windows, weight[:, 0].astype(np.int64))
    return np.einsum("nchwij,ocij->nohw", windows, weight.astype(np.int64))


# (channels, size, kernel, stride) of depthwise convs: EfficientNet-Lite0's kinds, and a block of 8
DEPTHWISE_SHAPES = {
    "3x3": (32, 12, 3, 1),
    "5x5, stride 2": (48, 13, 5, 2),
    "3x3, stride 2": (16, 9, 3, 2),
    "blocks of 8": (8, 10, 3, 1),
}


@pytest.mark.parametrize("shape", list(DEPTHWISE_SHAPES), ids=list(DEPTHWISE_SHAPES))
def test_a_depthwise_conv_of_seven_bit_data_multiplies_four_taps_per_lane_and_stays_exact(shape):
    """Exact on this CPU; with VNNI, four taps of every channel take one vpdpbusd; built for an AVX2
    CPU (Haswell's instructions, which run here too) vpmaddubsw, exact; without either (plain
    vector code) exact too."""
    from qbuild.kernels.conv2d import DEPTHWISE_TAPS

    channels, size, k, stride = DEPTHWISE_SHAPES[shape]
    rng = np.random.default_rng(11)
    x = rng.integers(-3000, 3000, (1, channels, size, size)).astype(np.int32)
    weight = rng.integers(-128, 128, (channels, 1, k, k)).astype(np.int8)
    mod = requantized_relu_module(x.shape, weight, relu=True, stride=stride)
    expected = _requantized_reference(x, weight, top=127, stride=stride)
    compiled = compile_model(mod, CPU, "builtin")
    np.testing.assert_array_equal(compiled.vm["main"](tvm.runtime.tensor(x)).numpy(), expected)
    assert all(block.endswith(DEPTHWISE_TAPS) for block in _conv_blocks(mod, CPU))
    if "avx512vnni" in cpu_features(CPU.tvm_target()):
        assert _families(compiled)["int8 dot VNNI (vpdpbusd)"] > 0
    haswell = compile_model(mod, AVX2_CPU, "builtin")
    assert _families(haswell)["u8*s8 pairs (vpmaddubsw)"] > 0
    np.testing.assert_array_equal(haswell.vm["main"](tvm.runtime.tensor(x)).numpy(), expected)
    if channels % 16 == 0:  # AVX-512 without VNNI: blocks of 16, taps a block apart, plain vector code
        skylake = compile_model(mod, SKYLAKE_SP, "builtin")
        assert skylake.kernels["functions"]["conv"] == 1
        if "avx512f" in cpu_features(CPU.tvm_target()):  # it runs only on an AVX-512 CPU
            np.testing.assert_array_equal(skylake.vm["main"](tvm.runtime.tensor(x)).numpy(), expected)
    plain, _ = run_builtin(mod, x, avx2=False)
    np.testing.assert_array_equal(plain, expected)


def _conv_blocks(mod, target: TargetChoice) -> list[str]:
    from qbuild.tune import conv_functions

    return [workload.block for workload, _ in conv_functions(mod, target.tvm_target()).values()]


def test_a_conv_of_two_bit_data_and_weights_accumulates_in_int16_and_stays_exact():
    """Data in [0, 3] and weights in [-2, 1]: every partial sum fits in int16 (3 x 144 x 2), so on
    AVX2 the products accumulate in int16, one vpmaddwd per accumulator and tile instead of one
    per vpmaddubsw (checked cross-compiled for an AVX2 CPU; a VNNI CPU accumulates in int32 with vpdpbusd).
    Exact on this CPU and in the plain vector fallback of the same compute."""
    rng = np.random.default_rng(10)
    x = rng.integers(-3000, 3000, (1, 16, 14, 14)).astype(np.int32)
    weight = rng.integers(-2, 2, (32, 16, 3, 3)).astype(np.int8)
    mod = requantized_relu_module(x.shape, weight, relu=True, top=3)
    assert [block.endswith(conv2d.INT16_SUMS) for block in _conv_blocks(mod, AVX2_CPU)] == [True]
    for_zen3 = compile_model(mod, AVX2_CPU, "builtin")
    assert for_zen3.kernels["int16_sum_convs"] == 1
    assert 0 < _families(for_zen3)["s16*s16 pairs (vpmaddwd)"] < _families(for_zen3)["u8*s8 pairs (vpmaddubsw)"]
    compiled = compile_model(mod, CPU, "builtin")
    np.testing.assert_array_equal(
        compiled.vm["main"](tvm.runtime.tensor(x)).numpy(), _requantized_reference(x, weight, 3)
    )
    got, _ = run_builtin(mod, x, avx2=False)
    np.testing.assert_array_equal(got, _requantized_reference(x, weight, 3))


def test_a_byte_conv_accumulates_in_int16_exactly_when_its_bound_fits():
    """Weights all 2: an output channel's sum is 288 x the data's top; 113 x 288 fits in int16, 114 x 288 not."""
    weight = np.full((32, 16, 3, 3), 2, np.int8)
    for top, int16 in ((113, True), (114, False)):
        blocks = _conv_blocks(requantized_relu_module((1, 16, 14, 14), weight, relu=True, top=top), AVX2_CPU)
        assert [block.endswith(conv2d.INT16_SUMS) for block in blocks] == [int16], top


def test_a_weight_sum_bound_is_the_same_in_any_layout_of_the_weights():
    from qbuild.relax.ranges import largest_channel_sum

    weight = np.random.default_rng(2).integers(-128, 128, (16, 8, 3, 3))
    blocked = weight.reshape(2, 8, 1, 8, 3, 3).transpose(0, 2, 4, 5, 3, 1)  # OIHW8i8o
    expected = max(np.maximum(weight, 0).sum(axis=(1, 2, 3)).max(), -np.minimum(weight, 0).sum(axis=(1, 2, 3)).min())
    assert largest_channel_sum(weight, "OIHW") == largest_channel_sum(blocked, "OIHW8i8o") == expected


def test_an_unknown_kernel_set_is_refused_with_the_choices():
    from qbuild.errors import QbuildError

    with pytest.raises(QbuildError, match="unknown kernel set 'fast'.*builtin, tuned, untuned"):
        pipeline("fast", CPU.tvm_target())


def test_a_quantized_resnet_gives_the_same_integers_with_builtin_and_untuned_kernels():
    from qbuild.models import load_model
    from qbuild.quantize import make, quantize
    from qbuild.trace import trace

    loaded = load_model("resnet18", "random", 32)
    traced = trace(loaded.module, loaded.input_shape)
    mod = quantize(traced.mod, traced.params, config=make()).mod
    x = np.random.default_rng(5).standard_normal(loaded.input_shape).astype(np.float32)
    builtin = compile_model(mod, CPU, "builtin")
    untuned = compile_model(mod, CPU, "untuned")
    np.testing.assert_array_equal(builtin(x), untuned(x))
    assert builtin.kernels["functions"].get("unscheduled", 0) == 0
    assert untuned.kernels == {
        "set": "untuned",
        "functions": {},
        "int16_sum_convs": 0,
        "pass_config": {},
        "llvm_options": [],
        "tuning": None,
    }


def test_tvm_runs_qbuilds_kernels_on_every_cpu_of_the_process():
    """TVM's own default is half the logical CPUs on x86; the peers use all of them."""
    from qbuild import threads

    expected = int(os.environ.get(threads.ENV_VAR) or threads.available_cpus())
    assert tvm.get_global_func("runtime.NumThreads")() == expected


def test_weight_packing_is_evaluated_in_one_build_to_the_constants_fold_constant_would_compute(monkeypatch):
    from qbuild.kernels.pipeline import legalize_convs
    from qbuild.relax import fold_constants

    weight = np.random.default_rng(0).integers(-127, 128, (16, 16, 3, 3)).astype(np.int8)
    with CPU.tvm_target():
        legalized = tvm.transform.Sequential(
            [
                relax.transform.ConvertLayout({}, conv2d.desired_layout),
                legalize_convs(AVX2.with_vnni(True)),
                relax.transform.AnnotateTIROpPattern(),
            ]
        )(conv_module((1, 16, 8, 8), weight, 1, 1, 1, "int32"))
        builds = []
        compile_ = tvm.compile
        monkeypatch.setattr(tvm, "compile", lambda *args, **kwargs: builds.append(args) or compile_(*args, **kwargs))
        folded = fold_constants.fold_constant_calls()(legalized)
        monkeypatch.undo()
        assert len(builds) == 1 and len(fold_constants.foldable_bindings(legalized)) >= 3  # transform, quads, sums
        assert fold_constants.foldable_bindings(folded) == []
        fold = relax.transform.FoldConstant()
        tvm.ir.assert_structural_equal(fold(folded)["main"], fold(legalized)["main"])


def _dense_module(x_dtype: str, weights: np.ndarray, out_dtype: str, rows: int = 1):
    """matmul(x, W) with constant weights W (K x N), as a traced Linear layer reaches the compiler."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, weights.shape[0]), x_dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, relax.const(weights), out_dtype=out_dtype))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("rows", [1, 2, 50], ids=["one row: one pixel", "rows: pixels, padded", "ViT-B/32's 50 tokens"])
def test_a_dense_layer_runs_as_a_1x1_conv_to_rounding(rows):
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((96, 40)).astype(np.float32)
    x = rng.standard_normal((rows, 96)).astype(np.float32)
    got, report = run_builtin(_dense_module("float32", weights, "float32", rows=rows), x)
    assert report.counts["conv"] == 1
    np.testing.assert_allclose(got, x.astype(np.float64) @ weights, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("rows, pixels", [(48, 48), (50, 52), (197, 200)])
def test_the_rows_of_a_dense_layer_are_the_pixels_its_conv_tiles_padded_to_a_multiple_of_4(rows, pixels):
    from qbuild.relax.dense_as_conv import dense_as_conv

    mod = dense_as_conv()(_dense_module("float32", np.ones((96, 40), "float32"), "float32", rows=rows))
    conv = next(
        b.value
        for block in mod["main"].body.blocks
        for b in block.bindings
        if getattr(b.value, "op", None) == tvm.ir.Op.get("relax.nn.conv2d")
    )
    assert [int(d) for d in conv.args[0].ty.shape] == [1, 96, 1, pixels]
    assert [int(d) for d in mod["main"].ret_ty.shape] == [rows, 40]


@pytest.mark.parametrize("rows", [1, 6, 8])
def test_an_int8_dense_layer_runs_on_the_integer_conv_bit_exact(rows):
    rng = np.random.default_rng(1)
    weights = rng.integers(-127, 128, (128, 24)).astype(np.int8)
    x = rng.integers(-127, 128, (rows, 128)).astype(np.int8)
    got, report = run_builtin(_dense_module("int8", weights, "int32", rows=rows), x)
    assert report.counts["conv"] == 1
    np.testing.assert_array_equal(got, x.astype(np.int64) @ weights.astype(np.int64))


def test_a_squeeze_counted_from_the_back_compiles_and_squeezes_that_axis():
    """TVM's ConvertLayout crashed (std::bad_alloc) on squeeze(axis=[-2]), which torch's multi-head
    attention exports; the builtin pipeline counts the axes from the front first."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((3, 5, 1, 1, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.squeeze(x, axis=[-2]))
        bb.emit_func_output(out)
    data = np.random.default_rng(2).standard_normal((3, 5, 1, 1, 8)).astype(np.float32)
    got, _report = run_builtin(bb.get(), data)
    np.testing.assert_array_equal(got, data.squeeze(axis=-2))
