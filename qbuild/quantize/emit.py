"""Relax building blocks of the integer rewrite: quantize, dequantize, requantize.

Each function emits into a ``relax.BlockBuilder`` and mirrors a NumPy reference in
``fixed_point`` bit for bit. Scales are per tensor (a float) or per channel (a vector laid
along ``axis`` of an ``ndim``-dimensional tensor).
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import Attrs

from qbuild.quantize.fixed_point import (
    checked_ratio,
    exact_int8_multiplier_shift,
    multiplier_shift,
    power_of_two_exponents,
    rescales_in_float32,
    rounding_offset,
)


def channel_const(values: np.ndarray | float, dtype: str, ndim: int, axis: int) -> relax.Constant:
    """A constant that broadcasts ``values`` along ``axis`` (a scalar stays a scalar)."""
    array = np.asarray(values)
    if array.ndim == 0 or array.size == 1:
        return relax.const(array.reshape(()).astype(dtype), dtype)
    shape = [1] * ndim
    shape[axis % ndim] = array.size
    return relax.const(array.reshape(shape).astype(dtype), dtype)


def _ndim(expr: relax.Expr) -> int:
    return len(expr.ty.shape)


def _dtype(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)


def quantize(
    bb: relax.BlockBuilder, x: relax.Expr, scale: float, bounds: tuple[int, int], dtype: str, rounding: str
) -> relax.Expr:
    """float -> integer: clip(round(x / scale), low, high) as ``dtype``."""
    scaled = bb.emit(relax.op.multiply(x, relax.const(np.float32(1.0 / scale), "float32")))
    clipped = bb.emit(relax.op.clip(_round_half(bb, scaled, rounding), *bounds))
    return bb.emit(relax.op.astype(clipped, dtype))


def _round_half(bb: relax.BlockBuilder, x: relax.Expr, rounding: str) -> relax.Expr:
    """float32 ``x`` rounded as ``fixed_point.round_half``: UPWARD halves up, TONEAREST to even."""
    if rounding == "UPWARD":
        return bb.emit(relax.op.floor(relax.op.add(x, relax.const(np.float32(0.5), "float32"))))
    return bb.emit(relax.op.round(x))


def dequantize(bb: relax.BlockBuilder, q: relax.Expr, scale: np.ndarray | float, axis: int = 1) -> relax.Expr:
    """integer -> float32: q * scale (per tensor or per channel along ``axis``)."""
    as_float = bb.emit(relax.op.astype(q, "float32"))
    return bb.emit(relax.op.multiply(as_float, channel_const(scale, "float32", _ndim(q), axis)))


def _shift_right(
    bb: relax.BlockBuilder, x: relax.Expr, shift: np.ndarray, rounding: str, round_for_shift: bool, ndim: int, axis: int
) -> relax.Expr:
    offset = rounding_offset(shift, rounding, round_for_shift)
    if np.any(offset):
        x_in = x
        x = bb.emit(relax.op.add(x, channel_const(offset, "int64", ndim, axis)))
        if round_for_shift and rounding == "TONEAREST":  # + the shifted value's lowest bit: ties to even
            low = bb.emit(
                relax.op.bitwise_and(
                    relax.op.right_shift(x_in, channel_const(shift, "int64", ndim, axis)), relax.const(1, "int64")
                )
            )
            x = bb.emit(relax.op.add(x, low))
    return bb.emit(relax.op.right_shift(x, channel_const(shift, "int64", ndim, axis)))


def _float32_rescale(
    bb: relax.BlockBuilder,
    q: relax.Expr,
    ratio: np.ndarray | float,
    bounds: tuple[int, int],
    dtype: str,
    rounding: str,
    round_for_shift: bool,
    axis: int,
) -> relax.Expr:
    """``fixed_point.float32_rescale_reference``: the product clamped before it is rounded, so that no
    multiply and add fuse into an FMA."""
    product = bb.emit(
        relax.op.multiply(
            bb.emit(relax.op.astype(q, "float32")), channel_const(checked_ratio(ratio), "float32", _ndim(q), axis)
        )
    )
    clamped = bb.emit(relax.op.clip(product, *bounds))
    rounded = _round_half(bb, clamped, rounding) if round_for_shift else bb.emit(relax.op.floor(clamped))
    return bb.emit(relax.op.astype(rounded, dtype))


def requantize(
    bb: relax.BlockBuilder,
    q: relax.Expr,
    ratio: np.ndarray | float,
    bounds: tuple[int, int] | None,
    dtype: str,
    rounding: str,
    round_for_shift: bool,
    axis: int = 1,
) -> relax.Expr:
    """integer -> integer rescale by ``ratio`` = s_from / s_to, then clip to ``bounds`` (low, high)
    and cast, as ``fixed_point.requantize_reference``.

    Power-of-two ratios become plain shifts. Others, clipped within +-2**23 (every int8 or int16
    epilogue), a float32 multiply; else a multiply and a rounding shift in int64: a 31-bit
    multiplier, for int8 input a shorter one whose product stays in int32 where it gives every
    int8 value the same result (``fixed_point.exact_int8_multiplier_shift``).
    ``bounds=None`` skips the clip (an intermediate that is added to before clipping).
    """
    ndim = _ndim(q)
    if bounds is not None and rescales_in_float32(ratio, max(-bounds[0], bounds[1])):
        return _float32_rescale(bb, q, ratio, bounds, dtype, rounding, round_for_shift, axis)
    wide = bb.emit(relax.op.astype(q, "int64"))
    exponents = power_of_two_exponents(ratio)
    if exponents is not None and np.all(exponents == 0):
        scaled = wide
    elif exponents is not None and np.all(exponents >= 0):
        scaled = bb.emit(relax.op.left_shift(wide, channel_const(exponents, "int64", ndim, axis)))
    elif exponents is not None and np.all(exponents <= 0):
        scaled = _shift_right(bb, wide, -exponents, rounding, round_for_shift, ndim, axis)
    else:
        exact = exact_int8_multiplier_shift(ratio, rounding, round_for_shift) if _dtype(q) == "int8" else None
        multiplier, shift = exact if exact is not None else multiplier_shift(ratio)
        product = bb.emit(relax.op.multiply(wide, channel_const(multiplier, "int64", ndim, axis)))
        scaled = _shift_right(bb, product, shift, rounding, round_for_shift, ndim, axis)
    if bounds is not None:
        scaled = bb.emit(relax.op.clip(scaled, *bounds))
    return scaled if dtype == "int64" else bb.emit(relax.op.astype(scaled, dtype))


def conv2d(bb: relax.BlockBuilder, data: relax.Expr, weights: np.ndarray, attrs: Attrs) -> relax.Expr:
    """An int32-accumulating conv2d of integer ``data`` with the constant integer ``weights``,
    strided, padded, dilated, grouped and laid out as the float conv's ``attrs``."""
    return bb.emit(
        relax.op.nn.conv2d(
            data,
            relax.const(weights),
            strides=attrs.strides,
            padding=attrs.padding,
            dilation=attrs.dilation,
            groups=attrs.groups,
            data_layout=attrs.data_layout,
            kernel_layout=attrs.kernel_layout,
            out_layout=attrs.out_layout,
            out_dtype="int32",
        )
    )
