"""Which kernel a widening cast fuses into: the one that reads the wide value, not the one that
writes the narrow value (``widen_in_consumers``).

TVM's ``FuseOps`` fuses an elementwise op into the kernel of the op that produced its input, and
a cast is elementwise. A residual add of two integer results, each first widened from the
activation dtype (int8) to int32, has two such casts; when both operands come straight from
convs (ResNet's blocks with a downsampling shortcut), one conv's kernel takes the add and the
other's takes its own widening cast, and so writes its result as int32: ResNet-50 int8's four
downsampling convs wrote 6 MB per inference where 1.5 MB hold the values, and the add's kernel
read them back at that width.

``widen_in_consumers`` runs between ``AnnotateTIROpPattern`` and ``FuseOps``: where an op reads
two or more such widened results, each produced by a kernel of its own that nothing else reads,
every such cast but the first operand's calls a copy of its PrimFunc marked broadcast (a preset
``op_pattern`` is what ``AnnotateTIROpPattern`` keeps and ``FuseOps`` reads). ``FuseOps`` grows a
conv's kernel only along elementwise edges, so the producer stops at the narrow value; a
broadcast op may still join a kernel that holds a conv already, the consumer's.

TVM 0.27 notes learned here: marked injective instead, the cast stays out of the producer too,
but ``FuseOps`` fuses an injective op into no kernel that holds a conv: it became a kernel of its
own that wrote the int32 tensor anyway. A ``GlobalVar`` made by hand has no type, which the
normalizer rejects when a call names it: ``BlockBuilder.add_func`` makes a typed one.
"""

from __future__ import annotations

import tvm
from tvm import relax

from qbuild.relax.graph import bindings, op_name, readers, rebind

ELEMENTWISE, BROADCAST, OPAQUE = 0, 1, 8  # TVM's OpPatternKind: kElemWise, kBroadcast, kOpaque


def widen_in_consumers() -> tvm.transform.Pass:
    """A module pass (after ``AnnotateTIROpPattern``, before ``FuseOps``): see the module doc."""

    @tvm.transform.module_pass(opt_level=0, name="qbuild.WidenInConsumers")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        casts = _casts_to_move(mod)
        if not casts:
            return mod
        builder = relax.BlockBuilder(mod.clone())  # a Python module pass receives the caller's module itself
        copies: dict[str, tvm.ir.GlobalVar] = {}
        moved = {}
        for binding in casts:
            call = binding.value
            cast = call.args[0]
            if cast.name_hint not in copies:
                copies[cast.name_hint] = builder.add_func(
                    mod[cast].with_attr("op_pattern", BROADCAST), f"{cast.name_hint}_in_consumer"
                )
            moved[binding.var] = relax.Call(call.op, [copies[cast.name_hint], *call.args[1:]], call.attrs, call.ty_args)
        out = builder.get()
        out["main"] = rebind(out["main"], moved)
        return out

    return _apply


def _casts_to_move(mod: tvm.IRModule) -> list[relax.VarBinding]:
    """The bindings of the widening casts to move into their consumers' kernels."""
    found = list(bindings(mod))
    producers = {binding.var: binding for binding in found}
    uses = {var: len(reading) for var, reading in readers(mod).items()}

    def widened_output(var: relax.Expr) -> relax.VarBinding | None:
        """The binding of ``var`` if it is the only use of a widening cast of a kernel's only output."""
        binding = producers.get(var)
        if binding is None or uses.get(var) != 1 or not _is_widening_cast(mod, binding):
            return None
        source = binding.value.args[1].fields[0]
        return binding if source in producers and uses.get(source) == 1 else None

    moved = []
    for binding in found:
        if op_name(binding.value) == "relax.call_tir":
            widened = [cast for arg in binding.value.args[1].fields if (cast := widened_output(arg)) is not None]
            moved.extend(widened[1:])
    return moved


def _is_widening_cast(mod: tvm.IRModule, binding: relax.VarBinding) -> bool:
    """Whether ``binding`` calls an elementwise PrimFunc that widens one integer tensor (signed, or
    unsigned: an imported model's uint8 codes) to a wider signed integer dtype (a cast, as
    ``LegalizeOps`` writes ``astype``)."""
    call = binding.value
    if op_name(call) != "relax.call_tir" or len(call.args[1].fields) != 1:
        return False
    func = mod[call.args[0]]
    if int(func.attrs.get("op_pattern", -1)) != ELEMENTWISE:
        return False
    source, result = call.args[1].fields[0].ty, binding.var.ty
    if not isinstance(source, relax.TensorType) or not isinstance(result, relax.TensorType):
        return False
    narrow, wide = tvm.DataType(str(source.dtype)), tvm.DataType(str(result.dtype))
    integer = narrow.type_code in (tvm.DataTypeCode.INT, tvm.DataTypeCode.UINT)
    return integer and wide.type_code == tvm.DataTypeCode.INT and narrow.bits < wide.bits
