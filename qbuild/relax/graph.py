"""Small helpers over a Relax ``main`` function: its bindings in order, substitution, extra outputs.

Notes on TVM 0.27's Python API that these helpers (and their callers) rely on:
a Relax var's name is ``var.name`` (no ``name_hint``); a tensor constant is
``tvm.ir.expr.GenericConst`` with its array in ``.value`` (no ``relax.Constant``/``.data``);
struct info is ``expr.ty`` (``relax.TensorType``); a scalar op argument such as clip's bound
arrives as ``IntImm``/``FloatImm``; ``relax.Call`` takes ``(op, args, attrs, ty_args)``;
``BlockBuilder.function(attrs=...)`` wants a plain dict (``dict(func.attrs)``), and there is no
``relax.bind`` in Python, hence ``substitute`` below. ``FoldBatchnormToConv2D`` needs the
weights bound as constants first.
"""

from __future__ import annotations

import numpy as np
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


def readers(mod: tvm.IRModule) -> dict:
    """{var: the bindings of ``main`` that read it, and None for ``main``'s result if it does}."""
    found: dict = {}
    for binding in bindings(mod):
        for var in relax.analysis.free_vars(binding.value):
            found.setdefault(var, []).append(binding)
    for var in relax.analysis.free_vars(mod["main"].body.body):
        found.setdefault(var, []).append(None)
    return found


def rebind(func: relax.Function, values: dict) -> relax.Function:
    """``func`` (its body a sequence of binding blocks) with each var in ``values`` bound to its
    value there instead."""
    blocks = []
    for block in func.body.blocks:
        rebound = [relax.VarBinding(b.var, values[b.var]) if b.var in values else b for b in block.bindings]
        kind = relax.DataflowBlock if isinstance(block, relax.DataflowBlock) else relax.BindingBlock
        blocks.append(kind(rebound))
    return relax.Function(func.params, relax.SeqExpr(blocks, func.body.body), func.ret_ty, func.is_pure, func.attrs)


def with_outputs(mod: tvm.IRModule, tensors: list) -> tvm.IRModule:
    """A module whose ``main`` computes what ``mod``'s does and returns ``tensors`` (vars of it) as a tuple."""
    main = mod["main"]
    bb = relax.BlockBuilder()
    mapping: dict = {param: param for param in main.params}  # a quantized first conv asks for the input's range
    with bb.function("main", list(main.params)):
        with bb.dataflow():
            for binding in bindings(mod):
                mapping[binding.var] = bb.emit(substitute(binding.value, mapping), name_hint=binding.var.name)
            out = bb.emit_output(relax.Tuple([mapping[var] for var in tensors]))
        bb.emit_func_output(out)
    return bb.get()


def const_array(expr: relax.Expr) -> np.ndarray | None:
    """The value of a tensor constant (TVM 0.27 calls it GenericConst), else None."""
    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.GenericConst) else None


def scalar_value(value) -> float:
    """A scalar op argument (IntImm/FloatImm, possibly wrapped in a PrimValue) as a float."""
    while hasattr(value, "value"):
        value = value.value
    return float(value)


def constant_bytes(mod: tvm.IRModule) -> int:
    """Bytes of the tensor constants ``main``'s bindings use (its weights, packed or not)."""
    seen: dict = {}  # keyed by the constant itself (TVM objects hash by identity): each counted once

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, tvm.ir.expr.GenericConst):  # sized from shape and dtype: no copy to NumPy
            seen[expr] = int(np.prod(expr.value.shape, dtype=np.int64)) * np.dtype(str(expr.value.dtype)).itemsize
        elif isinstance(expr, relax.Call):
            for arg in expr.args:
                visit(arg)
        elif isinstance(expr, relax.Tuple):
            for field in expr.fields:
                visit(field)

    for binding in bindings(mod):
        visit(binding.value)
    return sum(seen.values())
