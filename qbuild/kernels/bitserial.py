"""The bit-serial convolution: sub-byte conv2d as AND + popcount over packed bit planes.

``out[n, o, y, x] = sum over (activation plane a, weight plane w) of
coef_a * coef_w * popcount(A_a[n, word, y', x'] AND W_w[o, word, kh, kw])`` summed over words and
the kernel window, plus ``offset_w * coef_a * popcount(A_a[...])`` for bipolar weights
(``qbuild.bitpack`` gives the planes, coefficients and offsets). Activations are
unsigned or signed, never bipolar: zero padding must contribute zero. Three stages, one PrimFunc:

1. ``qbuild_bitpack``: the int8 NCHW input's planes, zero-padded in space, packed 32 channels
   to a uint32 word: ``(N, planes, I/32, H + pads, W + pads)``.
2. ``qbuild_conv2d_nchwc``: the popcount sum into an ``(N, O/8, OH, OW, 8)`` int32 block, 8
   output channels to a vector (the same loop structure as the blocked float conv, so the
   ``conv`` schedule rule tiles it: weight vectors are reused across a row of output pixels,
   activation words are broadcast). The plane pairs are unrolled in the expression, so each
   coefficient is a compile-time constant.
3. ``unpack_output``: back to NCHW int32, where the requantize epilogue follows.

Weights arrive pre-packed (``bitpack.pack_conv_weights``), so the module stores them at their
bit width: 32 one-bit weights to a word.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        return bb.emit_te(self.compute, data, relax.const(packed, WORD_DTYPE), primfunc_name_hint="conv2d_bitserial")

    def compute(self, data: te.Tensor, packed: te.Tensor) -> te.Tensor:
        """TE compute of the three stages (module docstring)."""
        planes = _pack_activations(data, self.activation, self.padding)
        _, left, _, right = self.padding
        blocked = self._popcount_conv(planes, packed, int(data.shape[3]) + left + right)
        return te.compute(
            (data.shape[0], self.out_channels, blocked.shape[2], blocked.shape[3]),
            lambda n, c, y, x: blocked[n, c // LANES, y, x, c % LANES],
            name="unpack_output",
        )

    def _popcount_conv(self, planes: te.Tensor, packed: te.Tensor, width: int) -> te.Tensor:
        blocks, word_count, kh, kw, _, lanes = (int(d) for d in packed.shape)
        height = int(planes.shape[3])
        sy, sx = self.strides
        c = te.reduce_axis((0, word_count), "c")
        r = te.reduce_axis((0, kh), "r")
        q = te.reduce_axis((0, kw), "q")
        pairs = [
            (a, w, ca * cw)
            for a, ca in enumerate(self.activation.coefficients)
            for w, cw in enumerate(self.weight.coefficients)
        ]

        def body(n, o, y, x, b):
            word = [planes[n, a, c, y * sy + r, x * sx + q] for a in range(len(self.activation.coefficients))]
            terms = [
                _popcount(word[a] & packed[o, c, r, q, w, b]) * tirx.const(coefficient, "int32")
                for a, w, coefficient in pairs
            ]
            if self.weight.offset:  # shared by all lanes: a scalar popcount, broadcast
                terms += [
                    _popcount(word[a]) * tirx.const(self.weight.offset * ca, "int32")
                    for a, ca in enumerate(self.activation.coefficients)
                ]
            return te.sum(sum(terms[1:], terms[0]), axis=[c, r, q])

        shape = (planes.shape[0], blocks, (height - kh) // sy + 1, (width - kw) // sx + 1, lanes)
        return te.compute(shape, body, name=CONV_BLOCK)


def _popcount(word: tirx.PrimExpr) -> tirx.PrimExpr:
    return tirx.popcount(word).astype("int32")


def _pack_activations(data: te.Tensor, encoding: Encoding, padding: tuple[int, int, int, int]) -> te.Tensor:
    """int8 NCHW -> (N, planes, words, H + pads, W + pads) uint32: bit k of a word is channel 32*word + k."""
    batch, channels, height, width = (int(d) for d in data.shape)
    top, left, bottom, right = padding
    k = te.reduce_axis((0, WORD_BITS), "k")
    one = tirx.const(1, WORD_DTYPE)
    zero = tirx.const(0, WORD_DTYPE)

    def bit(value: tirx.PrimExpr, plane) -> tirx.PrimExpr:
        return (value.astype("int32") >> plane).astype(WORD_DTYPE) & one

    def word(n, p, w, y, x):
        channel = w * WORD_BITS + k
        inside = tirx.all(channel < channels, y >= top, y < height + top, x >= left, x < width + left)
        value = data[n, tirx.min(channel, channels - 1), y - top, x - left]
        return te.sum(tirx.if_then_else(inside, bit(value, p), zero) << k.var.astype(WORD_DTYPE), axis=k)

    # Rows are allocated to a whole number of vectors of any CPU's width (the extra columns are
    # never read), so the generic schedule packs a register's lanes of pixels at a time.
    row = -(-(width + left + right) // WIDEST_LANES) * WIDEST_LANES
    shape = (batch, len(encoding.coefficients), words(channels), height + top + bottom, row)
    return te.compute(shape, word, name=PACK_BLOCK)


def reference(
    data: np.ndarray, weights: np.ndarray, strides: tuple[int, int], padding: tuple[int, int, int, int]
) -> np.ndarray:
    """Exact int64 NCHW/OIHW conv of the integer values themselves: what the bit planes must sum to."""
    from numpy.lib.stride_tricks import sliding_window_view

    top, left, bottom, right = padding
    padded = np.pad(data.astype(np.int64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = sliding_window_view(padded, weights.shape[2:], axis=(2, 3))[:, :, :: strides[0], :: strides[1]]
    return np.einsum("nchwij,ocij->nohw", windows, weights.astype(np.int64))
