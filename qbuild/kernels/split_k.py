"""Split-K for int8 convolutions on a GPU: enough thread blocks for small, deep layers.

At batch 1 an int8 conv is a matmul of (output channels) x (output pixels) over a reduction of
``C*KH*KW``, and the tensor-core schedule (``cuda.TensorCoreInt8``) gives each 128 x 128 output
tile one thread block. ResNet-50's late layers have few tiles (a 3x3 conv on 7x7 pixels with 512
channels: 4 blocks for an H200's 132 SMs) and a long reduction each block walks alone. Measured
on an H200, such a conv took 12x cuDNN's fp16 time while a 1x1 conv with 25 blocks beat it.

``split_k_convs`` rewrites such a conv as: the input windows gathered into columns (``im2col``;
a 1x1 stride-1 conv needs none), the reduction cut into ``S`` chunks of whole input channels, one
batched int8 matmul over the chunks (the schedule binds the batch to ``blockIdx.z``: ``S`` times
the blocks) and a sum of the ``S`` int32 partial results. Integer addition is exact and every
partial sum fits in int32 as the whole does, so the result is the conv's, bit for bit.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, te, tirx

from qbuild.kernels.rewrite_calls import rewrite_calls

TILE = 128  # output rows and columns of one tensor-core thread block (dlight's int8 tensorization)
TARGET_BLOCKS = 132  # thread blocks worth having: one per SM of an H100/H200
MIN_CHUNK = 256  # reduction length each split keeps at least (shorter chunks cost more in partial sums)
GATHER = "qbuild_im2col"


def splits(out_channels: int, pixels: int, reduction: int, channels: int) -> int:
    """How many chunks to cut a conv's reduction into: doubling while the blocks fall short of
    ``TARGET_BLOCKS``, each chunk keeps ``MIN_CHUNK`` and whole input channels."""
    blocks = math.ceil(out_channels / TILE) * math.ceil(pixels / TILE)
    count = 1
    while (blocks * count < TARGET_BLOCKS and reduction // (2 * count) >= MIN_CHUNK
           and channels % (2 * count) == 0):
        count *= 2
    return count


def im2col(data: te.Tensor, kernel: tuple[int, int], strides: tuple[int, int], padding: tuple[int, ...],
           dilation: tuple[int, int]) -> te.Tensor:
    """NCHW data -> (N, C*KH*KW, OH*OW): column ``p`` holds the input window of output pixel ``p``
    (zeros where it overhangs the border), rows in the order of OIHW weights."""
    _batch, channels, height, width = (int(d) for d in data.shape)
    kh, kw = kernel
    top, left, bottom, right = padding
    out_h = (height + top + bottom - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    out_w = (width + left + right - (kw - 1) * dilation[1] - 1) // strides[1] + 1

    def gather(n, k, p):
        c, r = k // (kh * kw), k % (kh * kw)
        y = (p // out_w) * strides[0] + (r // kw) * dilation[0] - top
        x = (p % out_w) * strides[1] + (r % kw) * dilation[1] - left
        inside = tirx.all(y >= 0, y < height, x >= 0, x < width)
        return tirx.if_then_else(inside, data[n, c, y, x], tirx.const(0, data.dtype))

    return te.compute((data.shape[0], channels * kh * kw, out_h * out_w), gather, name=GATHER)


def _split(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
    """An int8 conv as gather + chunked batched matmul + sum, or None where splitting does not pay."""
    attrs = call.attrs
    data, weight = call.args
    if (data.ty.dtype != "int8" or weight.ty.dtype != "int8" or attrs.out_dtype != "int32" or attrs.groups != 1
            or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or attrs.out_layout not in ("", "NCHW")):
        return None
    batch, channels, height, width = (int(d) for d in data.ty.shape)
    out_channels, _, kh, kw = (int(d) for d in weight.ty.shape)
    out_shape = [int(d) for d in call.ty.shape]
    pixels = out_shape[2] * out_shape[3]
    reduction = channels * kh * kw
    count = splits(out_channels, pixels, reduction, channels)
    if count == 1:
        return None
    strides = tuple(int(s) for s in attrs.strides)
    padding = tuple(int(p) for p in attrs.padding)
    dilation = tuple(int(d) for d in attrs.dilation)
    if (kh, kw, *strides, *padding) == (1, 1, 1, 1, 0, 0, 0, 0):
        columns = relax.op.reshape(data, (batch, channels, height * width))
    else:
        columns = bb.emit_te(im2col, data, (kh, kw), strides, padding, dilation, primfunc_name_hint=GATHER)
    chunk = reduction // count
    columns = relax.op.reshape(columns, (batch, count, chunk, pixels))
    chunks = relax.op.permute_dims(relax.op.reshape(weight, (out_channels, count, chunk)), [1, 0, 2])
    partial = bb.normalize(relax.op.matmul(chunks, columns, out_dtype="int32"))  # (N, S, O, P)
    return relax.op.reshape(relax.op.sum(partial, axis=[1]), out_shape)


def split_k_convs() -> tvm.transform.Pass:
    """Rewrite each int8 conv2d that has too few tensor-core blocks (see the module doc)."""
    return rewrite_calls("qbuild.SplitKConvs", "relax.nn.conv2d", _split)
