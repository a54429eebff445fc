"""Integer tensors with zero points, as ONNX QDQ models store them, in qbuild's integer programs.

An ONNX activation is ``real = (q - zp) * scale`` with ``q`` in uint8 or int8; qbuild holds its
codes in the model's own dtype, zero point included, so that a conv reads them as they are (an
unsigned tensor is the natural operand of ``vpdpbusd``, AMX's ``tdpbusd``). A conv of such codes
is exact in int32 because convolution is linear: ``conv(q - zp, w)`` with zero padding is
``conv(q, w) - zp * conv(1, w)``, where ``conv(1, w)``, the weight sums over the taps inside the
image, is a constant (one per output channel, or one per output position where padding cuts
windows at the borders: ``ones_response``). Each emitter here mirrors ONNX Runtime's own
arithmetic: a rescale is a float32 product rounded half to even, plus the zero point, saturated
to the dtype's range (its QLinearConv and QLinearAdd requantize in float32 so).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from qbuild.quantize import emit

CODE_DTYPES = ("int8", "uint8")


def code_range(dtype: str) -> tuple[int, int]:
    """The (lowest, highest) code of an integer dtype."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def quantize(bb: relax.BlockBuilder, x: relax.Expr, scale: np.ndarray | float, zero: int, dtype: str) -> relax.Expr:
    """float32 -> ``dtype`` codes: clip(round(x / scale) + zero) as ONNX's QuantizeLinear
    (``scale`` per tensor or per channel, axis 1)."""
    step = emit.channel_const(scale, "float32", len(x.ty.shape), 1)
    scaled = bb.emit(relax.op.round(relax.op.divide(x, step)))
    return _saturate(bb, scaled, zero, dtype)


def _saturate(bb: relax.BlockBuilder, rounded: relax.Expr, zero: int, dtype: str) -> relax.Expr:
    """Rounded float32 values plus ``zero``, clipped to ``dtype``'s codes and cast (through int32:
    LLVM stores a float -> byte cast one byte at a time)."""
    shifted = bb.emit(relax.op.add(rounded, relax.const(np.float32(zero), "float32"))) if zero else rounded
    whole = bb.emit(relax.op.astype(relax.op.clip(shifted, *code_range(dtype)), "int32"))
    return bb.emit(relax.op.astype(whole, dtype))


def centred(bb: relax.BlockBuilder, q: relax.Expr, zero: int) -> relax.Expr:
    """Integer codes -> their values ``q - zero`` in int32."""
    wide = bb.emit(relax.op.astype(q, "int32"))
    return bb.emit(relax.op.subtract(wide, relax.const(zero, "int32"))) if zero else wide


def dequantize(bb: relax.BlockBuilder, q: relax.Expr, scale: np.ndarray | float, zero: int) -> relax.Expr:
    """Integer codes -> float32: (q - zero) * scale (per tensor or per channel, axis 1)."""
    return emit.dequantize(bb, centred(bb, q, zero), scale, 1)


def ratio32(ratio: np.ndarray | float) -> np.ndarray:
    """A rescale as ONNX Runtime holds it: float32."""
    return np.asarray(ratio, dtype=np.float64).astype(np.float32)


def requantize(
    bb: relax.BlockBuilder, values: relax.Expr, ratio: np.ndarray | float, zero: int, dtype: str, axis: int = 1
) -> relax.Expr:
    """Integer values (zero point 0, e.g. an accumulator) rescaled by ``ratio`` into ``dtype``
    codes with zero point ``zero``: clip(round(float32(x) * float32(ratio)) + zero), the float32
    arithmetic of ONNX Runtime's requantize (``ratio`` per tensor or per channel along ``axis``)."""
    step = emit.channel_const(ratio32(ratio), "float32", len(values.ty.shape), axis)
    scaled = bb.emit(relax.op.round(relax.op.multiply(relax.op.astype(values, "float32"), step)))
    return _saturate(bb, scaled, zero, dtype)


def add(
    bb: relax.BlockBuilder, operands: list[tuple[relax.Expr, float, int]], scale: float, zero: int, dtype: str
) -> relax.Expr:
    """The ``dtype`` codes at (``scale``, ``zero``) of the sum of (codes, scale, zero) ``operands``:
    each operand's centred values times its float32 ratio to ``scale``, summed, rounded once (ONNX
    Runtime's QLinearAdd)."""
    terms = [
        relax.op.multiply(relax.op.astype(centred(bb, q, z), "float32"), relax.const(ratio32(s / scale), "float32"))
        for q, s, z in operands
    ]
    total = terms[0]
    for term in terms[1:]:
        total = relax.op.add(total, term)
    return _saturate(bb, bb.emit(relax.op.round(total)), zero, dtype)


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
