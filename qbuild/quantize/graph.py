"""Small helpers over a Relax ``main`` function: its bindings in order, substitution, extra outputs."""

from __future__ import annotations

import tvm
from tvm import relax


def bindings(mod: tvm.IRModule) -> list:
    """Every VarBinding of ``main``, in order."""
    body = mod["main"].body
    return [binding for block in body.blocks for binding in block.bindings]


def op_name(expr: relax.Expr) -> str | None:
    """``"relax.nn.conv2d"`` for a call of that op, else None."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def substitute(expr: relax.Expr, mapping: dict) -> relax.Expr:
    """``expr`` with the vars in ``mapping`` replaced (calls, tuples and projections rebuilt)."""
    if isinstance(expr, relax.Var):
        return mapping.get(expr, expr)
    if isinstance(expr, relax.Call):
        args = [substitute(arg, mapping) for arg in expr.args]
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([substitute(field, mapping) for field in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(substitute(expr.tuple_value, mapping), expr.index)
    return expr


def with_outputs(mod: tvm.IRModule, tensors: list) -> tvm.IRModule:
    """A module whose ``main`` computes what ``mod``'s does and returns ``tensors`` (vars of it) as a tuple."""
    main = mod["main"]
    bb = relax.BlockBuilder()
    mapping: dict = {}
    with bb.function("main", list(main.params)):
        with bb.dataflow():
            for binding in bindings(mod):
                mapping[binding.var] = bb.emit(substitute(binding.value, mapping), name_hint=binding.var.name)
            out = bb.emit_output(relax.Tuple([mapping[var] for var in tensors]))
        bb.emit_func_output(out)
    return bb.get()
