"""Kernel generation: which code the compiler emits for each operator. This doc covers the
CPU; on a CUDA target the same two names pick TVM's default GPU pipeline or qbuild's (``cuda``:
int8 tensor cores, split-K, one CUDA graph).

Three kernel sets, chosen per experiment (``KERNEL_SETS``):

- ``untuned``: TVM 0.27's default Relax pipeline for LLVM. It legalizes every operator to TOPI's
  generic compute and applies no schedule: single-threaded, scalar loops (the study's setting).
- ``builtin``: qbuild's own pipeline: dense layers with constant weights as one-pixel convs
  (``qbuild.relax.dense_as_conv``), conv2d moved to blocked channel layouts (``conv2d``),
  integer convs on the CPU's widest integer dot (``intrin``: ``vpdpbusd``, ``vpmaddubsw`` or
  ``vpmaddwd``; ``amx``: AMX tiles), integer rescaling in int32 where it fits (``qbuild.relax.narrow``),
  widening casts fused into the kernels that read them (``qbuild.relax.fusion``), and a
  schedule for every fused function (``schedule``), all without tuning. Sub-byte convs that run
  bit-serially (``subbyte_convs`` chooses them for the target; ``bitserial``: AND + popcount over
  packed bit planes) are scheduled by the same conv rule.
  Everything else (fusion, memory planning, VM lowering) is
  TVM's default CPU pipeline, reused pass for pass.
- ``tuned`` (CPU only): ``builtin`` with each conv's register tile taken from this machine's
  tuning database (``qbuild.tuning_db``, written by ``qbuild tune``: ``qbuild.tune``).

``qbuild.kernels.pipeline.pipeline`` returns the Relax pipeline for
``tvm.compile(..., relax_pipeline=...)`` and the ``KernelReport`` it fills in while compiling.
This module itself imports no TVM, so plans and summaries can name kernel sets cheaply.

TVM 0.27 notes learned here: ``ConvertLayout`` has no layout rule for ``clip`` (hence
``clip_to_min_max``) nor ``nn.pad`` (a transform back to NCHW around each); it fails on a ``3c``
data layout and on a residual add whose operands were blocked differently (16c vs 8c), so every
tensor uses one block per channel count, except where AMX convs hand each other 64-channel
blocks (``layouts``: it also fails to re-block 16c to 64c itself); and it fails on a conv2d
that is already written in a blocked layout (build such a conv through ``conv2d.legalize``
directly, as ``qbuild.subbyte`` does). ``tirx.popcount`` on a uint32 vector becomes LLVM's
``ctpop``, which AVX2 lowers to byte shuffles (no VPOPCNTDQ). The VM's ``profile=`` argument is
gone; per-function times come from ``VirtualMachine.set_instrument``.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm

KERNEL_SETS = ("builtin", "tuned", "untuned")

# "auto" (QConfig.subbyte_kernel) runs a conv bit-serially when it has at most this many
# (activation plane, weight plane) pairs, and as the byte conv on the narrow values otherwise
# (``subbyte_convs``; the side-by-side timings behind it: ``nox -s subbyte`` and the report).
MAX_AUTO_PAIRS = 2


def auto_bitserial_pairs(target: "tvm.target.Target | None" = None) -> int:
    """The most plane pairs a conv may have for "auto" to run it bit-serially on ``target`` (None:
    a CPU without AMX): ``MAX_AUTO_PAIRS``, or 0 where the int8 conv runs on AMX tiles (there the
    byte conv is the faster of the two on every shape)."""
    if target is not None and target.kind.name == "llvm":
        from qbuild.kernels import amx

        if set(amx.MATTR) <= {str(feature) for feature in target.attrs.get("mattr", [])}:
            return 0
    return MAX_AUTO_PAIRS
