"""The GPU column without a GPU: CUDA builds are cross-compiled and censused here; running them is
the lent GPU machine's job (scripts/gpu-plan.sh), never faked."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from qbuild import plan, targets
from qbuild.analysis import analyse_sources, cuda_dtype_census, ptx_census, sass_census
from qbuild.errors import QbuildError

SM90 = targets.cuda_target("sm_90")
needs_gpu = pytest.mark.skipif(not targets.gpu_visible(), reason="needs a CUDA GPU: runs on the lent GPU machine")
# ResNet-50's int8 conv kinds: (in channels, size, out channels, kernel, stride, padding)
RESNET_CONVS = {
    "3x3, 64 channels": (64, 56, 64, 3, 1, 1),
    "1x1 reduce": (256, 56, 64, 1, 1, 0),
    "strided 3x3": (128, 56, 128, 3, 2, 1),
    "3x3 on 7x7": (512, 7, 512, 3, 1, 1),
    "strided 1x1 downsample": (1024, 14, 2048, 1, 2, 0),
}


def _int8_conv_module(
    channels: int,
    size: int = 14,
    out_channels: int | None = None,
    kernel: int = 3,
    stride: int = 1,
    padding: int = 1,
    weight: np.ndarray | None = None,
    groups: int = 1,
):
    """conv2d (int8 x int8 -> int32) + ReLU on an int8 input, weights bound (ones by default)."""
    from tvm import relax

    out_channels = out_channels or channels
    if weight is None:
        weight = np.ones((out_channels, channels // groups, kernel, kernel), "int8")
    bb = relax.BlockBuilder()
    data = relax.Var("data", relax.TensorType((1, channels, size, size), "int8"))
    with bb.function("main", [data]):
        with bb.dataflow():
            conv = bb.emit(
                relax.op.nn.conv2d(
                    data, relax.const(weight), strides=stride, padding=padding, groups=groups, out_dtype="int32"
                )
            )
            out = bb.emit_output(relax.op.nn.relu(conv))
        bb.emit_func_output(out)
    return bb.get()


def _random_resnet_conv(name: str, seed: int):
    """One of ``RESNET_CONVS`` on random int8 data and weights: (data, module, exact NumPy result)."""
    from test_kernels import reference_conv

    channels, size, out_channels, kernel, stride, padding = RESNET_CONVS[name]
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, channels, size, size)).astype(np.int8)
    weight = rng.integers(-128, 128, (out_channels, channels, kernel, kernel)).astype(np.int8)
    mod = _int8_conv_module(channels, size, out_channels, kernel, stride, padding, weight)
    return x, mod, reference_conv(x, weight, stride, padding, 1)


def test_the_cuda_dtype_census_counts_c_type_names_and_vector_elements():
    source = """#include <cuda_fp16.h>
// float in a comment
/* double in a block comment */
extern "C" __global__ void k(signed char* a, unsigned char* b, int4* c, half2 h, long long n) {
  float x = 0; char4 v; printf("int");
  int32_t y; unsigned int z;
}"""
    assert cuda_dtype_census(source) == {
        "int8": 2,
        "uint8": 1,
        "int32": 2,
        "float16": 1,
        "int64": 1,
        "float32": 1,
        "uint32": 1,
    }


def test_ptx_and_sass_censuses_group_tensor_core_and_dot_product_instructions():
    ptx = """.visible .entry k(
{
$L__BB0_1:
\t@%p1 bra $L__BB0_2;
\twmma.mma.sync.aligned.row.col.m16n16k16.s32.s8.s8.s32 {%r1}, {%r2}, {%r3}, {%r4};
\tdp4a.s32.s32 %r1, %r2, %r3, %r4;
\tfma.rn.f32 %f1, %f2, %f3, %f4;
}"""
    census = ptx_census(ptx)
    assert census["total"] == 4
    assert census["families"]["int8 tensor-core MMA (wmma/mma .s8/.u8)"] == 1
    assert census["families"]["int8 dot product (dp4a/dp2a)"] == 1
    assert census["families"]["fp32 FMA (fma .f32)"] == 1
    sass = """        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/              @!P0 IMMA.16816.S8.S8 R4, R8.ROW, R12.COL, R4 ;
        /*0020*/                   HMMA.16816.F32 R2, R4, R6, R2 ;"""
    families = sass_census(sass)["families"]
    assert families["int8 tensor-core MMA (IMMA)"] == 1 and families["fp16/bf16 tensor-core MMA (HMMA)"] == 1


def test_builtin_cuda_kernels_put_every_int8_conv_on_the_tensor_cores():
    from qbuild.compile import compile_model

    for channels in (64, 128):  # dlight's own rule only tensorizes dimensions above 64
        compiled = compile_model(_int8_conv_module(channels), SM90, "builtin")
        assert compiled.kernels["functions"]["tensorcore_int8"] == 1
        assert compiled.kernels["pass_config"] == {"relax.backend.use_cuda_graph": True}
        sources = compiled.sources()
        assert "wmma::mma_sync" in sources["cu"] and "ll" not in sources  # the device code, not the host's
        census = analyse_sources(sources)
        assert census["dtype_census"]["source"] == "cu" and census["dtype_census"]["counts"]["int8"] > 0


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc to make PTX")
def test_the_int8_ptx_multiplies_on_int8_tensor_cores():
    from qbuild.compile import compile_model

    census = analyse_sources(compile_model(_int8_conv_module(64), SM90, "builtin").sources())
    assert census["ptx_census"]["families"]["int8 tensor-core MMA (wmma/mma .s8/.u8)"] > 0


def test_untuned_cuda_builds_are_tvms_default_pipeline_without_cuda_graphs():
    from tvm import relax

    from qbuild.compile import compile_model

    bb = relax.BlockBuilder()
    data = relax.Var("data", relax.TensorType((1, 8, 4, 4), "float32"))
    with bb.function("main", [data]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.relu(data))
        bb.emit_func_output(out)
    compiled = compile_model(bb.get(), SM90, "untuned")
    assert compiled.kernels == {
        "set": "untuned",
        "functions": {},
        "int16_sum_convs": 0,
        "pass_config": {},
        "llvm_options": [],
        "tuning": None,
    }
    assert "__global__" in compiled.sources()["cu"]


def test_a_cuda_plan_builds_both_kernel_sets_and_runs_only_the_peers_that_fit_the_gpu(monkeypatch):
    monkeypatch.setattr(targets, "resolve_target", lambda requested="auto", tracker=None: SM90)
    experiments = plan.build_plan(
        ["resnet50"],
        ["float", "int8-a8", "torch-fp32", "torch-compile-fp16-graphs", "ort-fp32"],
        ["cuda"],
        dataset=None,
    )
    ids = [e.id for e in experiments]
    assert ids == [
        "resnet50-float-cuda",
        "resnet50-float-cuda-untuned",
        "resnet50-int8-a8-cuda",
        "resnet50-int8-a8-cuda-untuned",
        "resnet50-torch-fp32-cuda",
        "resnet50-torch-compile-fp16-graphs-cuda",
    ]


def test_cpu_plans_leave_the_gpu_only_peers_out():
    experiments = plan.build_plan(["resnet18"], ["torch-fp32", "torch-fp16", "ort-fp32"], ["cpu"], "quick")
    assert [e.variant.name for e in experiments] == ["torch-fp32", "ort-fp32"]


def test_asking_for_cuda_without_a_gpu_names_the_fix():
    if targets.gpu_visible():
        pytest.skip("a GPU is visible here")
    with pytest.raises(QbuildError, match="no CUDA GPU is visible"):
        plan.build_plan(["resnet18"], ["float"], ["cuda"], "quick")


def test_split_k_gives_small_deep_convs_more_blocks_and_leaves_wide_shallow_ones():
    from qbuild.kernels.split_k import splits

    assert splits(512, 49, 512 * 9, 512) == 16  # 3x3 on 7x7: 4 blocks -> 64
    assert splits(64, 3136, 256, 256) == 1  # 1x1 reduce: the reduction is too short to cut
    assert splits(2048, 3136, 4608, 512) == 1  # already more blocks than SMs
    assert splits(512, 49, 3 * 9, 3) == 1  # cuts whole channels only


def test_fp32_convs_are_split_by_the_tiles_of_dlights_matmul_schedule():
    from qbuild.kernels.split_k import float_tile, splits

    assert float_tile(SM90.tvm_target()) == (32, 64)  # 128 threads x 4 x 4 outputs
    assert splits(512, 49, 512 * 9, 512, (32, 64)) == 16  # 3x3 on 7x7: 16 blocks -> 256
    assert splits(64, 3136, 64 * 9, 64, (32, 64)) == 2  # 3x3 on 56x56: 98 blocks -> 196
    assert splits(256, 3136, 64, 64, (32, 64)) == 1  # 1x1 expand: 392 blocks already


@pytest.mark.parametrize("name", RESNET_CONVS)
def test_split_k_convs_compute_the_conv_exactly(name):
    """The rewrite is target-independent Relax: checked on the CPU against NumPy."""
    import tvm
    from tvm import relax

    from qbuild.kernels.split_k import split_k_convs

    x, mod, expected = _random_resnet_conv(name, seed=1)
    vm = relax.VirtualMachine(
        tvm.compile(split_k_convs(SM90.tvm_target())(mod), tvm.target.Target({"kind": "llvm"})), tvm.cpu()
    )
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), expected)


def test_the_cuda_graph_rewrites_keep_a_requantized_split_conv_bit_for_bit():
    """The builtin CUDA pipeline's graph rewrites (int32 rescaling, split-K) are target-independent
    Relax: the rewritten graph is checked on the CPU against the original."""
    import tvm
    from test_narrow import conv_requantize_module, int64_ops
    from tvm import relax

    from qbuild.kernels import cuda

    rng = np.random.default_rng(5)
    mod = conv_requantize_module(rng.integers(-128, 128, (512, 512, 3, 3)).astype(np.int8), size=7)
    rewritten = tvm.transform.Sequential(cuda.graph_rewrites(SM90.tvm_target()))(mod)
    assert int64_ops(mod) and not int64_ops(rewritten)
    assert "relax.nn.conv2d" not in rewritten["main"].script(), "a 3x3 conv on 7x7 pixels is split"
    x = tvm.runtime.tensor(rng.integers(-128, 128, (1, 512, 7, 7)).astype(np.int8))
    cpu = tvm.target.Target({"kind": "llvm"})
    expected, got = (relax.VirtualMachine(tvm.compile(m, cpu), tvm.cpu())["main"](x).numpy() for m in (mod, rewritten))
    np.testing.assert_array_equal(got, expected)


def _pool_then_quantize(size: int):
    """ResNet's stem tail as the quantizer leaves it: ReLU, 3x3/2 max pool, quantize to int8."""
    from tvm import relax

    bb = relax.BlockBuilder()
    data = relax.Var("data", relax.TensorType((1, 64, size, size), "float32"))
    with bb.function("main", [data]):
        with bb.dataflow():
            pooled = bb.emit(relax.op.nn.max_pool2d(bb.emit(relax.op.nn.relu(data)), pool_size=3, strides=2, padding=1))
            scaled = bb.emit(
                relax.op.floor(
                    relax.op.add(relax.op.multiply(pooled, relax.const(np.float32(8.0))), relax.const(np.float32(0.5)))
                )
            )
            out = bb.emit_output(relax.op.astype(relax.op.clip(scaled, -127, 127), "int8"))
        bb.emit_func_output(out)
    return bb.get()


def test_a_max_pool_and_its_quantize_run_as_one_kernel_of_one_thread_per_output():
    """dlight's reduction rules gave each of the 200,704 outputs a block of 256 threads, 9 busy."""
    from qbuild.compile import compile_model

    compiled = compile_model(_pool_then_quantize(112), SM90, "builtin")
    assert compiled.kernels["functions"] == {"window_reduction": 1, "fallback": 1}  # the pool; the ReLU
    sources = compiled.sources()
    pool_kernel = sources["cu"].split("fused_max_pool2d")[-1]
    assert "red_buf" not in pool_kernel and "__shared__" not in pool_kernel  # no cross-thread reduction
    assert "local_ptr" in pool_kernel  # the pooled value stays in a register for the quantize
    assert analyse_sources(sources)["launch_census"]["kernels"] == 2


def test_a_pool_with_few_outputs_keeps_dlights_block_per_output():
    from qbuild.compile import compile_model

    compiled = compile_model(_pool_then_quantize(14), SM90, "builtin")  # 64 x 7 x 7 outputs
    assert "window_reduction" not in compiled.kernels["functions"]


def test_a_depthwise_int8_conv_runs_one_thread_per_output():
    from qbuild.compile import compile_model

    weight = np.ones((96, 1, 3, 3), np.int8)
    compiled = compile_model(_int8_conv_module(96, 56, 96, weight=weight, groups=96), SM90, "builtin")
    assert compiled.kernels["functions"] == {"window_reduction": 1}
    assert "red_buf" not in compiled.sources()["cu"]


def test_a_same_padded_depthwise_conv_after_a_conv_builds_its_pad_folded_in():
    """TF-style "same" padding (EfficientNet-Lite0): the explicit pad folds into the depthwise conv,
    as on the CPU; fused into the conv before, it made dlight's Matmul assert (no CUDA build)."""
    import tvm
    from tvm import relax

    from qbuild.compile import compile_model
    from qbuild.kernels import cuda

    bb = relax.BlockBuilder()
    data = relax.Var("data", relax.TensorType((1, 40, 28, 28), "float32"))
    rng = np.random.default_rng(0)
    with bb.function("main", [data]):
        with bb.dataflow():
            expanded = bb.emit(
                relax.op.nn.relu(
                    relax.op.nn.conv2d(data, relax.const(rng.standard_normal((240, 40, 1, 1)).astype(np.float32)))
                )
            )
            padded = bb.emit(relax.op.nn.pad(expanded, [0, 0, 0, 0, 0, 1, 0, 1]))
            out = bb.emit_output(
                relax.op.nn.conv2d(padded, relax.const(np.ones((240, 1, 3, 3), np.float32)), strides=2, groups=240)
            )
        bb.emit_func_output(out)
    mod = bb.get()
    rewritten = tvm.transform.Sequential(cuda.graph_rewrites(SM90.tvm_target()))(mod)
    assert "relax.nn.pad" not in rewritten.script()
    compiled = compile_model(mod, SM90, "builtin")
    assert compiled.kernels["functions"]["matmul"] == 1 and compiled.kernels["functions"]["window_reduction"] == 1


def test_a_split_convs_partial_sums_are_added_in_its_requantize_kernel():
    """Three kernels: the input windows gathered, the chunked matmul on the tensor cores, and one
    that adds the partial sums, rescales and adds the residual (no kernel of its own for the sum)."""
    from test_narrow import conv_requantize_module

    from qbuild.compile import compile_model

    mod = conv_requantize_module(np.ones((512, 512, 3, 3), np.int8), size=7)
    compiled = compile_model(mod, SM90, "builtin")
    assert compiled.kernels["functions"] == {"tensorcore_int8": 1, "fallback": 2}
    # the gather reads the input and the epilogue writes the output, so only the matmul is captured
    assert analyse_sources(compiled.sources())["launch_census"] == {"kernels": 3, "in_cuda_graph": 1, "cuda_graphs": 1}


def test_a_split_fp32_conv_computes_the_conv_up_to_rounding():
    import tvm
    from test_kernels import conv_module
    from tvm import relax

    from qbuild.kernels.split_k import split_k_convs

    channels, size = 512, 7
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    weight = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
    mod = conv_module(x.shape, weight, 1, 1, 1, "float32")
    split = split_k_convs(SM90.tvm_target())(mod)
    assert "relax.nn.conv2d" not in split["main"].script()
    cpu = tvm.target.Target({"kind": "llvm"})
    expected, got = (
        relax.VirtualMachine(tvm.compile(m, cpu), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        for m in (mod, split)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


@needs_gpu
@pytest.mark.parametrize("name", RESNET_CONVS)
def test_int8_convs_on_the_tensor_cores_are_bit_exact(name):
    import tvm

    from qbuild.compile import compile_model

    x, mod, expected = _random_resnet_conv(name, seed=0)
    compiled = compile_model(mod, targets.resolve_target("cuda"), "builtin")
    assert compiled.kernels["functions"]["tensorcore_int8"] == 1
    out = compiled.vm["main"](tvm.runtime.tensor(x, compiled.target.device())).numpy()
    np.testing.assert_array_equal(out, expected)


@needs_gpu
@pytest.mark.parametrize("kind", ["max pool + quantize", "int8 depthwise conv"])
def test_one_thread_per_output_kernels_compute_what_the_cpu_build_does(kind):
    import tvm

    from qbuild.compile import compile_model

    rng = np.random.default_rng(0)
    if kind == "max pool + quantize":
        mod, x = _pool_then_quantize(112), rng.standard_normal((1, 64, 112, 112)).astype(np.float32) * 8
    else:
        weight = rng.integers(-128, 128, (96, 1, 3, 3)).astype(np.int8)
        mod = _int8_conv_module(96, 56, 96, weight=weight, groups=96)
        x = rng.integers(-128, 128, (1, 96, 56, 56)).astype(np.int8)
    outputs = {}
    for name in ("cuda", "cpu"):
        compiled = compile_model(mod, targets.resolve_target(name), "builtin")
        outputs[name] = compiled.vm["main"](tvm.runtime.tensor(x, compiled.target.device())).numpy()
    np.testing.assert_array_equal(outputs["cuda"], outputs["cpu"])


@needs_gpu
def test_a_quantized_models_cuda_build_computes_what_its_cpu_build_does():
    """ResNet-18 int8 at 224 x 224, whole: every CUDA rule in one model (tensor-core convs, split
    convs and their partial sums, the one-thread-per-output max pool, the CUDA graph) against the
    CPU build of the same quantized module. Integer arithmetic to the logits, but the global
    average pool sums floats in another order on each: a rounding apart, never more."""
    from qbuild.compile import compile_model
    from qbuild.models import load_model
    from qbuild.quantize import quantize
    from qbuild.trace import trace

    loaded = load_model("resnet18", "random")
    mod = quantize(trace(loaded.module, loaded.input_shape).inference_module()).mod
    batch = np.random.default_rng(0).standard_normal(loaded.input_shape).astype(np.float32)
    cuda, cpu = (compile_model(mod, targets.resolve_target(name), "builtin") for name in ("cuda", "cpu"))
    assert cuda.kernels["functions"]["tensorcore_int8"] > 0
    expected, got = cpu(batch), cuda(batch)
    np.testing.assert_allclose(got, expected, rtol=0, atol=0.01 * np.abs(expected).max())
    assert got.argmax() == expected.argmax()


@needs_gpu
def test_the_pytorch_gpu_peers_compute_the_model():
    import torch

    from qbuild.peers import TorchEager

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    batch = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    expected = module.eval()(torch.from_numpy(batch)).detach().numpy()
    fp16 = TorchEager(module, "cuda", "float16", channels_last=True)
    np.testing.assert_allclose(fp16(batch), expected, rtol=0.02, atol=0.02)
    assert fp16.prepare(batch)() is None and fp16.describe()["device"] == "cuda"


def test_sass_disassembles_each_kept_binary_and_needs_cuobjdump(tmp_path, monkeypatch):
    from qbuild import cuda_code

    tool = tmp_path / "cuobjdump"
    tool.write_text('#!/bin/sh\necho "listing of $(cat "$2")"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert cuda_code.sass([b"first", b"second"], "unused source", "sm_90") == "listing of first\n\nlisting of second\n"
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cuda_code.sass([b"first"], "unused source", "sm_90") is None


def test_int8_tensor_core_tiles_fit_the_matmul_they_cover():
    from qbuild.kernels.wmma_int8 import Tile, choose_tile

    assert choose_tile(512, 49, 4608) == Tile(128, 64, 64)  # a 7x7 stage: 49 pixels in one 64-wide tile
    assert choose_tile(3136, 64, 576) == Tile(128, 64, 64)  # 64 channels: no 128-wide tile half padding
    assert choose_tile(256, 784, 288) == Tile(128, 128, 32)  # a split 3x3 conv's chunk: no padded steps
    assert choose_tile(256, 784, 16) == Tile(128, 128, 16)
    with pytest.raises(ValueError, match="multiples of 32"):
        Tile(48, 64, 64)


def test_a_conv_with_64_output_channels_runs_on_half_the_warps_of_a_128_channel_one():
    """8 warps for a 64 x 128 tile, 16 for 128 x 128 (each warp 32 x 32 of the output)."""
    from qbuild.compile import compile_model

    for out_channels, threads in ((64, 256), (128, 512)):
        compiled = compile_model(_int8_conv_module(64, 28, out_channels, kernel=1, padding=0), SM90, "builtin")
        assert compiled.kernels["functions"]["tensorcore_int8"] == 1
        source = compiled.sources()["cu"]
        kernel = next(
            line for line in source.splitlines() if "wmma" not in line and "__global__" in line and "conv2d" in line
        )
        assert f"__launch_bounds__({threads})" in kernel


def test_a_copy_is_coalesced_along_whichever_side_its_source_runs():
    """NCHW activations run along pixels (the tile's rows), weights along the reduction: the copy
    into shared memory gives a warp's threads adjacent elements of the source either way."""
    from tvm import s_tir, te

    from qbuild.kernels.wmma_int8 import rows_contiguous

    def copy(source_by_pixels: bool):
        """A 128-row x 64-deep tile copied from a source laid out (depth, rows) or (rows, depth)."""
        source = te.placeholder((64, 128) if source_by_pixels else (128, 64), "int8", name="a")
        tile = te.compute((128, 64), lambda r, k: source[k, r] if source_by_pixels else source[r, k], name="copy")
        return te.create_prim_func([source, tile])

    for source_by_pixels, expected in ((True, True), (False, False)):
        sch = s_tir.Schedule(copy(source_by_pixels))
        assert rows_contiguous(sch.get(sch.get_sblock("copy"))) is expected
