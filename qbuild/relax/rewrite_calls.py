"""A Relax pass that rewrites the calls of one operator: the shape every qbuild graph rewrite takes."""

from __future__ import annotations

from typing import Callable

import tvm
from tvm import relax

Rewrite = Callable[[relax.BlockBuilder, relax.Call], "relax.Expr | None"]


def rewrite_calls(name: str, op_name: str, rewrite: Rewrite) -> tvm.transform.Pass:
    """A module pass named ``name`` that replaces each call of the operator ``op_name`` (e.g.
    "relax.clip") in every Relax function by ``rewrite(builder, call)``; None keeps the call.
    Arguments are rewritten before the call that uses them."""

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = super().visit_call_(call)
            if isinstance(call.op, tvm.ir.Op) and call.op.name == op_name:
                rewritten = rewrite(self.builder_, call)
                return call if rewritten is None else rewritten
            return call

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        for gvar, func in mod.functions.items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return _apply
