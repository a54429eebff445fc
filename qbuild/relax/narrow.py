"""Integer arithmetic in int32 where the values are known to fit: a Relax pass.

The quantized graph rescales in int64 (``quantize.emit.requantize``): a conv's int32 sum plus its
bias, times a 31-bit multiplier, could leave int32. Most of that arithmetic provably stays inside
int32: relay's power-of-two rescales are shifts of a conv's sum, whose magnitude the data's range
and the weights bound (``ranges``), and a residual add adds two int8 tensors. In int64 each such
op takes two 512-bit registers per 16 values and a tensor passed between two fused functions
(the residual branch of ResNet-50's first block in each stage) is 8 bytes a value; narrowed, one
register and 4 bytes. Where the values and every intermediate are known to fit, the pass computes
an int64 op in int32 instead: ``astype(x, "int64")`` of an int32 ``x`` is ``x`` itself, and the
op's int64 constants become int32 constants. Consumers that stay int64 read the int32 result
widened again (and a cast down to a narrower type reads it directly), so every value is the same
as before; the bounds are ``ranges.value_ranges``'s, never narrower than the truth.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from qbuild.relax.graph import op_name
from qbuild.relax.ranges import Interval, bounds, value_ranges

# The elementwise ops computed in int32 where their values fit (clip is rewritten to these first).
NARROWABLE = (
    "relax.astype",
    "relax.add",
    "relax.subtract",
    "relax.multiply",
    "relax.right_shift",
    "relax.left_shift",
    "relax.maximum",
    "relax.minimum",
)
INT32: Interval = (float(np.iinfo(np.int32).min), float(np.iinfo(np.int32).max))
SHIFTS = ("relax.right_shift", "relax.left_shift")
SHIFT_LIMIT = 31  # the widest shift an int32 takes


def _fits(interval: Interval) -> bool:
    return INT32[0] <= interval[0] and interval[1] <= INT32[1]


def _dtype(expr: relax.Expr) -> str:
    return str(getattr(expr.ty, "dtype", ""))


def narrowable_bindings(func: relax.Function) -> set[relax.Var]:
    """The int64 dataflow variables of ``func`` whose op may run in int32: its result and every
    integer operand are known to lie in int32."""
    ranges = value_ranges(func)

    def operand_range(arg: relax.Expr) -> Interval | None:
        """Bounds of an integer operand (None: not an integer)."""
        return bounds(arg, ranges) if _dtype(arg).startswith(("int", "uint")) else None

    def narrowable(var: relax.Var, value: relax.Expr) -> bool:
        if not (
            isinstance(var, relax.DataflowVar)
            and _dtype(var) == "int64"
            and op_name(value) in NARROWABLE
            and _fits(bounds(var, ranges))
        ):
            return False
        operands = [operand_range(arg) for arg in value.args]
        if any(bounds is None or not _fits(bounds) for bounds in operands):
            return False
        # an int32 shift by 32 or more is undefined (x86 takes the amount modulo 32)
        return op_name(value) not in SHIFTS or (0 <= operands[1][0] and operands[1][1] <= SHIFT_LIMIT)

    return {
        binding.var
        for block in getattr(func.body, "blocks", [])
        for binding in block.bindings
        if narrowable(binding.var, binding.value)
    }


@relax.expr_functor.mutator
class _Narrower(relax.PyExprMutator):
    """Rebinds each narrowable variable to its int32 op, and the original name to that widened."""

    def __init__(self, mod: tvm.IRModule, narrowable: set[relax.Var]):
        super().__init__(mod)
        self.narrowable = narrowable
        self.narrow: dict[relax.Var, relax.Expr] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        var, value = binding.var, binding.value
        if var in self.narrowable:
            narrow = self._narrow_call(value)
            self.narrow[var] = narrow
            self.set_var_remap(var, self.builder_.emit(relax.op.astype(narrow, "int64")))
            return
        super().visit_var_binding_(binding)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if op_name(call) == "relax.astype" and call.args[0] in self.narrow and _dtype(call) != "int64":
            return relax.op.astype(self.narrow[call.args[0]], call.attrs.dtype)  # a cast down reads the int32 value
        return super().visit_call_(call)

    def _narrow_call(self, call: relax.Call) -> relax.Expr:
        if op_name(call) == "relax.astype":
            source = self._narrow_operand(call.args[0])
            return source if _dtype(source) == "int32" else self.builder_.emit(relax.op.astype(source, "int32"))
        operands = [self._narrow_operand(arg) for arg in call.args]
        return self.builder_.emit(getattr(relax.op, op_name(call).split(".")[-1])(*operands))

    def _narrow_operand(self, arg: relax.Expr) -> relax.Expr:
        if arg in self.narrow:
            return self.narrow[arg]
        if isinstance(arg, tvm.ir.expr.GenericConst) and _dtype(arg) == "int64":
            return relax.const(arg.value.numpy().astype(np.int32), "int32")
        arg = self.visit_expr(arg)
        return self.builder_.emit(relax.op.astype(arg, "int32")) if _dtype(arg) == "int64" else arg


def narrow_integers() -> tvm.transform.Pass:
    """The module pass: every Relax function's narrowable int64 ops in int32 (then the int64
    copies nothing reads are dropped)."""

    @tvm.transform.module_pass(opt_level=0, name="qbuild.NarrowIntegers")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                narrower = _Narrower(mod, narrowable_bindings(func))
                narrower.builder_.update_func(gvar, narrower.visit_expr(func))
                mod = narrower.builder_.get()
        return relax.transform.DeadCodeElimination()(mod)

    return _apply
