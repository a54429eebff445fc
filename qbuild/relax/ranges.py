"""Integer value ranges of a Relax function's bindings, for choosing an integer conv's kernel.

A quantized conv's input is usually a ReLU'd, requantized tensor: ``maximum(acc, 0)``, a
rounding shift, a clamp to [-127, 127], a cast to int8 (or, after a float ReLU and max-pool, a
positive scale, ``floor(x + 0.5)`` and the same clamp). Such data lies in [0, 127], and there
the AVX2 byte multiply ``vpmaddubsw`` is exact (``conv2d``, ``intrin``). ``value_ranges``
follows each dataflow binding forward from what is known (constants, dtype limits, the
operators below) and bounds every variable; an operator it does not know gets its dtype's
whole range, so the answer is never narrower than the truth.

The data's bound times a conv's weight sums bounds every partial sum of the conv
(``conv_weight_sums``): where that fits in int16, the byte conv may accumulate in int16. A conv
with constant weights is bounded the same way in ``value_ranges`` (each output channel's positive
and negative weight sums times the data's ends), which lets ``narrow`` compute its requantize in
int32.
"""

from __future__ import annotations

import math
import re

import numpy as np
import tvm
from tvm import relax

from qbuild.relax.graph import op_name

Interval = tuple[float, float]
_UNBOUNDED: Interval = (-math.inf, math.inf)
# Operators whose output values are some of their first argument's values.
_SAME_VALUES = {
    "relax.layout_transform",
    "relax.reshape",
    "relax.permute_dims",
    "relax.nn.max_pool2d",
    "relax.squeeze",
    "relax.expand_dims",
}


# Elementwise non-decreasing functions (applied to the interval's ends).
_MONOTONE = {"relax.floor": math.floor, "relax.ceil": math.ceil, "relax.round": round}


def _dtype_range(expr: relax.Expr) -> Interval:
    dtype = str(getattr(expr.ty, "dtype", ""))
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return _UNBOUNDED


def _within(interval: Interval, bounds: Interval) -> bool:
    return bounds[0] <= interval[0] and interval[1] <= bounds[1]


def _shift(interval: Interval, amount: Interval, left: bool) -> Interval:
    """An arithmetic shift by amounts in a known non-negative range (a per-channel requantize
    shifts each channel its own way): x * 2**a, or floor(x / 2**a). Both are monotone in x for
    a given a, and in a for a given x, so the ends lie among the four corners."""
    if amount[0] < 0 or math.isinf(amount[1]):
        return _UNBOUNDED
    corners = [v if math.isinf(v) else v * 2.0**a if left else math.floor(v / 2.0**a) for v in interval for a in amount]
    return float(min(corners)), float(max(corners))


def _product(x: Interval, y: Interval, limits: Interval) -> Interval:
    """x * y elementwise; an integer product that may leave its type wraps around: unbounded."""
    products = [a * b for a in x for b in y if not (math.isinf(a) or math.isinf(b))]
    if len(products) == 4:
        result = (min(products), max(products))
    else:  # an unbounded factor: only the sign may still be known
        result = (0.0, math.inf) if x[0] >= 0 and y[0] >= 0 else _UNBOUNDED
    return result if limits == _UNBOUNDED or _within(result, limits) else _UNBOUNDED


def _call_range(call: relax.Call, arg) -> Interval:
    name = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
    args = [arg(a) for a in call.args]
    if name == "relax.nn.relu":
        return max(args[0][0], 0.0), max(args[0][1], 0.0)
    if name == "relax.maximum":
        return max(args[0][0], args[1][0]), max(args[0][1], args[1][1])
    if name == "relax.minimum":
        return min(args[0][0], args[1][0]), min(args[0][1], args[1][1])
    if name == "relax.add":
        result = (args[0][0] + args[1][0], args[0][1] + args[1][1])
        return result if _within(result, _dtype_range(call)) else _UNBOUNDED  # may wrap around
    if name == "relax.multiply":
        return _product(args[0], args[1], _dtype_range(call))
    if name in _MONOTONE:
        return tuple(v if math.isinf(v) else float(_MONOTONE[name](v)) for v in args[0])  # type: ignore[return-value]
    if name == "relax.right_shift":
        return _shift(args[0], args[1], left=False)
    if name == "relax.left_shift":
        result = _shift(args[0], args[1], left=True)
        return result if _within(result, _dtype_range(call)) else _UNBOUNDED  # may overflow
    if name == "relax.astype":
        lo, hi = args[0]
        if _dtype_range(call) != _UNBOUNDED:  # to an integer type: truncation or rounding, at most to the next integer
            lo, hi = (v if math.isinf(v) else float(f(v)) for v, f in ((lo, math.floor), (hi, math.ceil)))
        return (lo, hi) if _within((lo, hi), _dtype_range(call)) else _UNBOUNDED
    if name in _SAME_VALUES:
        return args[0]
    if name == "relax.nn.conv2d":
        return _conv_range(call, args[0])
    return _UNBOUNDED


def value_ranges(func: relax.Function) -> dict[relax.Var, Interval]:
    """Bounds on the values of every variable bound in ``func``'s blocks (by variable object)."""
    ranges: dict[relax.Var, Interval] = {}
    for block in getattr(func.body, "blocks", []):
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding) and isinstance(binding.value, relax.Call):
                ranges[binding.var] = _call_range(binding.value, lambda expr: bounds(expr, ranges))
    return ranges


def bounds(expr: relax.Expr, ranges: dict[relax.Var, Interval]) -> Interval:
    """Bounds of an operand: a constant's values, else what ``ranges`` (``value_ranges``) knows of
    it within its dtype's limits."""
    if isinstance(expr, tvm.ir.expr.GenericConst):  # TVM 0.27's relax constant: its array in .value
        values = expr.value.numpy()
        return (float(values.min()), float(values.max())) if values.size else _UNBOUNDED
    known = ranges.get(expr, _UNBOUNDED)
    limits = _dtype_range(expr)
    return max(known[0], limits[0]), min(known[1], limits[1])


def _functions(mod) -> list[relax.Function]:
    return [func for func in mod.functions.values() if isinstance(func, relax.Function)]


def seven_bit_values(mod) -> dict[relax.Var, float]:
    """The variables of ``mod``'s Relax functions whose values are known to lie in [0, 127], with
    the largest value each may take."""
    return {
        var: interval[1]
        for func in _functions(mod)
        for var, interval in value_ranges(func).items()
        if _within(interval, (0.0, 127.0))
    }


def conv_weight_sums(mod) -> dict[relax.Expr, float]:
    """The weights of ``mod``'s conv2d calls that are constants (or a layout transform of one), each
    with the largest magnitude of one output channel's positive or of its negative weight sum: a
    conv of data in [0, m] has every partial sum within m times that."""
    found: dict[relax.Expr, float] = {}
    for func in _functions(mod):
        bound = {
            binding.var: binding.value
            for block in getattr(func.body, "blocks", [])
            for binding in block.bindings
            if isinstance(binding, relax.VarBinding)
        }
        for value in bound.values():
            if op_name(value) == "relax.nn.conv2d" and str(value.args[1].ty.dtype) == "int8":  # the byte convs'
                weight = value.args[1]
                layout, source = str(value.attrs.kernel_layout), bound.get(weight, weight)
                if op_name(source) == "relax.layout_transform":
                    # ConvertLayout blocks only OIHW weights (``conv2d.desired_layout``)
                    layout, source = "OIHW", bound.get(source.args[0], source.args[0])
                if isinstance(source, tvm.ir.expr.GenericConst):
                    found[weight] = largest_channel_sum(source.value.numpy(), layout)
    return found


def _channel_sums(weights: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Each output channel's sum of positive and of negative weights; ``layout`` names the axes
    (e.g. "OIHW", "OIHW8i8o": "O" and "o" are output channels)."""
    letters = [token[-1] for token in re.findall(r"\d*[A-Za-z]", layout)]
    inputs = tuple(axis for axis, letter in enumerate(letters) if letter not in "Oo")
    values = weights.astype(np.int64)
    return np.maximum(values, 0).sum(axis=inputs), np.minimum(values, 0).sum(axis=inputs)


def largest_channel_sum(weights: np.ndarray, layout: str) -> float:
    """max over output channels of max(sum of positive weights, -sum of negative weights)."""
    positive, negative = _channel_sums(weights, layout)
    return float(max(positive.max(), -negative.min()))


def _conv_range(call: relax.Call, data: Interval) -> Interval:
    """An integer conv of data within ``data`` (and its zero padding) by constant weights: each
    output channel lies between its positive weights' sum times the low end plus its negative
    weights' sum times the high end, and the other way round."""
    weight = call.args[1]
    low, high = min(data[0], 0.0), max(data[1], 0.0)
    if (
        not isinstance(weight, tvm.ir.expr.GenericConst)
        or _dtype_range(call) == _UNBOUNDED
        or math.isinf(low)
        or math.isinf(high)
    ):
        return _UNBOUNDED
    positive, negative = _channel_sums(weight.value.numpy(), str(call.attrs.kernel_layout))
    result = (float((positive * low + negative * high).min()), float((positive * high + negative * low).max()))
    return result if _within(result, _dtype_range(call)) else _UNBOUNDED
