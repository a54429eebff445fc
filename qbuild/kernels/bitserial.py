"""The bit-serial convolution: sub-byte conv2d as AND + popcount over packed bit planes.

``out[n, o, y, x] = sum over (activation plane a, weight plane w) of
coef_a * coef_w * popcount(A_a[n, word, y', x'] AND W_w[o, word, kh, kw])`` summed over words and
the kernel window, plus ``offset_w * coef_a * popcount(A_a[...])`` for bipolar weights
(``qbuild.bitpack`` gives the planes, coefficients and offsets). Activations are
unsigned or signed, never bipolar: zero padding must contribute zero. The stages, one PrimFunc:

1. ``qbuild_bitpack``: the int8 input's planes, packed 32 channels to a uint32 word along its
   flat pixels (the input arrives as a (N, C, H * W) view); ``qbuild_bitpack_pad``: for a padded
   conv, those words in zero-padded rows.
2. ``qbuild_conv2d_nchwc``: the popcount sums into an ``(N, O/8, OH, OW, 8)`` int32 block, 8
   output channels to a vector (the same loop structure as the blocked float conv, so the
   ``conv`` schedule rule tiles it: weight vectors are reused across a row of output pixels,
   activation words are broadcast). The plane pairs are unrolled in the expression, each
   coefficient divided by their common factor, so a lone pair (W1A1) adds bare popcounts:
   AND, popcount, add per vector.
3. ``window_offset``: for bipolar weights, the offset term, once per output pixel (it is the
   same for every output channel).
4. ``unpack_output``: back to NCHW int32, times the common factor, written by the conv's
   tiles; ``add_offset``: plus the offset term, a pass of its own (with two inputs, the unpack
   could not be written by the tiles). The requantize epilogue follows.

Weights arrive pre-packed (``bitpack.pack_conv_weights``), so the module stores them at their
bit width: 32 one-bit weights to a word.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tvm import relax, te, tirx

from qbuild.bitpack import WORD_BITS, WORD_DTYPE, Encoding, pack_conv_weights, words
from qbuild.errors import QbuildError
from qbuild.kernels.conv2d import CONV_BLOCK
from qbuild.kernels.vectors import WIDEST_LANES

PACK_BLOCK = "qbuild_bitpack"
LANES = 8  # output channels per block of the popcount sum (its int32 vector: a 256-bit register)


@dataclass(frozen=True)
class BitserialConv:
    """One bit-serial conv2d: operand encodings and the conv's geometry (NCHW / OIHW)."""

    activation: Encoding
    weight: Encoding
    out_channels: int
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right

    def __post_init__(self) -> None:
        if self.activation.kind == "bipolar":
            raise QbuildError(
                "bit-serial activations cannot be bipolar (zero padding has no {-1, +1} code)",
                "quantize activations 'unsigned' (after ReLU) or 'signed'",
            )

    def pack(self, weights: np.ndarray) -> np.ndarray:
        """Integer OIHW weights in this conv's packed layout."""
        return pack_conv_weights(weights, self.weight, LANES)

    def emit(self, bb: relax.BlockBuilder, data: relax.Expr, packed: np.ndarray) -> relax.Expr:
        """The conv of int8 NCHW ``data`` with pre-packed weights, as an int32 NCHW tensor."""
        batch, channels, height, width = (int(d) for d in data.ty.shape)
        flat = bb.emit(relax.op.reshape(data, (batch, channels, height * width)))  # a view: rows end to end
        return bb.emit_te(
            functools.partial(self.compute, size=(height, width)),
            flat,
            relax.const(packed, WORD_DTYPE),
            primfunc_name_hint="conv2d_bitserial",
        )

    def compute(self, data: te.Tensor, packed: te.Tensor, size: tuple[int, int]) -> te.Tensor:
        """TE compute of the stages (module docstring) on ``data`` viewed as (N, C, H * W),
        ``size`` = (H, W)."""
        top, left, bottom, right = self.padding
        height, width = size[0] + top + bottom, size[1] + left + right
        word = _pack_activations(data, self.activation, size, self.padding)
        _, _, kh, kw, _, lanes = (int(d) for d in packed.shape)
        sy, sx = self.strides
        out = (int(data.shape[0]), (height - kh) // sy + 1, (width - kw) // sx + 1)
        scale, blocked = self._popcount_conv(word, packed, out)
        offset = self._offset(word, packed, out)

        def unpack(n, c, y, x):
            value = blocked[n, c // lanes, y, x, c % lanes]
            return value * tirx.const(scale, "int32") if scale != 1 else value

        shape = (out[0], self.out_channels, *out[1:])
        unpacked = te.compute(shape, unpack, name="unpack_output")
        if offset is None:
            return unpacked
        # a stage of its own: the unpack, with one input, folds into the conv's tiles
        return te.compute(shape, lambda n, c, y, x: unpacked[n, c, y, x] + offset[n, y, x], name="add_offset")

    def _window(self, packed: te.Tensor) -> list[tirx.IterVar]:
        _, word_count, kh, kw, _, _ = (int(d) for d in packed.shape)
        return [te.reduce_axis((0, word_count), "c"), te.reduce_axis((0, kh), "r"), te.reduce_axis((0, kw), "q")]

    def _popcount_conv(self, word: Callable, packed: te.Tensor, out: tuple[int, int, int]) -> tuple[int, te.Tensor]:
        """The plane pairs' popcount sums, each pair's coefficient divided by the pairs' common
        factor (returned): a lone pair adds its popcounts unmultiplied."""
        blocks, lanes = int(packed.shape[0]), int(packed.shape[-1])
        c, r, q = self._window(packed)
        sy, sx = self.strides
        pairs = [
            (a, w, ca * cw)
            for a, ca in enumerate(self.activation.coefficients)
            for w, cw in enumerate(self.weight.coefficients)
        ]
        scale = math.gcd(*(abs(k) for _, _, k in pairs))

        def body(n, o, y, x, b):
            terms = [
                _scaled(_popcount(word(n, a, c, y * sy + r, x * sx + q) & packed[o, c, r, q, w, b]), k // scale)
                for a, w, k in pairs
            ]
            return te.sum(sum(terms[1:], terms[0]), axis=[c, r, q])

        return scale, te.compute((out[0], blocks, *out[1:], lanes), body, name=CONV_BLOCK)

    def _offset(self, word: Callable, packed: te.Tensor, out: tuple[int, int, int]) -> te.Tensor | None:
        """Per output pixel, what bipolar weights' offset adds to every channel: the offset times
        the activation's value summed over the window (None without an offset)."""
        if not self.weight.offset:
            return None
        c, r, q = self._window(packed)
        sy, sx = self.strides

        def body(n, y, x):
            terms = [
                _scaled(_popcount(word(n, a, c, y * sy + r, x * sx + q)), self.weight.offset * ca)
                for a, ca in enumerate(self.activation.coefficients)
            ]
            return te.sum(sum(terms[1:], terms[0]), axis=[c, r, q])

        return te.compute(out, body, name="window_offset")


def _scaled(value: tirx.PrimExpr, coefficient: int) -> tirx.PrimExpr:
    return value if coefficient == 1 else value * tirx.const(coefficient, "int32")


def _popcount(word: tirx.PrimExpr) -> tirx.PrimExpr:
    return tirx.popcount(word).astype("int32")


def _pack_activations(
    data: te.Tensor, encoding: Encoding, size: tuple[int, int], padding: tuple[int, int, int, int]
) -> Callable:
    """The activation words of int8 ``data`` viewed as (N, C, H * W): a function ``(n, plane,
    word, y, x)`` -> uint32 of the zero-padded input, bit k of a word being channel 32*word + k.

    The words are packed along the flat pixels, each one expression of 32 loads vectorized along
    them (the pixels rounded up to whole vectors of any CPU's width; the extra words are never
    read). A padded conv then copies them into zero-padded rows of their own, so that the conv's
    reads need no bounds test; an unpadded one reads the flat words where they are."""
    batch, channels, pixels = (int(d) for d in data.shape)
    height, width = size
    top, left, bottom, right = padding
    vectors = -(-pixels // WIDEST_LANES) * WIDEST_LANES

    def word(n, p, w, s):
        def bit(k: int) -> tirx.PrimExpr:
            channel = w * WORD_BITS + k
            value = data[n, tirx.min(channel, channels - 1), tirx.min(s, pixels - 1)].astype("uint8")
            value = tirx.if_then_else(tirx.all(channel < channels, s < pixels), value, tirx.const(0, "uint8"))
            return ((value >> p.astype("uint8")) & tirx.const(1, "uint8")).astype(WORD_DTYPE) << k

        return functools.reduce(lambda acc, k: acc | bit(k), range(1, WORD_BITS), bit(0))

    shape = (batch, len(encoding.coefficients), words(channels), vectors)
    flat = te.compute(shape, word, name=PACK_BLOCK)
    if not any(padding):
        return lambda n, p, w, y, x: flat[n, p, w, y * width + x]

    def pad(n, p, w, y, x):
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        pixel = tirx.max(tirx.min((y - top) * width + x - left, vectors - 1), 0)  # in bounds where not inside
        value = flat[n, p, w, pixel]
        return tirx.if_then_else(inside, value, tirx.const(0, WORD_DTYPE))

    row = -(-(width + left + right) // WIDEST_LANES) * WIDEST_LANES
    padded = te.compute((*shape[:3], height + top + bottom, row), pad, name=PACK_BLOCK + "_pad")
    return lambda n, p, w, y, x: padded[n, p, w, y, x]


def reference(
    data: np.ndarray, weights: np.ndarray, strides: tuple[int, int], padding: tuple[int, int, int, int]
) -> np.ndarray:
    """Exact int64 NCHW/OIHW conv of the integer values themselves: what the bit planes must sum to."""
    from numpy.lib.stride_tricks import sliding_window_view

    top, left, bottom, right = padding
    padded = np.pad(data.astype(np.int64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = sliding_window_view(padded, weights.shape[2:], axis=(2, 3))[:, :, :: strides[0], :: strides[1]]
    return np.einsum("nchwij,ocij->nohw", windows, weights.astype(np.int64))
