"""Integer rescaling: real ratios as (multiplier, shift) pairs, and NumPy references.

A requantize from scale ``s_from`` to ``s_to`` multiplies by ``r = s_from / s_to``. In integer
arithmetic ``r = M * 2**-n`` with a 31-bit ``M`` in [2**30, 2**31), so
``y = round((x * M) / 2**n)`` in int64 never overflows for int32 ``x``. When every ratio is a
power of two (relay's power2 / global_scale defaults) the multiply disappears and only shifts
remain.

A requantize whose result is clipped to +-qmax below 2**23 (every int8 or int16 epilogue) rescales
in float32 instead (``float32_rescale_reference``): ``x * r`` rounded once to float32, clamped to
the clip's bounds, then rounded to an integer. Float32 holds each such result exactly, so the
product's one rounding (a relative 2**-24, next to the ratio's own) can move a result by one code
only where ``x * r`` lies that close to a rounding boundary. Clamping before the rounding add
keeps a compiler from fusing the multiply and the add into one FMA (which rounds once where a
multiply and an add round twice), so every target computes the same integers; float32 gives 16
lanes a 512-bit vector where the int64 product gives 8, and needs no 64-bit multiply (AVX2 has
none). A rescale of int8 values (a residual add's operands, added before they are clipped) needs
24 bits for its product to fit int32; ``exact_int8_multiplier_shift`` takes them where all 256
values keep the 31-bit multiplier's results. The NumPy functions here are the references that
tests hold the generated code to.
"""

from __future__ import annotations

import numpy as np

MULTIPLIER_BITS = 30  # M in [2**30, 2**31)
MAX_SHIFT = 62  # x * M stays within int64 for int32 x
INT32_TOP = (1 << 31) - 1
FLOAT32_RESCALE_LIMIT = 1 << 23  # below it a float32 holds every result, and result + 0.5 exactly


def multiplier_shift(ratio: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(M, n) with ratio ~= M * 2**-n elementwise; M is int64 in [2**30, 2**31), n in [1, 62].

    Ratios below 2**-31 (a channel whose weights are all but zero, requantized to 8 bits) keep
    n = 62 with a smaller M: an int32 input times such a ratio is below 1 anyway.
    """
    ratio = checked_ratio(ratio)
    mantissa, exponent = np.frexp(ratio)  # ratio = mantissa * 2**exponent, mantissa in [0.5, 1)
    multiplier = np.round(mantissa * (1 << (MULTIPLIER_BITS + 1))).astype(np.int64)
    shift = (MULTIPLIER_BITS + 1 - exponent).astype(np.int64)
    overflow = multiplier == (1 << (MULTIPLIER_BITS + 1))  # mantissa rounded up to 1.0
    multiplier = np.where(overflow, multiplier // 2, multiplier)
    shift = np.where(overflow, shift - 1, shift)
    tiny = shift > MAX_SHIFT
    small = np.minimum(ratio, 2.0 ** (MULTIPLIER_BITS + 1 - MAX_SHIFT))  # only tiny ones are used
    multiplier = np.where(tiny, np.round(small * 2.0**MAX_SHIFT).astype(np.int64), multiplier)
    shift = np.minimum(shift, MAX_SHIFT)
    if np.any(shift < 1):
        raise ValueError(f"requantize ratio above the supported 2**29: {ratio.max()}")
    return multiplier, shift


def checked_ratio(ratio: np.ndarray | float) -> np.ndarray:
    """``ratio`` as float64; a ValueError naming it unless every ratio is positive and finite."""
    ratio = np.asarray(ratio, dtype=np.float64)
    if np.any(ratio <= 0) or not np.all(np.isfinite(ratio)):
        raise ValueError(f"requantize ratios must be positive and finite, got {ratio}")
    return ratio


def rescales_in_float32(ratio: np.ndarray | float, qmax: int) -> bool:
    """Whether a requantize by ``ratio`` clipped to +-``qmax`` rescales in float32: a ratio that is
    not a shift, clipped within +-2**23."""
    exponents = power_of_two_exponents(ratio)
    shifts = exponents is not None and (np.all(exponents >= 0) or np.all(exponents <= 0))
    return not shifts and qmax < FLOAT32_RESCALE_LIMIT


def _fitting(ratio: np.ndarray, bound: int, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(M, n) with ``bits``-bit multipliers (``M * 2**-n`` ~= ratio) whose largest product with
    ``bound`` and rounding offset fit in int32, shifts in [1, 31]; None if they do not."""
    mantissa, exponent = np.frexp(ratio)  # ratio = mantissa * 2**exponent, mantissa in [0.5, 1)
    multiplier = np.round(mantissa * 2.0**bits).astype(np.int64)
    shift = (bits - exponent).astype(np.int64)
    if shift.min() < 1 or shift.max() > 31 or bound * int(multiplier.max()) + (1 << (int(shift.max()) - 1)) > INT32_TOP:
        return None
    return multiplier, shift


def _widest_bits(ratio: np.ndarray, bound: float) -> np.ndarray:
    """The most multiplier bits with ``2**bits * bound + 2**(n - 1)`` under 2**31 (n = bits - exponent)."""
    _mantissa, exponent = np.frexp(ratio)
    return np.floor(31 - np.log2(bound + 2.0 ** (-exponent - 1))).astype(np.int64)


def exact_int8_multiplier_shift(
    ratio: np.ndarray | float, rounding: str, round_for_shift: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """(M, n) for a requantize of int8 values whose product with any int8 fits in int32 and whose
    result equals the 31-bit multiplier's for every one of the 256 values (checked); None if not."""
    ratio = np.asarray(ratio, dtype=np.float64)
    fitting = _fitting(ratio, 128, _widest_bits(ratio, 128))
    if fitting is None:
        return None
    values = np.arange(-128, 128, dtype=np.int64).reshape(-1, *([1] * ratio.ndim))
    full_multiplier, full_shift = multiplier_shift(ratio)
    same = np.array_equal(
        shift_right_rounded(values * fitting[0], fitting[1], rounding, round_for_shift),
        shift_right_rounded(values * full_multiplier, full_shift, rounding, round_for_shift),
    )
    return fitting if same else None


def power_of_two_exponents(ratio: np.ndarray | float) -> np.ndarray | None:
    """k with ratio == 2**k exactly (elementwise), or None if any ratio is not a power of two."""
    mantissa, exponent = np.frexp(np.asarray(ratio, dtype=np.float64))
    if not np.all(mantissa == 0.5):
        return None
    return (exponent - 1).astype(np.int64)


def rounding_offset(shift: np.ndarray, rounding: str, round_for_shift: bool) -> np.ndarray:
    """What to add before an arithmetic right shift by ``shift`` (UPWARD: half up)."""
    shift = np.asarray(shift, dtype=np.int64)
    if not round_for_shift:
        return np.zeros_like(shift)
    half = np.left_shift(np.int64(1), np.maximum(shift - 1, 0))
    return np.where(shift > 0, half, 0) if rounding == "UPWARD" else np.where(shift > 0, half - 1, 0)


def shift_right_rounded(x: np.ndarray, shift: np.ndarray, rounding: str, round_for_shift: bool) -> np.ndarray:
    """Reference: x / 2**shift rounded (UPWARD: half up; TONEAREST: half to even), int64."""
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    offset = rounding_offset(shift, rounding, round_for_shift)
    if round_for_shift and rounding == "TONEAREST":
        offset = offset + (np.right_shift(x, shift) & 1)
    return np.right_shift(x + offset, shift)


def requantize_reference(
    x: np.ndarray, ratio: np.ndarray | float, qmax: int | None, rounding: str = "UPWARD", round_for_shift: bool = True
) -> np.ndarray:
    """Reference requantize of integer ``x`` by ``ratio`` (broadcast), clipped to +-qmax if given."""
    x = np.asarray(x, dtype=np.int64)
    if qmax is not None and rescales_in_float32(ratio, qmax):
        return float32_rescale_reference(x, ratio, (-qmax, qmax), rounding, round_for_shift)
    exponents = power_of_two_exponents(ratio)
    if exponents is not None and np.all(exponents >= 0):
        y = np.left_shift(x, exponents)
    elif exponents is not None and np.all(exponents <= 0):
        y = shift_right_rounded(x, -exponents, rounding, round_for_shift)
    else:
        multiplier, shift = multiplier_shift(ratio)
        y = shift_right_rounded(x * multiplier, shift, rounding, round_for_shift)
    return y if qmax is None else np.clip(y, -qmax, qmax)


def float32_rescale_reference(
    x: np.ndarray, ratio: np.ndarray | float, bounds: tuple[int, int], rounding: str, round_for_shift: bool
) -> np.ndarray:
    """Reference of the float32 requantize: ``x`` and ``ratio`` as float32, their product rounded
    to float32, clamped to ``bounds`` (low, high), rounded (UPWARD: half up; TONEAREST: half to
    even; without ``round_for_shift``: down) to int64."""
    product = np.asarray(x).astype(np.float32) * checked_ratio(ratio).astype(np.float32)
    clamped = np.clip(product, np.float32(bounds[0]), np.float32(bounds[1]))
    if not round_for_shift:
        return np.floor(clamped).astype(np.int64)
    return round_half(clamped, rounding).astype(np.int64)


def round_half(x: np.ndarray, rounding: str) -> np.ndarray:
    """Float rounding of the quantizer: UPWARD rounds halves up, TONEAREST to even."""
    return np.floor(x + 0.5) if rounding == "UPWARD" else np.round(x)
