"""Squeeze axes counted from the front (``squeeze_positive_axes``)."""

from __future__ import annotations

import tvm
from tvm import relax

from qbuild.relax.rewrite_calls import rewrite_calls


def squeeze_positive_axes() -> tvm.transform.Pass:
    """squeeze(x, axis=[-k]) -> squeeze(x, axis=[rank - k]): the same op, the axes counted from
    the front. TVM 0.27's ``ConvertLayout`` ends in ``std::bad_alloc`` on a squeeze with a negative
    axis, even where it converts nothing (torch's multi-head attention exports one)."""

    def rewrite(_bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
        axes = call.attrs.axis
        if axes is None or all(int(a) >= 0 for a in axes):
            return None
        rank = len(call.args[0].ty.shape)
        return relax.op.squeeze(call.args[0], [int(a) % rank for a in axes])

    return rewrite_calls("qbuild.SqueezePositiveAxes", "relax.squeeze", rewrite)
