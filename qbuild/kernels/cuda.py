"""Kernel generation for CUDA GPUs: the Relax pipeline behind each kernel set on a ``cuda`` target.

- ``untuned``: TVM 0.27's default CUDA pipeline. It schedules every fused function with
  dlight's default rules (``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction``,
  ``Fallback``). dlight's ``Matmul`` reads an NCHW conv2d as a matmul (the input window is
  gathered while loading tiles), and tries the int8 tensor cores when every dimension exceeds
  64; on ResNet-50's int8 convs that attempt fails to compile (below), so TVM's default pipeline
  cannot build a quantized ResNet-50 at all.
- ``builtin``: qbuild's pipeline: integer rescaling in int32 where it provably fits (the CPU
  pipeline's ``qbuild.relax.narrow`` pass: the GPU's int64 arithmetic takes two or more instructions per op and
  an int64 residual branch twice the memory), int8 and fp32 convs with too few output tiles to
  fill the GPU split along their reduction (``split_k``), the same legalization and fusion (a
  widening cast in the kernel that reads it: ``fusion``), then ``TensorCoreInt8`` ahead of
  dlight's rules: every int8 x int8 -> int32 matmul-shaped function (each int8 conv with its
  fused requantize epilogue) on the int8 tensor cores (``wmma_int8``: wmma
  ``m16n16k16`` s8, tiles of 64 or 128 a side by the shape, reduction steps of up to 64, coalesced
  copies of NCHW activations), whatever its shape; ``WindowReduction`` ahead of dlight's
  reduction rules: a pooling window or a depthwise conv with the requantize fused after it, one
  thread per output, in one kernel. The whole model then runs as one captured CUDA graph
  (``relax.backend.use_cuda_graph``), so the host launches it once per inference.

TVM 0.27 notes learned here: dlight's ``MatmulInt8Tensorization`` annotates its K loops for
software pipelining, and ``InjectSoftwarePipeline`` then fails on the wmma fragments ("Check
failed: (it != fragment_info_.end())" in ``GetWmmaFragmentSize``: the ``untuned`` builds record
it); it also asserts, rather than declines, on functions that are no matmul. Importing
``tvm.s_tir.tensor_intrin.cuda`` (the ~500 wmma/mma/dp4a intrinsics) takes over a minute
through ``inspect.stack``: ``load_tensor_intrinsics``. A CUDA module prints its source with
``inspect_source("cuda")`` (other formats give empty strings) and cannot ``write_to_file``;
``qbuild.cuda_code`` makes the PTX and SASS. Building for ``sm_XX`` needs no GPU: without one
TVM does not compile the CUDA source while building (with one it does, through NVRTC).
"""

from __future__ import annotations

import inspect
import math
import sys
from contextlib import contextmanager

import tvm
from tvm import relax, tirx
from tvm.s_tir import dlight as dl

from qbuild.kernels import split_k, wmma_int8
from qbuild.kernels.schedule import KernelReport
from qbuild.relax.fold_pads import fold_pads_into_convs
from qbuild.relax.fusion import widen_in_consumers
from qbuild.relax.integer_rewrites import integer_rewrites

CUDA_GRAPH_CONFIG = {"relax.backend.use_cuda_graph": True}


@contextmanager
def _frames_without_source():
    """``inspect.stack`` without source lookups. TVMScript's ``T.prim_func`` calls
    ``inspect.stack()`` for every function it parses, and for each frame from a file that does
    not exist (``<frozen importlib._bootstrap>``) ``inspect`` scans every loaded module; the
    ~500 tensor intrinsics of ``tvm.s_tir.tensor_intrin.cuda`` then take over a minute to
    import (with torch loaded). The parser reads only the frames themselves."""
    original = inspect.stack

    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            frames.append(
                inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, None, None)
            )
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = original


def load_tensor_intrinsics() -> None:
    """Register TVM's CUDA tensor intrinsics (wmma, mma, dp4a) once, quickly (see above)."""
    if "tvm.s_tir.tensor_intrin.cuda" not in sys.modules:
        with _frames_without_source():
            import tvm.s_tir.tensor_intrin.cuda  # noqa: F401


class TensorCoreInt8(dl.ScheduleRule):
    """An int8 x int8 -> int32 matmul on the int8 tensor cores (wmma), whatever its shape."""

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, tunable: bool):
        from tvm.s_tir.dlight.gpu import matmul

        if not isinstance(func, tirx.PrimFunc) or matmul.check_sm_version(str(target.attrs.get("arch", ""))) < 72:
            return None
        return wmma_int8.schedule(func)


# ``WindowReduction``: a reduction of at most WINDOW_MAX elements per output runs in one thread
# per output where there are at least WINDOW_MIN_OUTPUTS outputs (128 blocks of WINDOW_THREADS,
# about one per SM of an H100; a global average pool's 2048 outputs would leave most SMs idle and
# keep dlight's block per output).
WINDOW_MAX = 64
WINDOW_MIN_OUTPUTS = 32 * 1024
WINDOW_THREADS = 256  # threads per block of such a kernel


class WindowReduction(dl.ScheduleRule):
    """A function whose one reduction is a short window per output and no matmul (a pooling
    window, a depthwise conv; with the requantize FuseOps fused after it): one thread per output,
    its window and its epilogue in that thread, one kernel. dlight's ``Reduction`` rules share
    each output's window among a block of threads: ResNet-50's int8 max pool + quantize ran as
    200,704 blocks of 256 threads with 9 busy (0.17 ms on the H200, its slowest kernel), and
    EfficientNet-Lite0's depthwise convs went the same way. dlight's ``Fallback`` maps outputs to
    threads too, but gives the epilogue a kernel of its own and the window's result a round trip
    through global memory."""

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, tunable: bool):
        from tvm import s_tir
        from tvm.s_tir.dlight.analysis import normalize_prim_func
        from tvm.s_tir.dlight.base import try_inline
        from tvm.s_tir.dlight.gpu import matmul

        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos:
            return None
        reduction, *epilogue = try_inline(sch, infos)
        if not reduction.is_reduction() or not all(b.is_injective() for b in epilogue):
            return None
        if matmul.get_index_map(sch.get(reduction.block_rv)) is not None:
            return None  # a matmul-shaped conv: the tensor cores' or dlight's Matmul
        loops = list(zip(sch.get_loops(reduction.block_rv), reduction.dom_kind()))
        spatial, window = ([loop for loop, k in loops if k == kind] for kind in "SR")
        extents = [sch.get(loop).extent for loop in spatial + window]
        if (
            len(extents) != len(loops)
            or not all(isinstance(e, tirx.IntImm) for e in extents)
            or math.prod(e.value for e in extents[len(spatial) :]) > WINDOW_MAX
            or math.prod(e.value for e in extents[: len(spatial)]) < WINDOW_MIN_OUTPUTS
        ):
            return None
        try:
            sch.reorder(*spatial, *window)
            block_x, thread_x = sch.split(sch.fuse(*spatial), factors=[None, WINDOW_THREADS])
            sch.bind(block_x, "blockIdx.x")
            sch.bind(thread_x, "threadIdx.x")
            for block in epilogue:
                sch.reverse_compute_at(block.block_rv, thread_x)
            if epilogue:
                sch.set_scope(reduction.block_rv, 0, "local")  # each thread's window result, in a register
            sch.decompose_reduction(reduction.block_rv, sch.get_loops(reduction.block_rv)[2])
        except s_tir.ScheduleError:
            return None  # an epilogue that does not follow the outputs one to one
        return sch


class _Counted(dl.ScheduleRule):
    """A dlight rule that counts the functions it scheduled in a ``KernelReport``. A rule whose
    analysis asserts on a function (TVM 0.27's reduction rule on a bit-serial conv's flat reads)
    does not apply to it: the next rule is tried."""

    def __init__(self, name: str, rule: dl.ScheduleRule, report: KernelReport) -> None:
        self.name, self.rule, self.report = name, rule, report

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, tunable: bool):
        try:
            sch = self.rule.apply(func, target, tunable)
        except AssertionError:
            return None
        if sch is not None:
            self.report.counts[self.name] += 1
        return sch


def graph_rewrites(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """What the builtin pipeline does to the Relax graph before legalizing it. ``target`` only
    sizes the splits: the rewritten graph runs anywhere (tests run it on the CPU).

    Explicit zero pads fold into the conv that reads them, as on the CPU: FuseOps otherwise fuses
    the pad of a TF-style "same" conv (EfficientNet-Lite0's stride-2 depthwise convs) into the
    kernel of the conv before, whose output it does not follow one to one, and dlight's ``Matmul``
    asserts on that kernel (the float EfficientNet-Lite0 did not build for CUDA)."""
    return [*integer_rewrites(), fold_pads_into_convs(), split_k.split_k_convs(target)]


def fusion_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """qbuild's CUDA pipeline up to its fused PrimFuncs (before any schedule)."""
    from tvm.relax.backend.cuda import pipeline as cuda

    return [
        *cuda.library_dispatch_passes(target),
        *graph_rewrites(target),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        widen_in_consumers(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def builtin_pipeline(target: tvm.target.Target) -> tuple[tvm.transform.Pass, KernelReport]:
    """qbuild's CUDA pipeline (compile it under ``CUDA_GRAPH_CONFIG``) and the report it fills in."""
    from tvm.relax.backend.cuda import pipeline as cuda

    report = KernelReport()
    rules = [
        ("tensorcore_int8", TensorCoreInt8()),
        ("matmul", dl.gpu.Matmul()),
        ("gemv", dl.gpu.GEMV()),
        ("window_reduction", WindowReduction()),
        ("reduction", dl.gpu.Reduction()),
        ("general_reduction", dl.gpu.GeneralReduction()),
        ("fallback", dl.gpu.Fallback()),
    ]
    passes = [
        *fusion_passes(target),
        dl.ApplyDefaultSchedule(*(_Counted(name, rule, report) for name, rule in rules)),
        *cuda.dataflow_lower_passes(target),
        *cuda.finalize_passes(target),
    ]
    return tvm.transform.Sequential(passes, name="qbuild.builtin_cuda"), report
