"""The graph rewrites every builtin pipeline (CPU and CUDA) starts with (``integer_rewrites``)."""

from __future__ import annotations

import tvm

from qbuild.relax.clip import clip_to_min_max
from qbuild.relax.narrow import narrow_integers


def integer_rewrites() -> list[tvm.transform.Pass]:
    """Integer rescaling in int32 where it provably fits (``narrow``; clips become the min/max it
    narrows).

    Not among them: ``EliminateCommonSubexpr``. In a calibrated build it merged the int8 -> int64
    casts with which a block's two consumers (the next conv's requantize, the next residual's)
    started; FuseOps then fused the one cast into the producing kernel, whose output became int64:
    block outputs written and read at 8 bytes a value, not 1."""
    return [clip_to_min_max(), narrow_integers()]
