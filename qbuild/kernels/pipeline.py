"""The Relax pipelines behind each kernel set (see ``qbuild.kernels``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax

from qbuild.errors import QbuildError
from qbuild.kernels import KERNEL_SETS
from qbuild.kernels.fold_constants import fold_constant_calls
from qbuild.kernels.rewrite_calls import rewrite_calls
from qbuild.kernels.schedule import KernelReport
from qbuild.kernels.tiles import ConvTile
from qbuild.kernels.vectors import Vectors, cpu_features
from qbuild.quantize.graph import scalar_value


def pass_config(kernels: str | None, target: tvm.target.Target) -> dict:
    """The PassContext options ``kernels`` compiles under: qbuild's CUDA kernels run the model as
    one CUDA graph."""
    from qbuild.kernels.cuda import CUDA_GRAPH_CONFIG

    return dict(CUDA_GRAPH_CONFIG) if kernels == "builtin" and target.kind.name == "cuda" else {}


def pipeline(kernels: str | None, target: tvm.target.Target, avx2: bool | None = None,
             tiles: Mapping[str, ConvTile] | None = None,
             vnni: bool | None = None) -> tuple[tvm.transform.Pass | str, KernelReport]:
    """The Relax pipeline for ``kernels`` on ``target`` (a CPU, or CUDA: ``qbuild.kernels.cuda``),
    and the report it fills in; "untuned" and None give TVM's default pipeline for the target,
    "tuned" the builtin one with this machine's tuning database (``qbuild.tuning_db``).
    Overrides of what a CPU target says, for tests: ``avx2=False`` gives the integer conv's
    plain-vector fallback, as on a CPU without AVX2; ``vnni=True`` the VNNI compute (unsigned
    activations, channel quads) even without VNNI (it then runs as plain vector code).
    ``tiles`` gives conv tiles by workload key directly."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from qbuild.kernels import cuda, schedule, vectors

    report = KernelReport()
    if kernels is not None and kernels not in KERNEL_SETS:
        raise QbuildError(f"unknown kernel set {kernels!r}", f"use one of {', '.join(KERNEL_SETS)}")
    if target.kind.name == "cuda":
        if kernels == "tuned":
            raise QbuildError("the tuned kernel set exists for CPU targets only", "use --kernels builtin on CUDA")
        cuda.load_tensor_intrinsics()  # both pipelines' matmul rules use them
    if kernels in ("untuned", None):
        return "default", report
    if target.kind.name == "cuda":
        return cuda.builtin_pipeline(target)
    if kernels == "tuned":
        tiles = _machine_database(report)
    features = set(cpu_features(target))
    if avx2 is not None:  # a CPU without AVX2 has none of the others (AVX-512, VNNI, AMX) either
        features = (features | {"avx2"}) if avx2 else set()
    passes = [
        *lowering_passes(vectors.of_features(frozenset(features)).with_vnni(vnni)),
        schedule.schedule_pass(frozenset(features), report, tiles),
        *cpu.dataflow_lower_passes(target),
        *cpu.finalize_passes(target),
    ]
    return tvm.transform.Sequential(passes, name=f"qbuild.{kernels}"), report


def lowering_passes(registers: Vectors) -> list[tvm.transform.Pass]:
    """The builtin CPU pipeline up to scheduling for a CPU with ``registers``: blocked layouts of
    its width, qbuild's computes (``registers.vnni``: the integer convs' VNNI form), fused PrimFuncs
    (what ``qbuild.tune`` takes the conv workloads from)."""
    from qbuild.kernels import conv2d
    from qbuild.kernels.fusion import widen_in_consumers

    return [
        dense_as_conv(),
        *integer_rewrites(),
        fold_pads_into_convs(),
        squeeze_positive_axes(),
        relax.transform.ConvertLayout({}, functools.partial(conv2d.desired_layout, vectors=registers)),
        legalize_convs(registers),
        relax.transform.AnnotateTIROpPattern(),
        fold_constant_calls(),
        relax.transform.FoldConstant(),
        widen_in_consumers(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def integer_rewrites() -> list[tvm.transform.Pass]:
    """The graph rewrites every builtin pipeline (CPU and CUDA) starts with: integer rescaling in
    int32 where it provably fits (``narrow``; clips become the min/max it narrows).

    Not among them: ``EliminateCommonSubexpr``. It removed the second quantize of ResNet-50's
    max-pool output (which the quantizer no longer emits: ``Rewriter.as_input``), but in a
    calibrated build it also merged the int8 -> int64 casts with which a block's two consumers
    (the next conv's requantize, the next residual's) started; FuseOps then fused the one cast
    into the producing kernel, whose output became int64: twelve block outputs of ResNet-50
    written and read at 8 bytes a value, not 1."""
    from qbuild.kernels.narrow import narrow_integers

    return [clip_to_min_max(), narrow_integers()]


def legalize_convs(registers: Vectors) -> tvm.transform.Pass:
    """``LegalizeOps`` with qbuild's conv computes (``conv2d.legalize``), told which int8 conv
    inputs are known to lie in [0, 127] and how far (``ranges``: their convs may multiply bytes on
    AVX2), and the weight sums of constant conv weights (which bound the convs' partial sums)."""
    from qbuild.kernels import conv2d, ranges

    @tvm.transform.module_pass(opt_level=0, name="qbuild.LegalizeConvs")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        seven_bit, weight_sums = ranges.seven_bit_values(mod), ranges.conv_weight_sums(mod)
        legalize = functools.partial(conv2d.legalize, vectors=registers, data_max=seven_bit.get,
                                     weight_sum=weight_sums.get)
        return relax.transform.LegalizeOps(customize_legalize_map={"relax.nn.conv2d": legalize})(mod)

    return _apply


def _machine_database(report: KernelReport) -> dict[str, ConvTile]:
    """This machine's tuning database's tiles; what it is goes into ``report.tuning``."""
    from qbuild import tuning_db

    path = tuning_db.machine_path()
    database = tuning_db.load(path)
    report.tuning = {"database": path.name, "digest": tuning_db.digest(path), "workloads": len(database.records),
                     "trials": database.trials, "rounds": database.rounds}
    return database.tiles()


def fold_pads_into_convs() -> tvm.transform.Pass:
    """conv2d(pad(x), w) -> conv2d(x, w) with the padding added, where ``conv2d.fold_zero_pad``
    allows (a pad that other ops also read stays for them)."""
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    from qbuild.kernels import conv2d

    pad = is_op("relax.nn.pad")(wildcard())
    conv = is_op("relax.nn.conv2d")(pad, wildcard())

    def rewrite(expr: relax.Expr, matches) -> relax.Expr:
        folded = conv2d.fold_zero_pad(matches[conv], matches[pad])
        return expr if folded is None else folded

    @tvm.transform.module_pass(opt_level=0, name="qbuild.FoldPadsIntoConvs")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = mod.clone()  # a Python module pass receives the caller's module itself
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gvar] = rewrite_call(conv, rewrite, func)
        return mod

    return _apply


# A dense layer's rows, as its conv's pixels, are padded to a multiple of this (zero rows, sliced off
# after): the default register tiles take 4 pixels (``tiles.default_tile``); ViT-B/16's 197 tokens, a
# prime, left only one-pixel tiles.
ROW_MULTIPLE = 4


def dense_as_conv() -> tvm.transform.Pass:
    """matmul(x, W) with constant weights W (K x N) and x (rows x K) -> a 1x1 conv of K input
    channels: the conv's blocked layout packs W at compile time so that each output block streams
    its weights from memory in order, and an int8 matmul gets the integer conv's kernels (VNNI,
    AMX). ResNet-50's fp32 classifier (2048 x 1000, 8 MB of weights) read them 4000 bytes apart, a
    few floats from each cache line: 0.56 -> 0.41 ms per inference on the 2-core Xeon (``qbuild
    profile``). One row is an image of one pixel; several rows (a transformer's tokens) are the
    pixels of one image row, padded to ``ROW_MULTIPLE``, so that the conv's register tile spans
    rows (as images of one pixel each, a tile held one accumulator). ``qbuild profile``, float,
    per inference: ViT-B/32 284 -> 73 ms, ViT-B/16 (197 tokens) 777 -> 277 ms."""

    def rewrite(_bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
        x, weights = call.args
        if not isinstance(weights, tvm.ir.expr.GenericConst) or len(weights.ty.shape) != 2 or \
                len(x.ty.shape) != 2:
            return None
        matrix = weights.value.numpy()
        depth, width = matrix.shape
        rows = x.ty.shape[0]
        kernel = relax.const(np.ascontiguousarray(matrix.T).reshape(width, depth, 1, 1))
        out_dtype = str(call.ty.dtype)
        if not isinstance(rows, tvm.tirx.IntImm) or int(rows) == 1:
            conv = relax.op.nn.conv2d(relax.op.reshape(x, (rows, depth, 1, 1)), kernel, out_dtype=out_dtype)
            return relax.op.reshape(conv, (rows, width))
        rows = int(rows)
        padded = -(-rows // ROW_MULTIPLE) * ROW_MULTIPLE
        columns = relax.op.permute_dims(x, [1, 0])
        if padded != rows:
            columns = relax.op.nn.pad(columns, [0, 0, 0, padded - rows])
        conv = relax.op.nn.conv2d(relax.op.reshape(columns, (1, depth, 1, padded)), kernel, out_dtype=out_dtype)
        out = relax.op.reshape(conv, (width, padded))
        if padded != rows:
            out = relax.op.strided_slice(out, axes=[1], begin=[0], end=[rows])
        return relax.op.permute_dims(out, [1, 0])

    return rewrite_calls("qbuild.DenseAsConv", "relax.matmul", rewrite)


def clip_to_min_max() -> tvm.transform.Pass:
    """clip(x, lo, hi) -> minimum(maximum(x, lo), hi): the same values, but through ops that
    ``ConvertLayout`` knows how to keep in a blocked layout (it has no rule for clip, and would
    convert back to NCHW around every ReLU6 and requantize)."""

    def rewrite(_bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        x, low, high = call.args
        dtype = str(x.ty.dtype)
        lo = relax.const(np.array(scalar_value(low)).astype(dtype), dtype)
        hi = relax.const(np.array(scalar_value(high)).astype(dtype), dtype)
        return relax.op.minimum(relax.op.maximum(x, lo), hi)

    return rewrite_calls("qbuild.ClipToMinMax", "relax.clip", rewrite)


def squeeze_positive_axes() -> tvm.transform.Pass:
    """squeeze(x, axis=[-k]) -> squeeze(x, axis=[rank - k]): the same op, the axes counted from
    the front. TVM 0.27's ``ConvertLayout`` ends in ``std::bad_alloc`` on a squeeze with a negative
    axis, even where it converts nothing (torch's multi-head attention exports one: every ViT)."""

    def rewrite(_bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
        axes = call.attrs.axis
        if axes is None or all(int(a) >= 0 for a in axes):
            return None
        rank = len(call.args[0].ty.shape)
        return relax.op.squeeze(call.args[0], [int(a) % rank for a in axes])

    return rewrite_calls("qbuild.SqueezePositiveAxes", "relax.squeeze", rewrite)
