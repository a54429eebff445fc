"""Split-K for convolutions on a GPU: enough thread blocks for small, deep layers.

At batch 1 a conv is a matmul of (output channels) x (output pixels) over a reduction of
``C*KH*KW``, and its GPU schedule gives each output tile one thread block: up to 128 x 128 for an
int8 conv on the tensor cores (``wmma_int8``), 32 x 64 for an fp32 conv (dlight's
``Matmul``: TVM 0.27 has no fp32/tf32 tensor-core schedule). ResNet-50's late layers have few
tiles (a 3x3 conv on 7x7 pixels with 512 channels: 4 int8 blocks, 16 fp32 blocks for an H100's
132 SMs) and a long reduction each block walks alone. Measured on an H200, such an int8 conv took
12x cuDNN's fp16 time while a 1x1 conv with 25 blocks beat it; splitting took the int8 ResNet-50
from 3.1-3.3 to 1.2 ms.

``split_k_convs`` rewrites such a conv as: the input windows gathered into columns (``im2col``;
a 1x1 stride-1 conv needs none), the reduction cut into ``S`` chunks of whole input channels, one
batched matmul over the chunks (``S`` times the blocks) and a sum of the ``S`` partial results.
For int8, integer addition is exact and every partial sum fits in int32 as the whole does, so the
result is the conv's, bit for bit; for fp32 the sums are added in another order (rounding
differs in the last bits, as between any two conv algorithms).

The partial sums are added by an injective function (``add_partials``: ``S`` reads per output,
written out) rather than ``relax.op.sum``: FuseOps fuses no ops into a reduction's consumers, so a
``sum`` ran as a kernel of its own and wrote the conv's result for the epilogue kernel to read
again; the injective sum fuses with the epilogue (bias, requantize, residual add, and the next
conv's ``im2col``): one kernel and one round trip through memory fewer per split conv.
"""

from __future__ import annotations

import functools
import math

import tvm
from tvm import relax, te, tirx

from qbuild.kernels import wmma_int8
from qbuild.relax.rewrite_calls import rewrite_calls

Tile = tuple[int, int]  # output channels x output pixels that one thread block computes
TARGET_BLOCKS = 132  # thread blocks worth having: one per SM of an H100/H200
MIN_CHUNK = 256  # reduction length each split keeps at least (shorter chunks cost more in partial sums)
GATHER = "qbuild_im2col"
ADD_PARTIALS = "qbuild_add_partials"
# (data, weight, result) dtypes of the convs split, and the matmul's output dtype
SPLIT_DTYPES = {("int8", "int8", "int32"): "int32", ("float32", "float32", "float32"): "float32"}


def float_tile(target: tvm.target.Target) -> Tile:
    """The output tile of one thread block of dlight's ``Matmul`` rule on ``target`` (it puts the
    weights' output channels on the tile's first axis, the pixels on its second)."""
    from tvm.s_tir import dlight as dl

    config = dl.gpu.Matmul().get_configs(target)
    return (
        config.vthread_x * config.block_size_x * config.micro_size_x,
        config.vthread_y * config.block_size_y * config.micro_size_y,
    )


def int8_tile(out_channels: int, pixels: int) -> Tile:
    """The tile ``wmma_int8`` gives an int8 conv's matmul (its reduction step leaves the blocks be)."""
    tile = wmma_int8.choose_tile(out_channels, pixels, wmma_int8.FRAGMENT)
    return tile.rows, tile.cols


def splits(out_channels: int, pixels: int, reduction: int, channels: int, tile: Tile | None = None) -> int:
    """How many chunks to cut a conv's reduction into: doubling while the blocks (of ``tile``; by
    default an int8 conv's, ``int8_tile``) fall short of ``TARGET_BLOCKS``, each chunk keeps
    ``MIN_CHUNK`` and whole input channels."""
    tile = tile or int8_tile(out_channels, pixels)
    blocks = math.ceil(out_channels / tile[0]) * math.ceil(pixels / tile[1])
    count = 1
    while blocks * count < TARGET_BLOCKS and reduction // (2 * count) >= MIN_CHUNK and channels % (2 * count) == 0:
        count *= 2
    return count


def im2col(
    data: te.Tensor,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    padding: tuple[int, ...],
    dilation: tuple[int, int],
) -> te.Tensor:
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


def add_partials(partial: te.Tensor, out_shape: list[int]) -> te.Tensor:
    """(N, S, O, P) partial results -> their sum over S as an (N, O, OH, OW) conv result."""
    chunks, width = int(partial.shape[1]), out_shape[3]

    def total(n, o, y, x):
        return functools.reduce(
            lambda acc, s: acc + partial[n, s, o, y * width + x], range(1, chunks), partial[n, 0, o, y * width + x]
        )

    return te.compute(out_shape, total, name=ADD_PARTIALS)


def _split(bb: relax.BlockBuilder, call: relax.Call, float_tile: Tile) -> relax.Expr | None:
    """A conv as gather + chunked batched matmul + sum, or None where splitting does not pay."""
    attrs = call.attrs
    data, weight = call.args
    out_dtype = str(call.ty.dtype)
    dtypes = (str(data.ty.dtype), str(weight.ty.dtype), out_dtype)
    if (
        dtypes not in SPLIT_DTYPES
        or attrs.groups != 1
        or attrs.data_layout != "NCHW"
        or attrs.kernel_layout != "OIHW"
        or attrs.out_layout not in ("", "NCHW")
    ):
        return None
    batch, channels, height, width = (int(d) for d in data.ty.shape)
    out_channels, _, kh, kw = (int(d) for d in weight.ty.shape)
    out_shape = [int(d) for d in call.ty.shape]
    pixels = out_shape[2] * out_shape[3]
    reduction = channels * kh * kw
    count = splits(out_channels, pixels, reduction, channels, float_tile if out_dtype == "float32" else None)
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
    partial = bb.emit(relax.op.matmul(chunks, columns, out_dtype=SPLIT_DTYPES[dtypes]))  # (N, S, O, P)
    return bb.call_te(add_partials, partial, out_shape, primfunc_name_hint=ADD_PARTIALS)


def split_k_convs(target: tvm.target.Target) -> tvm.transform.Pass:
    """Rewrite each int8 or fp32 conv2d that has too few thread blocks on ``target`` (see the
    module doc)."""
    return rewrite_calls(
        "qbuild.SplitKConvs", "relax.nn.conv2d", functools.partial(_split, float_tile=float_tile(target))
    )
