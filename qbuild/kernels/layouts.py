"""The blocked layout of every conv's data and output: ``ConvertLayout`` with a plan of regions.

Most tensors get one register's lanes of channels per block (``conv2d.desired_layout``). On a
CPU with AMX, an AMX conv reads its input in rows of 64 channels (``amx``): from 16-channel
blocks it re-blocks its whole input in its padding stage, which for a 1x1 conv is a copy it
would not need otherwise. So AMX convs hand each other ``conv2d.AMX_BLOCK``-channel blocks
where they can.

A *region* is a set of tensors that non-conv ops join (elementwise ops, pooling, residual adds,
concatenation, splits and their tuples: ``ConvertLayout`` may give such ops' operands and results
one layout); a conv reads one region and writes another. A region is *wide* where every tensor in
it is 4-d with its channels in 64s (a tuple, a symbolic shape or a channel count of another kind
keeps it narrow), at least one conv writes it, every conv that writes it is an AMX conv
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
from qbuild.kernels.conv2d import AMX_BLOCK, CONV2D, NARROW
from qbuild.kernels.vectors import Vectors
from qbuild.relax.graph import op_name


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
    CPU has AMX, the conv is a dense byte conv (``_dense_bytes``) whose input and output channels
    come in 64s, and a tile divides its output row (``conv2d.fits_amx``)."""
    data, weight = call.args
    out_channels, in_channels = int(weight.ty.shape[0]), int(data.ty.shape[1])
    return (
        vectors.amx
        and _dense_bytes(call)
        and out_channels % AMX_BLOCK == 0
        and conv2d.fits_amx(in_channels, int(call.ty.shape[3]), out_channels, AMX_BLOCK)
    )


def wide_convs(func: relax.Function, vectors: Vectors) -> dict[relax.Call, tuple[bool, bool]]:
    """{conv call: (whether it reads a wide region, whether it writes one)} for the convs of
    ``func`` that touch a wide region (module doc); {} on a CPU without AMX."""
    if not vectors.amx:
        return {}
    parent: dict = {}

    def find(var: relax.Var) -> relax.Var:
        root = var
        while not parent.setdefault(root, root).same_as(root):
            root = parent[root]
        while not var.same_as(root):  # path compression: every var on the way points at the root
            parent[var], var = root, parent[var]
        return root

    convs = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if op_name(value) == CONV2D:
                convs.append((value, value.args[0], binding.var))
            elif _carries_layout(binding.var):
                for arg in relax.analysis.free_vars(value):
                    parent[find(arg)] = find(binding.var)
    tensors = [*parent, *(var for _, data, out in convs for var in (data, out) if isinstance(var, relax.Var))]
    narrow = {find(var) for var in tensors if not _in_64s(var)}
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
    """A dense (one group), plain (NCHW/OIHW, undilated: ``conv2d.plain``) conv of int8 or uint8
    data and int8 weights."""
    data, weight = call.args
    return (
        call.attrs.groups == 1
        and conv2d.plain(call)
        and str(data.ty.dtype) in ("int8", "uint8")
        and str(weight.ty.dtype) == "int8"
    )


def _carries_layout(var: relax.Var) -> bool:
    """Whether ``ConvertLayout`` may give the binding's result its operands' layout: a 4-d tensor
    (of any shape), or anything that is not a tensor (a tuple from ``split``, an element of one).
    Such a result joins the region of every var its value reads; a result of another rank (a
    flatten) is converted back to NCHW, and starts none."""
    ty = var.ty
    return not isinstance(ty, relax.TensorType) or ty.ndim == 4


def _in_64s(var: relax.Var) -> bool:
    """A 4-d tensor of a static shape whose channels come in 64s (what a wide region holds)."""
    ty = var.ty
    if not (
        isinstance(ty, relax.TensorType) and ty.ndim == 4 and all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape)
    ):
        return False
    return int(ty.shape[1]) % AMX_BLOCK == 0
