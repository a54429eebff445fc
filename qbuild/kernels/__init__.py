"""Kernel generation for the CPU: which code the compiler emits for each operator.

Two kernel sets, chosen per experiment (``KERNEL_SETS``):

- ``untuned``: TVM 0.27's default Relax pipeline for LLVM. It legalizes every operator to TOPI's
  generic compute and applies no schedule: single-threaded, scalar loops (the study's setting).
- ``builtin``: qbuild's own pipeline: conv2d moved to blocked channel layouts (``conv2d``),
  integer convs on ``vpmaddwd`` (``intrin``), and a schedule for every fused function
  (``schedule``), all without tuning. Everything else (fusion, memory planning, VM lowering) is
  TVM's default CPU pipeline, reused pass for pass.

``qbuild.kernels.pipeline.pipeline`` returns the Relax pipeline for
``tvm.compile(..., relax_pipeline=...)`` and the ``KernelReport`` it fills in while compiling.
This module itself imports no TVM, so plans and summaries can name kernel sets cheaply.

TVM 0.27 notes learned here: ``ConvertLayout`` has no layout rule for ``clip`` (hence
``clip_to_min_max``) nor ``nn.pad`` (a transform back to NCHW around each); it fails on a ``3c``
data layout and on a residual add whose operands were blocked differently (16c vs 8c), so every
tensor uses one block per channel count. The VM's ``profile=`` argument is gone; per-function
times come from ``VirtualMachine.set_instrument``.
"""

KERNEL_SETS = ("builtin", "untuned")
