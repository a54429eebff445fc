"""Kernel generation: which code the compiler emits for each operator. This doc covers the
CPU; on a CUDA target the same two names pick TVM's default GPU pipeline or qbuild's (``cuda``:
int8 tensor cores, split-K, one CUDA graph).

Three kernel sets, chosen per experiment (``KERNEL_SETS``):

- ``untuned``: TVM 0.27's default Relax pipeline for LLVM. It legalizes every operator to TOPI's
  generic compute and applies no schedule: single-threaded, scalar loops (the study's setting).
- ``builtin``: qbuild's own pipeline: dense layers with constant weights as one-pixel convs
  (``pipeline.dense_as_conv``), conv2d moved to blocked channel layouts (``conv2d``),
  integer convs on the CPU's widest integer dot (``intrin``: ``vpdpbusd``, ``vpmaddubsw`` or
  ``vpmaddwd``; ``amx``: AMX tiles), integer rescaling in int32 where it fits (``narrow``),
  widening casts fused into the kernels that read them (``fusion``), and a
  schedule for every fused function (``schedule``), all without tuning. Sub-byte convs that the quantizer emits bit-serially
  (``bitserial``: AND + popcount over packed bit planes) are scheduled by the same conv rule.
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
tensor uses one block per channel count; and it fails on a conv2d that is already written in a
blocked layout (build such a conv through ``conv2d.legalize`` directly, as ``qbuild.subbyte``
does). ``tirx.popcount`` on a uint32 vector becomes LLVM's ``ctpop``, which AVX2 lowers to byte
shuffles (no VPOPCNTDQ). The VM's ``profile=`` argument is gone; per-function times come from
``VirtualMachine.set_instrument``.
"""

KERNEL_SETS = ("builtin", "tuned", "untuned")

# "auto" (QConfig.subbyte_kernel) runs a conv bit-serially when it has at most this many
# (activation plane, weight plane) pairs, and as the byte conv on the narrow values otherwise.
# Measured on an AVX2 CPU (no vector popcount instruction: LLVM builds one from byte
# shuffles), ResNet-50's conv shapes side by side with the int8 conv as it runs in a quantized
# network (`nox -s subbyte`; the byte compute, all on 2 threads): bit-serial with 1 pair (W1A1)
# takes 0.49-0.78x the int8 time, 4 pairs (W2A2) 1.7-2.1x, 16 pairs (W4A4) 6.8-8.3x; the byte
# conv on W1A1's values 0.53-0.93x, on W2A2's 0.58-0.93x (int16 sums), on W4A4's 0.65-1.01x
# (int16 sums where random 4-bit weights allow). On an H100, ResNet-50 W1A1 (bit-serial) ran in
# half W8A8's time.
MAX_AUTO_PAIRS = 2


def auto_bitserial_pairs(target=None) -> int:
    """The most plane pairs a conv may have for "auto" to run it bit-serially on ``target`` (a
    ``tvm.target.Target``; None: a CPU without AMX): ``MAX_AUTO_PAIRS``, or 0 where the int8 conv
    runs on AMX tiles. On the 2-core AMX Xeon, side by side (`nox -s subbyte`), bit-serial W1A1
    took 1.2-2.6x the AMX int8 conv on every ResNet-50 shape and the byte conv on W1A1's values
    0.91-1.12x; in the sweep ResNet-50 W1A1 ran in 16.5 ms bit-serially against W8A8's 8.9."""
    if target is not None and target.kind.name == "llvm":
        from qbuild.kernels import amx

        if set(amx.MATTR) <= {str(feature) for feature in target.attrs.get("mattr", [])}:
            return 0
    return MAX_AUTO_PAIRS
