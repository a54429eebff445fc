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


SPLIT_BITS = 16  # the low half of a split 31-bit multiplier
SPLIT_SHIFTS = SPLIT_BITS + 31  # the widest shift a split rescale takes (its high half's shift: 31)


def _split_multiply_shift(
    bb: relax.BlockBuilder,
    q: relax.Expr,
    multiplier: np.ndarray,
    shift: np.ndarray,
    rounding: str,
    round_for_shift: bool,
    axis: int,
) -> relax.Expr:
    """int8 ``q`` times a 31-bit multiplier M, rounded and shifted right by n in [16, 47], in int32
    alone, the same value for every input as ``fixed_point.shift_right_rounded(q * M, n)``. With
    M and the rounding offset r split into halves at bit 16, q * M + r = h * 2**16 + l where
    h = q * M_high + r_high and l = q * M_low + r_low, and floor((h * 2**16 + l) / 2**n) =
    floor((h + floor(l / 2**16)) / 2**(n - 16)) for an integer h. Every term stays within int32
    (|q * M_high| < 2**22, r_high < 2**31 - 2**22, |q * M_low| < 2**23). Ties to even
    (TONEAREST) add the lowest bit of the unrounded quotient to l, got the same way. Returned as
    int64, as the other rescales (``narrow`` computes the rest in int32)."""
    ndim = _ndim(q)
    mask = (1 << SPLIT_BITS) - 1
    offset = rounding_offset(shift, rounding, round_for_shift)

    def const(values: np.ndarray) -> relax.Expr:
        return channel_const(values, "int32", ndim, axis)

    wide = bb.emit(relax.op.astype(q, "int32"))
    high_part = bb.emit(relax.op.multiply(wide, const(multiplier >> SPLIT_BITS)))
    low_part = bb.emit(relax.op.multiply(wide, const(multiplier & mask)))

    def quotient(high: relax.Expr, low: relax.Expr) -> relax.Expr:
        lower = bb.emit(relax.op.right_shift(low, relax.const(SPLIT_BITS, "int32")))
        return bb.emit(relax.op.right_shift(relax.op.add(high, lower), const(shift - SPLIT_BITS)))

    low = bb.emit(relax.op.add(low_part, const(offset & mask)))
    if round_for_shift and rounding == "TONEAREST":  # + the unrounded quotient's lowest bit: ties to even
        parity = bb.emit(relax.op.bitwise_and(quotient(high_part, low_part), relax.const(1, "int32")))
        low = bb.emit(relax.op.add(low, parity))
    high = bb.emit(relax.op.add(high_part, const(offset >> SPLIT_BITS)))
    return bb.emit(relax.op.astype(quotient(high, low), "int64"))


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
    epilogue), a float32 multiply; else a multiply and a rounding shift by a 31-bit multiplier, in
    int64; for int8 input instead a shorter multiplier whose product stays in int32 where it gives
    every int8 value the same result (``fixed_point.exact_int8_multiplier_shift``), else, for
    shifts of 16 to 47 bits, the 31-bit multiplier split in two halves, all in int32
    (``_split_multiply_shift``).
    ``bounds=None`` skips the clip (an intermediate that is added to before clipping).
    """
    if bounds is not None and rescales_in_float32(ratio, max(-bounds[0], bounds[1])):
        return _float32_rescale(bb, q, ratio, bounds, dtype, rounding, round_for_shift, axis)
    exponents = power_of_two_exponents(ratio)
    if exponents is not None and (np.all(exponents >= 0) or np.all(exponents <= 0)):
        scaled = _shift(bb, q, exponents, rounding, round_for_shift, axis)
    else:
        scaled = _multiply_shift(bb, q, ratio, rounding, round_for_shift, axis)
    if bounds is not None:
        scaled = bb.emit(relax.op.clip(scaled, *bounds))
    return scaled if dtype == "int64" else bb.emit(relax.op.astype(scaled, dtype))


def _shift(
    bb: relax.BlockBuilder, q: relax.Expr, exponents: np.ndarray, rounding: str, round_for_shift: bool, axis: int
) -> relax.Expr:
    """``q`` times 2**exponents (all of one sign) in int64: a left shift, or a rounding right shift."""
    ndim = _ndim(q)
    wide = bb.emit(relax.op.astype(q, "int64"))
    if np.all(exponents == 0):
        return wide
    if np.all(exponents >= 0):
        return bb.emit(relax.op.left_shift(wide, channel_const(exponents, "int64", ndim, axis)))
    return _shift_right(bb, wide, -exponents, rounding, round_for_shift, ndim, axis)


def _multiply_shift(
    bb: relax.BlockBuilder, q: relax.Expr, ratio: np.ndarray | float, rounding: str, round_for_shift: bool, axis: int
) -> relax.Expr:
    """``q`` times ``ratio``, rounded, as int64: int8 input by an exact short multiplier
    (``fixed_point.exact_int8_multiplier_shift``) in int64, else by the split 31-bit one in int32
    where its shift allows (``_split_multiply_shift``); other input by the 31-bit multiplier in int64."""
    int8 = _dtype(q) == "int8"
    exact = exact_int8_multiplier_shift(ratio, rounding, round_for_shift) if int8 else None
    multiplier, shift = exact if exact is not None else multiplier_shift(ratio)
    if int8 and exact is None and SPLIT_BITS <= shift.min() and shift.max() <= SPLIT_SHIFTS:
        return _split_multiply_shift(bb, q, multiplier, shift, rounding, round_for_shift, axis)
    ndim = _ndim(q)
    wide = bb.emit(relax.op.astype(q, "int64"))
    product = bb.emit(relax.op.multiply(wide, channel_const(multiplier, "int64", ndim, axis)))
    return _shift_right(bb, product, shift, rounding, round_for_shift, ndim, axis)


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
