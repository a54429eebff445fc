"""Sub-byte integers as bit planes packed into 32-bit words, and the bit-serial identity.

An integer tensor of ``b`` bits is a weighted sum of 0/1 *planes* plus an offset:
``x = sum_p coefficient[p] * plane_p(x) + offset``. Three encodings:

- ``unsigned`` (unipolar): ``x`` in [0, 2**b - 1]; plane p is bit p, coefficient 2**p.
- ``signed``: ``x`` in [-(2**(b-1) - 1), 2**(b-1) - 1] (symmetric, two's complement); plane p
  is bit p, coefficient 2**p, except the sign plane b-1, whose coefficient is -2**(b-1).
- ``bipolar``: 1-bit values {-1, +1}: one plane [x == +1] with coefficient 2, offset -1.

A dot product of unsigned or signed activations ``a`` with weights ``w`` is then a sum over
plane pairs of ``coefficient_a * coefficient_w * popcount(plane_a AND plane_w)`` over packed
words, plus ``offset_w * coefficient_a * popcount(plane_a)``: the bit-serial convolution of
``qbuild.kernels.bitserial``. (Bipolar weights cost one plane, not two: the offset term
needs only the activation's own popcount, shared by every output channel.) Planes are packed along the input
channel axis, 32 channels to a ``uint32`` word (bit k holds channel 32*word + k); channels
beyond the tensor's count are zero bits, which contribute nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qbuild.errors import QbuildError

WORD_BITS = 32
WORD_DTYPE = "uint32"
ENCODINGS = ("unsigned", "signed", "bipolar")


@dataclass(frozen=True)
class Encoding:
    """How a ``bits``-bit integer tensor splits into planes (see the module docstring)."""

    bits: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ENCODINGS:
            raise QbuildError(f"unknown bit encoding {self.kind!r}", f"use one of {', '.join(ENCODINGS)}")
        if self.kind == "bipolar" and self.bits != 1:
            raise QbuildError(f"a bipolar encoding has 1 bit, not {self.bits}", "use bits=1 with 'bipolar'")
        if self.kind == "signed" and self.bits < 2:
            raise QbuildError(
                "a signed symmetric range needs 2 bits (1 bit holds only 0)",
                "use 'bipolar' for 1-bit signed values, or 2 bits",
            )
        if not 1 <= self.bits <= 8:
            raise QbuildError(f"{self.bits}-bit planes are not supported", "use 1 to 8 bits")

    @property
    def low(self) -> int:
        """Smallest representable value."""
        return {"unsigned": 0, "signed": -self.high, "bipolar": -1}[self.kind]

    @property
    def offset(self) -> int:
        """The constant added to the planes' weighted sum (-1 for bipolar, else 0)."""
        return -1 if self.kind == "bipolar" else 0

    @property
    def high(self) -> int:
        """Largest representable value."""
        if self.kind == "unsigned":
            return (1 << self.bits) - 1
        return (1 << (self.bits - 1)) - 1 if self.kind == "signed" else 1

    @property
    def coefficients(self) -> tuple[int, ...]:
        """The weight of each plane in the value."""
        if self.kind == "bipolar":
            return (2,)
        coefficients = [1 << p for p in range(self.bits)]
        if self.kind == "signed":
            coefficients[-1] = -coefficients[-1]
        return tuple(coefficients)

    def planes(self, values: np.ndarray) -> np.ndarray:
        """0/1 planes (a new leading axis) whose weighted sum plus ``offset`` is ``values``."""
        values = np.asarray(values).astype(np.int64)
        if values.size and (
            values.min() < self.low or values.max() > self.high or (self.kind == "bipolar" and np.any(values == 0))
        ):
            raise ValueError(f"values outside the {self.bits}-bit {self.kind} range")
        if self.kind == "bipolar":
            return (values == 1).astype(np.uint8)[None]
        return np.stack([(values >> p) & 1 for p in range(self.bits)]).astype(np.uint8)

    def to_json(self) -> dict:
        return {"bits": self.bits, "kind": self.kind}


def words(channels: int) -> int:
    """Packed words holding ``channels`` bits."""
    return -(-channels // WORD_BITS)


def pack_channels(planes: np.ndarray, axis: int) -> np.ndarray:
    """Pack 0/1 ``planes`` along ``axis`` into uint32 words (that axis shrinks to ``words``)."""
    planes = np.moveaxis(np.asarray(planes, dtype=np.uint32), axis, -1)
    channels = planes.shape[-1]
    padded = np.zeros((*planes.shape[:-1], words(channels) * WORD_BITS), dtype=np.uint32)
    padded[..., :channels] = planes
    grouped = padded.reshape(*planes.shape[:-1], -1, WORD_BITS)
    packed = np.bitwise_or.reduce(grouped << np.arange(WORD_BITS, dtype=np.uint32), axis=-1)
    return np.moveaxis(packed.astype(np.uint32), -1, axis)


def unpack_channels(packed: np.ndarray, axis: int, channels: int) -> np.ndarray:
    """The inverse of ``pack_channels``: 0/1 planes with ``channels`` entries along ``axis``."""
    packed = np.moveaxis(np.asarray(packed, dtype=np.uint32), axis, -1)
    bits = (packed[..., None] >> np.arange(WORD_BITS, dtype=np.uint32)) & 1
    flat = bits.reshape(*packed.shape[:-1], -1)[..., :channels]
    return np.moveaxis(flat.astype(np.uint8), -1, axis)


def pack_conv_weights(weights: np.ndarray, encoding: Encoding, lanes: int) -> np.ndarray:
    """OIHW integer weights -> the bit-serial conv's (O/lanes, I/32, KH, KW, planes, lanes) uint32
    words: each vector of ``lanes`` output channels is contiguous. Output channels are padded to
    a multiple of ``lanes`` with zero words."""
    out_channels = weights.shape[0]
    padded_out = -(-out_channels // lanes) * lanes
    planes = encoding.planes(weights)  # P, O, I, KH, KW
    packed = pack_channels(planes, axis=2)  # P, O, I/32, KH, KW
    full = np.zeros((packed.shape[0], padded_out, *packed.shape[2:]), dtype=np.uint32)
    full[:, :out_channels] = packed
    blocked = full.reshape(full.shape[0], padded_out // lanes, lanes, *full.shape[2:])  # P, OB, L, CW, KH, KW
    return np.ascontiguousarray(blocked.transpose(1, 3, 4, 5, 0, 2))
