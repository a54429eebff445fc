"""Integer tensors with zero points, as ONNX QDQ models store them, in qbuild's int8 programs.

An ONNX activation is ``real = (q - zp) * scale`` with ``q`` in uint8 or int8. qbuild's integer
kernels read int8, so a uint8 tensor is held as ``q - 128`` (exact: every uint8 value has its
int8 code) with its zero point moved by the same 128; real values never change. A conv of such
codes is exact in int32 because convolution is linear: ``conv(q - zp, w)`` with zero padding is
``conv(q, w) - zp * conv(1, w)``, where ``conv(1, w)``, the weight sums over the taps inside the
image, is a constant (one per output channel, or one per output position where padding cuts
windows at the borders: ``ones_response``). Each emitter here mirrors ONNX's own arithmetic:
``round_half_to_even(x / scale) + zp`` saturated to the integer range.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from qbuild.quantize import emit

INT8 = (-128, 127)
# The offset that holds an ONNX integer dtype's codes in int8.
INT8_OFFSET = {"int8": 0, "uint8": 128}
ROUNDING = "TONEAREST"  # ONNX's round half to even


def quantize(bb: relax.BlockBuilder, x: relax.Expr, scale: np.ndarray | float, zero: int) -> relax.Expr:
    """float32 -> int8 codes: clip(round(x / scale) + zero) as ONNX's QuantizeLinear (``zero``
    already in the int8 range; ``scale`` per tensor or per channel, axis 1)."""
    step = emit.channel_const(scale, "float32", len(x.ty.shape), 1)
    scaled = bb.emit(relax.op.round(relax.op.divide(x, step)))
    shifted = bb.emit(relax.op.add(scaled, relax.const(np.float32(zero), "float32"))) if zero else scaled
    return bb.emit(relax.op.astype(relax.op.clip(shifted, *INT8), "int8"))


def centred(bb: relax.BlockBuilder, q: relax.Expr, zero: int) -> relax.Expr:
    """int8 codes -> their values ``q - zero`` in int32."""
    wide = bb.emit(relax.op.astype(q, "int32"))
    return bb.emit(relax.op.subtract(wide, relax.const(zero, "int32"))) if zero else wide


def dequantize(bb: relax.BlockBuilder, q: relax.Expr, scale: np.ndarray | float, zero: int) -> relax.Expr:
    """int8 codes -> float32: (q - zero) * scale (per tensor or per channel, axis 1)."""
    return emit.dequantize(bb, centred(bb, q, zero), scale, 1)


def requantize(
    bb: relax.BlockBuilder, values: relax.Expr, ratio: np.ndarray | float, zero: int, axis: int = 1
) -> relax.Expr:
    """Integer values (zero point 0, e.g. an accumulator) rescaled by ``ratio`` into int8 codes
    with zero point ``zero``, saturated as ONNX saturates: clip(round(x * ratio) + zero).

    The rescale takes the full 31-bit multiplier in int64, then clips: ONNX Runtime rounds a
    float32 product, which a multiplier narrow enough to keep the product in int32 (10 to 16
    bits for an accumulator) does not reproduce."""
    wide = emit.requantize(bb, values, ratio, None, "int64", ROUNDING, True, axis)
    scaled = bb.emit(relax.op.astype(relax.op.clip(wide, INT8[0] - zero, INT8[1] - zero), "int32"))
    shifted = bb.emit(relax.op.add(scaled, relax.const(zero, "int32"))) if zero else scaled
    return bb.emit(relax.op.astype(shifted, "int8"))


def add(
    bb: relax.BlockBuilder, operands: list[tuple[relax.Expr, float, int]], scale: float, zero: int, guard: int = 16
) -> relax.Expr:
    """The int8 codes at (``scale``, ``zero``) of the sum of (codes, scale, zero) ``operands``:
    each operand rescaled to ``guard`` extra bits in int64, summed, then rounded once into the
    result's codes (a sum ONNX Runtime forms in float; one rounding, as there)."""
    fine = [
        emit.requantize(bb, centred(bb, q, z), s / scale * 2.0**guard, None, "int64", ROUNDING, True)
        for q, s, z in operands
    ]
    total = fine[0]
    for term in fine[1:]:
        total = bb.emit(relax.op.add(total, term))
    return requantize(bb, total, 2.0**-guard, zero)


def ones_response(
    weights: np.ndarray,
    in_hw: tuple[int, int],
    strides: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
    out_hw: tuple[int, int],
) -> np.ndarray:
    """``conv(1, weights)`` with zero padding, (O, OH, OW) int64: each output position's sum of
    the OIHW ``weights`` over the taps that fall inside the image."""
    tap_sums = weights.astype(np.int64).sum(axis=1)  # O, KH, KW

    def inside(size: int, outputs: int, taps: int, stride: int, before: int, step: int) -> np.ndarray:
        index = np.arange(outputs)[:, None] * stride + np.arange(taps)[None, :] * step - before
        return ((index >= 0) & (index < size)).astype(np.int64)

    rows = inside(in_hw[0], out_hw[0], weights.shape[2], strides[0], padding[0], dilation[0])
    cols = inside(in_hw[1], out_hw[1], weights.shape[3], strides[1], padding[1], dilation[1])
    return np.einsum("okl,yk,xl->oyx", tap_sums, rows, cols)
