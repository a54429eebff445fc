"""Kernel generation for CUDA GPUs: the Relax pipeline behind each kernel set on a ``cuda`` target.

- ``untuned``: TVM 0.27's default CUDA pipeline. It schedules every fused function with
  dlight's default rules (``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction``,
  ``Fallback``). dlight's ``Matmul`` reads an NCHW conv2d as a matmul (the input window is
  gathered while loading tiles), and tries the int8 tensor cores when every dimension exceeds
  64; on ResNet-50's int8 convs that attempt fails to compile (below), so TVM's default pipeline
  cannot build a quantized ResNet-50 at all.
- ``builtin``: qbuild's pipeline: integer rescaling in int32 where it provably fits (the CPU
  pipeline's ``narrow`` pass: the GPU's int64 arithmetic takes two or more instructions per op and
  an int64 residual branch twice the memory), int8 and fp32 convs with too few output tiles to
  fill the GPU split along their reduction (``split_k``), the same legalization and fusion (a
  widening cast in the kernel that reads it: ``fusion``), then
  ``TensorCoreInt8`` ahead of dlight's rules: every int8 x int8 -> int32 matmul-shaped function (each int8 conv
  with its fused requantize epilogue) on the int8 tensor cores (dlight's
  ``MatmulInt8Tensorization``: wmma ``m16n16k16`` s8, 128x128 tiles padded as needed), whatever
  its shape. The whole model then runs as one captured CUDA graph
  (``relax.backend.use_cuda_graph``), so the host launches it once per inference.

TVM 0.27 notes learned here: ``MatmulInt8Tensorization`` annotates its K loops for software
pipelining, and ``InjectSoftwarePipeline`` then fails on the wmma fragments ("Check failed:
(it != fragment_info_.end())" in ``GetWmmaFragmentSize``): ``TensorCoreInt8`` removes those
annotations. It also asserts, rather than declines, on functions that are no matmul, so
``TensorCoreInt8`` makes dlight's own checks first. Importing ``tvm.s_tir.tensor_intrin.cuda``
(the ~500 wmma/mma/dp4a intrinsics) takes over a minute through ``inspect.stack``:
``load_tensor_intrinsics``. A CUDA module prints its source with ``inspect_source("cuda")``
(other formats give empty strings) and cannot ``write_to_file``; ``qbuild.cuda_code`` makes the
PTX and SASS. Building for ``sm_XX`` needs no GPU: without one TVM does not compile the CUDA
source while building (with one it does, through NVRTC).
"""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager

import tvm
from tvm import relax, tirx
from tvm.s_tir import dlight as dl

from qbuild.kernels import split_k
from qbuild.kernels.fusion import widen_in_consumers
from qbuild.kernels.schedule import KernelReport

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
            frames.append(inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno,
                                            frame.f_code.co_name, None, None))
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
        from tvm import s_tir
        from tvm.s_tir.dlight.gpu import matmul

        if not isinstance(func, tirx.PrimFunc) or matmul.check_sm_version(str(target.attrs.get("arch", ""))) < 72:
            return None
        probe = s_tir.Schedule(func)  # the checks dlight's Matmul makes before it tensorizes
        reductions = matmul.get_reduction_blocks(probe, probe.get_child_blocks(probe.get_sblock("root")))
        if reductions is None or matmul.get_index_map(probe.get(reductions[0])) is None:
            return None
        if tuple(matmul.get_in_out_dtypes(probe.get(reductions[0]))) != ("int8", "int32"):
            return None
        sch = matmul.MatmulInt8Tensorization().apply(func, target, tunable)
        if sch is None:
            return None
        for block in _blocks(sch, sch.get_sblock("root")):
            for loop in sch.get_loops(block):
                for key in ("software_pipeline_stage", "software_pipeline_order"):
                    if key in sch.get(loop).annotations:
                        sch.unannotate(loop, key)
        return sch


def _blocks(sch, parent):
    for child in sch.get_child_blocks(parent):
        yield child
        yield from _blocks(sch, child)


class _Counted(dl.ScheduleRule):
    """A dlight rule that counts the functions it scheduled in a ``KernelReport``."""

    def __init__(self, name: str, rule: dl.ScheduleRule, report: KernelReport) -> None:
        self.name, self.rule, self.report = name, rule, report

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, tunable: bool):
        sch = self.rule.apply(func, target, tunable)
        if sch is not None:
            self.report.counts[self.name] += 1
        return sch


def graph_rewrites(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """What the builtin pipeline does to the Relax graph before legalizing it. ``target`` only
    sizes the splits: the rewritten graph runs anywhere (tests run it on the CPU)."""
    from qbuild.kernels.pipeline import integer_rewrites

    return [*integer_rewrites(), split_k.split_k_convs(target)]


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
    rules = [("tensorcore_int8", TensorCoreInt8()), ("matmul", dl.gpu.Matmul()), ("gemv", dl.gpu.GEMV()),
             ("reduction", dl.gpu.Reduction()), ("general_reduction", dl.gpu.GeneralReduction()),
             ("fallback", dl.gpu.Fallback())]
    passes = [
        *fusion_passes(target),
        dl.ApplyDefaultSchedule(*(_Counted(name, rule, report) for name, rule in rules)),
        *cuda.dataflow_lower_passes(target),
        *cuda.finalize_passes(target),
    ]
    return tvm.transform.Sequential(passes, name="qbuild.builtin_cuda"), report
