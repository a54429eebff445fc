"""Integer rescaling: the NumPy references are exact, and the Relax code matches them bit for bit."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import tvm
from tvm import relax

from qbuild.quantize import emit
from qbuild.quantize.fixed_point import (
    exact_int8_multiplier_shift,
    multiplier_shift,
    power_of_two_exponents,
    requantize_reference,
    rescales_in_float32,
    shift_right_rounded,
)
from qbuild.targets import resolve_target


def test_multiplier_and_shift_represent_the_ratio_to_31_bits():
    ratios = np.array([1e-6, 0.0123, 0.5, 0.75, 1.0, 3.3, 1000.0])
    multiplier, shift = multiplier_shift(ratios)
    assert np.all((multiplier >= 1 << 30) & (multiplier < 1 << 31))
    np.testing.assert_allclose(multiplier / 2.0**shift, ratios, rtol=2**-30)


def test_ratios_too_small_for_a_31_bit_multiplier_still_requantize_to_what_they_round_to():
    multiplier, shift = multiplier_shift(np.array([1e-12, 2.0**-40]))
    assert list(shift) == [62, 62] and list(multiplier) == [round(1e-12 * 2**62), 2**22]
    x = np.array([2**31 - 1, -(2**31), 12345], dtype=np.int64)
    np.testing.assert_array_equal(requantize_reference(x, 1e-12, 127), [0, 0, 0])


def test_powers_of_two_are_recognised():
    assert list(power_of_two_exponents(np.array([0.25, 1.0, 8.0]))) == [-2, 0, 3]
    assert power_of_two_exponents(np.array([0.25, 0.3])) is None


@pytest.mark.parametrize("rounding", ["UPWARD", "TONEAREST"])
def test_rounding_shift_matches_exact_rational_rounding(rounding):
    x = np.arange(-40, 41)
    got = shift_right_rounded(x, np.full_like(x, 2), rounding, True)
    for xi, gi in zip(x, got):
        exact = Fraction(int(xi), 4)
        if rounding == "UPWARD":
            expected = (exact + Fraction(1, 2)).__floor__()
        else:
            expected = round(exact)  # Python rounds halves to even
        assert gi == expected, (xi, gi, expected)


def test_without_round_for_shift_the_shift_truncates_toward_minus_infinity():
    assert list(shift_right_rounded(np.array([7, -7]), np.array([1, 1]), "UPWARD", False)) == [3, -4]


def _run_requantize(x: np.ndarray, ratio, bounds, dtype, rounding, axis=1, target=None) -> np.ndarray:
    bb = relax.BlockBuilder()
    param = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [param]):
        with bb.dataflow():
            out = bb.emit_output(emit.requantize(bb, param, ratio, bounds, dtype, rounding, True, axis))
        bb.emit_func_output(out)
    target = target or tvm.target.Target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(bb.get(), target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize(
    "ratio", [0.25, 4.0, 0.013, np.array([0.5, 0.0371, 2.0, 1e-4]), np.array([1e-11, 3e-10, 0.7, 1.0])]
)
@pytest.mark.parametrize("rounding", ["UPWARD", "TONEAREST"])
@pytest.mark.parametrize("cpu", ["generic x86-64", "this machine's CPU (FMA)"])
def test_generated_requantize_is_bit_exact_against_the_reference(ratio, rounding, cpu):
    target = None if cpu.startswith("generic") else resolve_target("cpu").tvm_target()
    x = np.random.default_rng(3).integers(-(2**20), 2**20, size=(1, 4, 5, 5)).astype("int32")
    got = _run_requantize(x, ratio, (-127, 127), "int8", rounding, target=target)
    expected = requantize_reference(x, np.reshape(ratio, (1, -1, 1, 1)) if np.ndim(ratio) else ratio, 127, rounding)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, expected.astype(np.int8))


def test_a_requantize_clipped_to_int8_rescales_in_float32_and_moves_a_result_by_one_code_only_near_a_tie():
    ratios = np.array([0.013, 0.0371, 0.5, 0.02, 1e-7])
    assert rescales_in_float32(ratios, 127) and rescales_in_float32(ratios, 32767)
    x = np.random.default_rng(4).integers(-(2**31), 2**31, size=(20000, ratios.size))
    full_multiplier, full_shift = multiplier_shift(ratios)
    exact = np.clip(shift_right_rounded(x * full_multiplier, full_shift, "UPWARD", True), -127, 127)
    rescaled = requantize_reference(x, ratios, 127)
    assert np.abs(rescaled - exact).max() <= 1
    real = x * ratios
    moved = rescaled != exact  # float32 rounds the ratio and the product: 2**-23 of the product at most
    assert np.all(np.abs(np.abs(real - np.floor(real) - 0.5))[moved] <= (np.abs(real) * 2.0**-23)[moved])


def test_the_calibrated_epilogue_computes_nothing_in_int64():
    """Any int32 sum, per-channel ratios, clipped to int8: a float32 rescale."""
    bb = relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType((1, 4, 5, 5), "int32"))
    with bb.function("main", [acc]):
        with bb.dataflow():
            out = bb.emit_output(
                emit.requantize(bb, acc, np.array([0.013, 0.0371, 0.05, 0.02]), (-127, 127), "int8", "UPWARD", True)
            )
        bb.emit_func_output(out)
    dtypes = {str(binding.var.ty.dtype) for block in bb.get()["main"].body.blocks for binding in block.bindings}
    assert dtypes == {"float32", "int8"}


def test_a_shift_by_a_power_of_two_too_large_for_a_multiplier_still_shifts():
    x = np.array([1, 2], dtype=np.int8).reshape(1, 2, 1, 1)
    got = _run_requantize(x, 2.0**30, None, "int64", "UPWARD")
    np.testing.assert_array_equal(got, requantize_reference(x, 2.0**30, None))


def test_shifts_and_int32_clips_keep_integer_rescales():
    assert not rescales_in_float32(np.array([0.25, 0.5]), 127), "a shift needs no multiply"
    assert not rescales_in_float32(0.01, 2**31 - 1), "float32 cannot hold every int32 result"


def test_an_int8_rescale_takes_a_multiplier_that_fits_int32_only_where_every_result_stays_the_same():
    ratios = np.array([0.9794, 0.7312, 1.3371])
    multiplier, shift = exact_int8_multiplier_shift(ratios, "UPWARD", True)
    assert 128 * multiplier.max() + (1 << int(shift.max() - 1)) < 2**31
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 16, 16).repeat(3, axis=1)
    got = _run_requantize(x, ratios, None, "int64", "UPWARD")
    np.testing.assert_array_equal(got, requantize_reference(x, ratios.reshape(1, -1, 1, 1), None))
    assert exact_int8_multiplier_shift(0.77, "UPWARD", True) is None, (
        "50 * 0.77 = 38.5: a tie that 23 bits break the other way"
    )


@pytest.mark.parametrize("rounding", ["UPWARD", "TONEAREST"])
def test_an_int8_rescale_that_no_short_multiplier_gets_right_splits_the_31_bit_one_in_int32(rounding):
    """0.77 has no exact short multiplier (above): its 31-bit one is split into two 16-bit halves,
    and every int8 value still rescales as the reference does, with no int64 arithmetic."""
    ratios = np.array([0.77, 0.7293, 1.3371e-3, 2**14 * 1.37, 2**-17 * 1.01])  # shifts 31, 31, 40, 16, 47
    assert multiplier_shift(ratios)[1].tolist() == [31, 31, 40, 16, 47]
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 16, 16).repeat(len(ratios), axis=1)
    got = _run_requantize(x, ratios, None, "int64", rounding)
    np.testing.assert_array_equal(got, requantize_reference(x, ratios.reshape(1, -1, 1, 1), None, rounding))
    bb = relax.BlockBuilder()
    param = relax.Var("x", relax.TensorType(x.shape, "int8"))
    with bb.function("main", [param]):
        with bb.dataflow():
            out = bb.emit_output(emit.requantize(bb, param, ratios, None, "int64", rounding, True))
        bb.emit_func_output(out)
    values = [binding.value for block in bb.get()["main"].body.blocks for binding in block.bindings]
    arithmetic = [v for v in values if isinstance(v, relax.Call) and v.op.name != "relax.astype"]
    assert arithmetic and {str(v.ty.dtype) for v in arithmetic} == {"int32"}
