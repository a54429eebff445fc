"""Matmuls with constant weights as one-pixel convs (``dense_as_conv``)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from qbuild.relax.rewrite_calls import rewrite_calls

# A dense layer's rows, as its conv's pixels, are padded to a multiple of this (zero rows, sliced off
# after): the default register tiles take 4 pixels (``qbuild.kernels.tiles.default_tile``); a prime
# count of tokens would otherwise leave only one-pixel tiles.
ROW_MULTIPLE = 4


def dense_as_conv() -> tvm.transform.Pass:
    """matmul(x, W) with constant weights W (K x N) and x (rows x K) -> a 1x1 conv of K input
    channels: the conv's blocked layout packs W at compile time so that each output block streams
    its weights from memory in order, and an int8 matmul gets the integer conv's kernels. One row
    is an image of one pixel; several rows (a transformer's tokens) are the pixels of one image
    row, padded to ``ROW_MULTIPLE``, so that the conv's register tile spans rows."""

    def rewrite(_bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
        x, weights = call.args
        if not isinstance(weights, tvm.ir.expr.GenericConst) or len(weights.ty.shape) != 2 or len(x.ty.shape) != 2:
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
