"""Compile-time evaluation of the calls whose inputs are all constants, in one LLVM build.

After ``LegalizeOps`` a model's weights reach its convs through ``call_tir``s of packing
functions (layout transforms to ``OIHW[i]i[o]o``, channel pairs or quads, offset sums), each of
which Relax's ``FoldConstant`` evaluates by compiling it on its own: ResNet-50 has ~160, and
one LLVM build each took ~6 s of its ~17 s compile. ``fold_constant_calls`` finds every such call
(in program order, so a packing of a packed weight counts too), builds their PrimFuncs together
as one module, runs them and binds each result as a constant. ``FoldConstant`` then has
nothing left to build, and carries the constants into the calls that read them.
"""

from __future__ import annotations

import tvm
from tvm import relax

from qbuild.relax.graph import bindings, op_name, rebind


def fold_constant_calls() -> tvm.transform.Pass:
    """A module pass: every ``call_tir`` in ``main`` whose arguments are constants (or results
    of such calls) becomes the constant it computes."""

    @tvm.transform.module_pass(opt_level=0, name="qbuild.FoldConstantCalls")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        foldable = foldable_bindings(mod)
        if not foldable:
            return mod
        values = _evaluate(mod, foldable)
        main = mod["main"]
        mod = mod.clone()  # a Python module pass receives the caller's module itself
        mod["main"] = _with_constants(main, values)
        return mod

    return _apply


def foldable_bindings(mod: tvm.IRModule) -> list[relax.VarBinding]:
    """The bindings of ``main`` that call ``call_tir(f, args)`` on args that are constants or
    earlier such bindings."""
    known: set = set()
    found = []
    for binding in bindings(mod):
        value = binding.value
        if op_name(value) != "relax.call_tir":
            continue
        if len(value.args) > 2 or not isinstance(value.ty, relax.TensorType) or value.ty.shape is None:
            continue  # symbolic shape arguments, several outputs, an unknown shape: left to FoldConstant
        if all(isinstance(arg, tvm.ir.expr.GenericConst) or arg in known for arg in value.args[1].fields):
            known.add(binding.var)
            found.append(binding)
    return found


def _evaluate(mod: tvm.IRModule, foldable: list[relax.VarBinding]) -> dict:
    """Each binding's value (a runtime tensor), computed by its PrimFunc from one build of all of them."""
    functions = {}
    for binding in foldable:
        gvar = binding.value.args[0]
        functions[gvar.name_hint] = mod[gvar].with_attr("global_symbol", gvar.name_hint)
    library = tvm.compile(tvm.IRModule(functions), target=tvm.target.Target({"kind": "llvm", "opt-level": 0}))
    values: dict = {}
    for binding in foldable:
        call = binding.value
        inputs = [
            arg.value if isinstance(arg, tvm.ir.expr.GenericConst) else values[arg] for arg in call.args[1].fields
        ]
        output = tvm.runtime.empty(tuple(int(d) for d in call.ty.shape), str(call.ty.dtype), tvm.cpu())
        library[call.args[0].name_hint](*inputs, output)
        values[binding.var] = output
    return values


def _with_constants(func: relax.Function, values: dict) -> relax.Function:
    """``func`` with each var in ``values`` bound to its value as a constant."""
    # The dtype named: relax.const narrows an int64 array to int32 by itself (TVM 0.27).
    return rebind(func, {var: relax.const(value.numpy(), str(value.dtype)) for var, value in values.items()})
