"""The blocked layout of every conv's data and output: ``ConvertLayout`` with a plan of regions.

Most tensors get one register's lanes of channels per block (``conv2d.desired_layout``). On a
CPU with AMX, an AMX conv reads its input in rows of 64 channels (``amx``): from 16-channel
blocks it re-blocks its whole input in its padding stage, which for a 1x1 conv is a copy it
would not need otherwise. So AMX convs hand each other ``conv2d.AMX_BLOCK``-channel blocks
where they can.

A *region* is a set of 4-d tensors that non-conv ops join (elementwise ops, pooling, residual
adds, concatenation: ``ConvertLayout`` gives such ops' operands and results one layout); a conv
reads one region and writes another. A region is *wide* where every tensor in it has its
channels in 64s, at least one conv writes it, every conv that writes it is an AMX conv
(``amx_conv``), and every conv that reads it is a dense byte conv (which takes 64-channel
blocks, AMX or not). A depthwise conv, a float conv or the stem touching a region keeps it narrow.

TVM 0.27 notes learned here: ``ConvertLayout`` fails ("Invalid layout axis 64b") where it would
have to re-block a tensor from one channel block to another (``NCHW16c`` -> ``NCHW64c``); to and
from ``NCHW`` it can. Regions make sure that it never has to. Its callback receives the
module's own call nodes, so a plan keyed by them reaches it.
"""

from __future__ import annotations

import tvm
from tvm import relax

from qbuild.kernels import conv2d
from qbuild.kernels.tiles import amx_tiles
from qbuild.kernels.vectors import Vectors

NARROW = (False, False)  # a conv that neither reads nor writes a wide region
CONV = "relax.nn.conv2d"


def convert_layouts(vectors: Vectors) -> tvm.transform.Pass:
    """``ConvertLayout`` to ``conv2d.desired_layout`` for a CPU with ``vectors``, with the wide
    regions of each Relax function (``wide_convs``)."""

    @tvm.transform.module_pass(opt_level=0, name="qbuild.ConvertLayouts")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        wide: dict = {}
        for func in mod.functions.values():
            if isinstance(func, relax.Function):
                wide.update(wide_convs(func, vectors))

        def desired(call: relax.Call) -> dict[str, list[str]]:
            return conv2d.desired_layout(call, vectors, wide.get(call, NARROW))

        return relax.transform.ConvertLayout({}, desired)(mod)

    return _apply


def amx_conv(call: relax.Call, vectors: Vectors) -> bool:
    """Whether a (still NCHW) conv runs on AMX tiles reading and writing 64-channel blocks: the
    CPU has AMX, the conv is dense and undilated, multiplies bytes (int8 weights), its input and
    output channels come in 64s, and a tile divides its output row."""
    data, weight = call.args
    out_channels, in_channels = int(weight.ty.shape[0]), int(data.ty.shape[1])
    return (
        vectors.amx
        and _dense_bytes(call)
        and in_channels % conv2d.AMX_BLOCK == out_channels % conv2d.AMX_BLOCK == 0
        and bool(amx_tiles(int(call.ty.shape[3]), out_channels // conv2d.AMX_BLOCK, conv2d.AMX_BLOCK))
    )


def wide_convs(func: relax.Function, vectors: Vectors) -> dict[relax.Call, tuple[bool, bool]]:
    """{conv call: (whether it reads a wide region, whether it writes one)} for the convs of
    ``func`` that touch a wide region (module doc); {} on a CPU without AMX."""
    if not vectors.amx:
        return {}
    parent: dict = {}

    def find(var: relax.Var) -> relax.Var:
        root = parent.setdefault(var, var)
        return var if root.same_as(var) else find(root)

    convs = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if _op(value) == CONV:
                convs.append((value, value.args[0], binding.var))
            elif isinstance(value, relax.Call) and _is_4d(binding.var):
                for arg in _tensor_args(value):
                    parent[find(arg)] = find(binding.var)
    tensors = [*parent, *(var for _, data, out in convs for var in (data, out) if _is_4d(var))]
    narrow = {find(var) for var in tensors if int(var.ty.shape[1]) % conv2d.AMX_BLOCK}
    writers: dict = {}
    readers: dict = {}
    for call, data, out in convs:
        writers.setdefault(find(out), []).append(call)
        if isinstance(data, relax.Var):
            readers.setdefault(find(data), []).append(call)
    wide = {
        root
        for root, calls in writers.items()
        if root not in narrow
        and all(amx_conv(call, vectors) for call in calls)
        and all(_dense_bytes(call) for call in readers.get(root, []))
    }
    plan = {}
    for call, data, out in convs:
        reads = isinstance(data, relax.Var) and find(data) in wide
        writes = find(out) in wide
        if reads or writes:
            plan[call] = (reads, writes)
    return plan


def _dense_bytes(call: relax.Call) -> bool:
    """A dense (one group), undilated NCHW conv of int8 or uint8 data and int8 weights."""
    data, weight = call.args
    attrs = call.attrs
    return (
        attrs.groups == 1
        and attrs.data_layout == "NCHW"
        and all(int(d) == 1 for d in attrs.dilation)
        and str(data.ty.dtype) in ("int8", "uint8")
        and str(weight.ty.dtype) == "int8"
    )


def _op(expr: relax.Expr) -> str | None:
    return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) else None


def _is_4d(expr: relax.Expr) -> bool:
    """A var of a 4-d tensor of known shape."""
    ty = getattr(expr, "ty", None) if isinstance(expr, relax.Var) else None
    return isinstance(ty, relax.TensorType) and ty.ndim == 4 and all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape)


def _tensor_args(call: relax.Call) -> list[relax.Var]:
    """The 4-d tensor vars a call reads, those inside tuples included."""
    found = []
    for arg in call.args:
        fields = arg.fields if isinstance(arg, relax.Tuple) else [arg]
        found += [field for field in fields if isinstance(field, relax.Var) and _is_4d(field)]
    return found
