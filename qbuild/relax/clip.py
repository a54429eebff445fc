"""clip as minimum/maximum (``clip_to_min_max``)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from qbuild.relax.graph import scalar_value
from qbuild.relax.rewrite_calls import rewrite_calls


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
