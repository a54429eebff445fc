"""The Relax pipelines behind each kernel set (see ``qbuild.kernels``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import tvm
from tvm import relax

from qbuild.errors import QbuildError
from qbuild.kernels import KERNEL_SETS
from qbuild.kernels.schedule import KernelReport
from qbuild.kernels.tiles import ConvTile
from qbuild.kernels.vectors import Vectors, cpu_features
from qbuild.relax.dense_as_conv import dense_as_conv
from qbuild.relax.fold_constants import fold_constant_calls
from qbuild.relax.fold_pads import fold_pads_into_convs
from qbuild.relax.fusion import widen_in_consumers
from qbuild.relax.integer_rewrites import integer_rewrites
from qbuild.relax.squeeze import squeeze_positive_axes


def pass_config(kernels: str | None, target: tvm.target.Target) -> dict:
    """The PassContext options ``kernels`` compiles under: qbuild's CUDA kernels run the model as
    one CUDA graph."""
    from qbuild.kernels.cuda import CUDA_GRAPH_CONFIG

    return dict(CUDA_GRAPH_CONFIG) if kernels == "builtin" and target.kind.name == "cuda" else {}


def llvm_options(kernels: str | None, target: tvm.target.Target) -> list[str]:
    """The LLVM options qbuild's kernels ``kernels`` compile under on ``target`` (``codegen_target``):
    on an x86 CPU with AVX2's 16 vector registers, LLVM's machine combiner off. It turns a register
    tile's chains of integer adds into trees, which shortens each chain but holds more
    temporaries than the 16 registers have room for beside the tile (the byte convs spilled).
    ResNet-50 int8 on an AMD EPYC with AVX2, side by side: 0.96-0.98x the time with it off."""
    if kernels not in ("builtin", "tuned") or target.kind.name != "llvm":
        return []
    features = cpu_features(target)
    return ["-x86-machine-combiner=false"] if "avx2" in features and "avx512f" not in features else []


def codegen_target(kernels: str | None, target: tvm.target.Target) -> tvm.target.Target:
    """``target`` with ``llvm_options(kernels, target)`` added to its ``cl-opt``; an option the
    target already sets (by name, whatever its value) stays as the target has it."""
    spec = dict(target.export())
    given = list(spec.get("cl-opt", []))
    named = {option.split("=")[0] for option in given}
    options = [option for option in llvm_options(kernels, target) if option.split("=")[0] not in named]
    return tvm.target.Target({**spec, "cl-opt": given + options}) if options else target


def pipeline(
    kernels: str | None,
    target: tvm.target.Target,
    avx2: bool | None = None,
    tiles: Mapping[str, ConvTile] | None = None,
    vnni: bool | None = None,
) -> tuple[tvm.transform.Pass | str, KernelReport]:
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


def vector_rounding() -> None:
    """Mark ``nearbyint`` (round half to even, what ``relax.op.round`` lowers to) vectorizable, as
    ``floor`` and ``round`` are: TVM 0.27 does not, so its VectorizeLoop scalarizes a loop that
    rounds, and LLVM then vectorizes the scalar code across the wrong axis (gathers, stores one
    byte at a time: an imported model's float32 requantize epilogues). LLVM lowers the vector
    call to one instruction (``vrndscaleps``, ``vroundps``, ``frinti``). Process-wide: done once
    when this module is imported, so that every build of the process, TVM's default pipeline's
    too, vectorizes the same way."""
    if not tvm.ir.Op.get("tirx.nearbyint").get_attr("TVectorizable"):
        tvm.ir.register_op_attr("tirx.nearbyint", "TVectorizable", True)


vector_rounding()


def lowering_passes(registers: Vectors) -> list[tvm.transform.Pass]:
    """The builtin CPU pipeline up to scheduling for a CPU with ``registers``: blocked layouts of
    its width, qbuild's computes (``registers.vnni``: the integer convs' VNNI form), fused PrimFuncs
    (what ``qbuild.tune`` takes the conv workloads from)."""
    from qbuild.kernels.layouts import convert_layouts

    return [
        dense_as_conv(),
        *integer_rewrites(),
        fold_pads_into_convs(),
        squeeze_positive_axes(),
        convert_layouts(registers),
        legalize_convs(registers),
        relax.transform.AnnotateTIROpPattern(),
        fold_constant_calls(),
        relax.transform.FoldConstant(),
        widen_in_consumers(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def legalize_convs(registers: Vectors) -> tvm.transform.Pass:
    """``LegalizeOps`` with qbuild's conv computes (``conv2d.legalize``), told which int8 conv
    inputs are known to lie in [0, 127] and how far (``qbuild.relax.ranges``: their convs may multiply bytes on
    AVX2), and the weight sums of constant conv weights (which bound the convs' partial sums)."""
    from qbuild.kernels import conv2d
    from qbuild.relax import ranges

    @tvm.transform.module_pass(opt_level=0, name="qbuild.LegalizeConvs")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        seven_bit, weight_sums = ranges.seven_bit_values(mod), ranges.conv_weight_sums(mod)
        legalize = functools.partial(
            conv2d.legalize, vectors=registers, data_max=seven_bit.get, weight_sum=weight_sums.get
        )
        return relax.transform.LegalizeOps(customize_legalize_map={"relax.nn.conv2d": legalize})(mod)

    return _apply


def _machine_database(report: KernelReport) -> dict[str, ConvTile]:
    """This machine's tuning database's tiles; what it is goes into ``report.tuning``."""
    from qbuild import tuning_db

    path = tuning_db.machine_path()
    database = tuning_db.load(path)
    report.tuning = {
        "database": path.name,
        "digest": tuning_db.digest(path),
        "workloads": len(database.records),
        "trials": database.trials,
        "rounds": database.rounds,
    }
    return database.tiles()
