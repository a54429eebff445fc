"""Blocked-layout convolutions: which layout each conv2d gets, and its TE compute.

Layout (chosen per call by ``desired_layout``, applied by Relax's ``ConvertLayout``, which
carries it through the elementwise ops in between):

- data ``NCHW[c]c``, weights ``OIHW[i]i[o]o``: the ``o`` output channels of a block are the
  vector lanes, so every weight load feeds ``o`` outputs and every input value is broadcast.
- depthwise: data ``NCHW[c]c``, weights ``OIHW1i[c]o``; lanes are channels again.
- grouped (not depthwise) or dilated convs keep NCHW and the stock TOPI legalization.

A conv whose input channels split into no block of at least 4 (an RGB stem: 3) reads NCHW data
(``ConvertLayout`` cannot block 3 channels) but writes the blocked layout, so the ops after it
(ReLU, pooling) run blocked too; ``legalize`` packs its data as one block of all its channels.

The integer compute reads int16 operands: weights are widened and repacked at compile time to
``(O/o, I/i, KH, KW, i/2, o, 2)`` (each output lane's channel pair adjacent, the operand order
of ``vpmaddwd``, see ``intrin``), activations are widened in the padding stage. An integer conv
whose channel block is odd (a quantized RGB stem) cannot pair channels: it takes the float
compute's loop structure with operands widened to int32 (plain vector multiply-adds).

An int8 conv whose input is known to lie in [0, 127] (after a ReLU and a requantize clamp:
``qbuild.relax.ranges``) and whose blocks hold whole channel quads reads bytes: weights repacked to
``(O/o, I/i, KH, KW, i/4, o, 4)`` int8, the data read as uint8 as it is; on AVX2 its products
are formed by ``vpmaddubsw``, which cannot saturate on such data (``intrin``), and its block is
named with ``SEVEN_BIT`` so that the schedule knows. Where, besides, every partial sum of such a
conv is known to fit in int16 (the data's bound times the largest positive or negative weight sum
of an output channel: narrow codes, e.g. 2-bit activations and weights), and the CPU has no
VNNI, the products accumulate in int16 (``INT16_SUMS``: a block of ``2 o`` lanes, the two
halves of each channel quad side by side, summed into int32 by ``PAIR_SUM_BLOCK`` after the
reduction), which drops ``vpmaddwd`` from the inner loop (``intrin``). On a CPU with AVX-512 VNNI
(``Vectors.vnni``), every other int8 conv whose blocks hold whole channel quads
reads bytes too: weights repacked to ``(O/o, I/i, KH, KW, i/4, o, 4)`` int8
(``vpdpbusd``'s operand order), activations made unsigned in the padding stage (x + 128, the
padding itself 128), and the sum then corrected exactly per output channel by
``128 * sum(weights)``, folded at compile time (``_offset_sums``). A conv of uint8 data (an
imported model's unsigned codes, ``qbuild.quantize.zero_point``) reads it as it is on such a CPU
(``UNSIGNED_BYTES``), and without VNNI takes the byte compute only where its data is known to be
at most 127, else the int16 one.

A depthwise int8 conv whose input is known to lie in [0, 127] reads bytes as well, four
horizontal taps of a channel at a time (``DEPTHWISE_TAPS``): four neighbouring pixels of a channel
block are one 64-byte load of the padded uint8 data, its weights are repacked at compile time to
``(C/c, KH, ceil(KW/4), c, 4)`` (taps past the kernel's width zero), and one lane-wise
``vpdpbusd`` (or ``vpmaddubsw`` pair on AVX2, ``intrin``) multiplies four taps of every lane: a
3x3 window is three calls per block of channels, not nine multiplies and nine adds in int32.

On an AArch64 CPU with the dot products (``Vectors.sdot``), every int8 conv whose blocks hold
whole channel quads reads bytes as they are, signed: weights repacked to ``(O/o, I/i, KH, KW,
i/4, o, 4)`` int8, as for VNNI, but no offset, since ``sdot`` multiplies int8 by int8
(``SIGNED_BYTES``; ``intrin``).

On a CPU with AMX (``Vectors.amx``), a byte conv whose input channels come in 64s, whose output
blocks are 16 or 64 channels and whose output a tile divides (``tiles.amx_tiles``) reads its data
as it is, signed or unsigned (``tdpbssd`` / ``tdpbusd``: no offset), in blocks of 64 channels
(the padding stage re-blocks other blocks) and weights grouped to ``(O/o, I/64, KH, KW, 16, o,
4)``: one tile row per output pixel (``amx``); its block is named with ``AMX``. Where AMX convs
hand each other their tensors, those are ``NCHW64c`` (``qbuild.kernels.layouts``): a 1x1 conv then
reads its input where it lies, and the tiles' 16-channel columns sit side by side in the
output's blocks.
"""

from __future__ import annotations

from typing import Callable

from tvm import relax, te, tirx

from qbuild.kernels import amx
from qbuild.kernels.vectors import AVX2, Vectors
from qbuild.relax.fusion import OPAQUE

CONV_BLOCK = "qbuild_conv2d_nchwc"  # the schedule finds the convolution by this name
PAD_BLOCK = "qbuild_pad"
UNSIGNED_OFFSET = 128  # int8 + 128 = uint8: the VNNI compute's activations
SEVEN_BIT = "_u7"  # suffix of the conv block whose uint8 data is known to be at most 127
UNSIGNED_BYTES = "_ub"  # suffix of the conv block of uint8 data over its whole range (VNNI)
INT16_SUMS = "_u7_acc16"  # suffix of the byte conv block whose sums are known to fit in int16
PAIR_SUM_BLOCK = "qbuild_pair_sum"  # the int32 sum of the int16 halves
INT16_MAX = 32767
AMX = "_amx"  # suffix of the byte conv block whose tile runs on AMX (``amx``)
AMX_BLOCK = amx.DEPTH  # channels of the blocks AMX convs hand each other: a tile row, and 4 tiles of 16 columns
NARROW = (False, False)  # (wide data, wide output) of a conv outside the AMX convs' regions (``layouts``)
CONV2D = "relax.nn.conv2d"
SIGNED_BYTES = "_s8"  # suffix of the conv block of int8 data x int8 weight quads (AArch64 sdot)
DEPTHWISE = "_dw"  # suffix of a depthwise conv block (``DEPTHWISE_TAPS`` too)
DEPTHWISE_TAPS = "_dw_taps"  # suffix of the depthwise byte conv block: four taps per lane
TAPS = 4  # horizontal taps a lane multiplies in one call (vpdpbusd's quad)


def plain(call: relax.Call) -> bool:
    """NCHW/OIHW, undilated: the convolutions qbuild's computes cover."""
    attrs = call.attrs
    return attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW" and all(int(d) == 1 for d in attrs.dilation)


def desired_layout(call: relax.Call, vectors: Vectors = AVX2, wide: tuple[bool, bool] = NARROW) -> dict[str, list[str]]:
    """``ConvertLayout`` callback (``vectors`` bound): the blocked layout for a conv2d, {} for
    every other op. A block is one register's lanes where the channels allow (``Vectors.block``).

    Every tensor gets the same block for a given channel count (outside the AMX convs' wide
    regions, ``wide``), so a residual add always sees its two operands in one layout; the output
    layout is named too (ConvertLayout would give it the input's block, which differs where, say,
    12 channels go in and 16 come out). A conv whose input channels do not split into blocks of
    at least 4 (an RGB stem) reads NCHW (ConvertLayout fails on a 3c layout) and writes the
    blocked layout (``legalize`` blocks its data itself).
    ``wide``: whether a dense conv's data and output take ``AMX_BLOCK`` channels per block
    instead (``qbuild.kernels.layouts``: the tensors that AMX convs hand each other)."""
    if call.op.name != CONV2D:
        return {}
    data, weight = call.args[0].ty, call.args[1].ty
    out_channels, in_channels = int(weight.shape[0]), int(data.shape[1])
    ic, oc = vectors.block(in_channels), vectors.block(out_channels)
    if not plain(call):
        return {CONV2D: ["NCHW", "OIHW"]}
    if call.attrs.groups == 1 and ic < 4:
        return {CONV2D: ["NCHW", "OIHW", f"NCHW{oc}c"]}
    if call.attrs.groups == 1:
        ic, oc = (AMX_BLOCK if is_wide else block for is_wide, block in zip(wide, (ic, oc)))
        return {CONV2D: [f"NCHW{ic}c", f"OIHW{ic}i{oc}o", f"NCHW{oc}c"]}
    if call.attrs.groups == in_channels == out_channels and int(weight.shape[1]) == 1:
        return {CONV2D: [f"NCHW{ic}c", f"OIHW1i{ic}o"]}  # lanes are channels: in = out
    return {CONV2D: ["NCHW", "OIHW"]}


def legalize(
    bb: relax.BlockBuilder,
    call: relax.Call,
    vectors: Vectors = AVX2,
    data_max: Callable[[relax.Expr], float | None] = lambda _: None,
    weight_sum: Callable[[relax.Expr], float | None] = lambda _: None,
) -> relax.Expr:
    """``LegalizeOps`` override for conv2d: blocked layouts get our computes, others TOPI's.
    ``vectors``: the CPU's registers (the stem's output block; ``vectors.vnni``: see below).
    ``data_max(data)``: the largest value the data takes where it is known to lie in [0, 127]
    (``qbuild.relax.ranges``), else None; ``weight_sum(weight)``: the largest magnitude of an output channel's
    positive or negative weight sum, where the weights are known constants, else None.
    An int8 conv of such data takes the byte compute of ``vpmaddubsw`` / ``vpdpbusd`` (without
    ``vnni`` and with sums that fit in int16, the int16-accumulating one); else, with ``vnni``,
    the offset byte compute of ``vpdpbusd``; with ``amx`` and a conv that fits its tiles, the AMX
    compute (any int8 or uint8 data); with ``sdot`` (AArch64), the signed byte compute;
    else the int16 one of ``vpmaddwd``. uint8 data takes the byte computes as it is where the
    CPU has VNNI (a depthwise conv's too), else as int8 data would."""
    attrs = call.attrs
    data, weight = call.args
    if attrs.data_layout == "NCHW":
        if plain(call) and attrs.groups == 1 and attrs.out_layout != "NCHW":
            return _legalize_stem(bb, call, vectors, data_max)
        from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

        return _nn_conv2d(bb, call)
    args = ([int(s) for s in attrs.strides], [int(p) for p in attrs.padding], attrs.out_dtype or data.ty.dtype)
    byte_data = data.ty.dtype in ("int8", "uint8") and weight.ty.dtype == "int8"
    unsigned = byte_data and data.ty.dtype == "uint8"  # an imported model's codes, as they are
    vnni = vectors.vnni
    if attrs.groups > 1:
        top = data_max(data) if byte_data else None
        if top is not None or (unsigned and vnni):
            taps = bb.emit_te(_tap_weights, weight, primfunc_name_hint="pack_weights_taps")
            suffix = "" if top is not None else UNSIGNED_BYTES
            kw = int(weight.ty.shape[3])
            return bb.call_te(_depthwise_taps, data, taps, kw, *args, suffix, primfunc_name_hint="conv2d_dw_taps_nchwc")
        return bb.call_te(_depthwise, data, weight, *args, primfunc_name_hint="conv2d_dw_nchwc")
    if data.ty.dtype == "float32" or int(data.ty.shape[4]) % 2:
        return bb.call_te(_conv_nchwc, data, weight, *args, primfunc_name_hint="conv2d_nchwc")
    byte_quads = byte_data and int(data.ty.shape[4]) % 4 == 0
    if byte_quads and not unsigned and vectors.sdot:
        quads = bb.emit_te(_group_weights, weight, 4, "int8", primfunc_name_hint="pack_weights_quads")
        return bb.call_te(_conv_nchwc_s8, data, quads, *args, primfunc_name_hint="conv2d_nchwc_s8")
    if byte_quads and vectors.amx and _fits_amx(call):
        quads = bb.emit_te(_group_weights, weight, 4, "int8", amx.DEPTH, primfunc_name_hint="pack_weights_quads")
        return bb.call_te(_conv_amx, data, quads, *args, primfunc_name_hint="conv2d_nchwc_amx")
    top = data_max(data) if byte_quads else None
    if top is not None or (byte_quads and vnni):
        quads = bb.emit_te(_group_weights, weight, 4, "int8", primfunc_name_hint="pack_weights_quads")
        bound = weight_sum(weight)
        if top is not None and not vnni and bound is not None and top * bound <= INT16_MAX:
            return bb.call_te(_conv_nchwc_acc16, data, quads, *args, primfunc_name_hint="conv2d_nchwc_acc16")
        if top is not None or unsigned:
            suffix, hint = (SEVEN_BIT, "conv2d_nchwc_u7") if top is not None else (UNSIGNED_BYTES, "conv2d_nchwc_ub")
            return bb.call_te(_conv_nchwc_unsigned, data, quads, *args, suffix, primfunc_name_hint=hint)
        sums = bb.emit_te(_offset_sums, weight, primfunc_name_hint="offset_sums")
        return bb.call_te(_conv_nchwc_u8, data, quads, sums, *args, primfunc_name_hint="conv2d_nchwc_u8")
    pairs = bb.emit_te(_group_weights, weight, 2, "int16", primfunc_name_hint="pack_weights_i16")
    return bb.call_te(_conv_nchwc_int, data, pairs, *args, primfunc_name_hint="conv2d_nchwc_int")


def _fits_amx(call: relax.Call) -> bool:
    """Whether a blocked int8 conv can run on AMX tiles (``fits_amx``)."""
    data, _ = call.args
    _, chunks, _, _, data_block = (int(d) for d in data.ty.shape)
    _, out_blocks, _, width, out_block = (int(d) for d in call.ty.shape)
    return fits_amx(chunks * data_block, width, out_blocks * out_block, out_block)


def fits_amx(in_channels: int, width: int, out_channels: int, out_block: int) -> bool:
    """Whether a byte conv can run on AMX tiles: input channels in rows of 64, output blocks of 16
    or 64 channels, and a tile (``tiles.amx_tiles``) that divides its output."""
    from qbuild.kernels.tiles import amx_tiles

    return (
        in_channels % amx.DEPTH == 0
        and out_block in (amx.COLUMNS, AMX_BLOCK)
        and bool(amx_tiles(width, out_channels // out_block, out_block))
    )


def _legalize_stem(
    bb: relax.BlockBuilder, call: relax.Call, vectors: Vectors, data_max: Callable[[relax.Expr], float | None]
) -> relax.Expr:
    """An NCHW conv with a blocked output: its data packed, with the conv's zero padding, as one
    block of all its channels and its weights to match, then the blocked compute (which has no
    padding stage left: one pass over the image, not two). An integer conv's block is padded with
    zero channels (and zero weights) to whole channel quads, so that its products are byte quads or
    int16 pairs (an RGB stem: 4 channels, one ``vpdpbusd`` per tap) rather than widened to int32."""
    data, weight = call.args
    out_channels, in_channels, kh, kw = (int(d) for d in weight.ty.shape)
    oc = vectors.block(out_channels)
    integer = str(data.ty.dtype) in ("int8", "uint8")
    block = -(-in_channels // TAPS) * TAPS if integer else in_channels
    top, left, bottom, right = (int(p) for p in call.attrs.padding)
    height, width = int(data.ty.shape[2]), int(data.ty.shape[3])

    def value(tensor: te.Tensor, index: tuple, conditions: list) -> tirx.PrimExpr:
        """``tensor[index]`` where every condition holds, else a zero."""
        if not conditions:
            return tensor[index]
        return tirx.if_then_else(tirx.all(*conditions), tensor[index], tirx.const(0, tensor.dtype))

    def pixel(d: te.Tensor, n, y, x, i) -> tirx.PrimExpr:
        conditions = [y >= top, y < height + top, x >= left, x < width + left] if top or left or bottom or right else []
        conditions += [i < in_channels] if block != in_channels else []
        return value(d, (n, tirx.min(i, in_channels - 1), y - top, x - left), conditions)

    blocked = bb.emit_te(
        lambda d: te.compute(
            (d.shape[0], 1, height + top + bottom, width + left + right, block),
            lambda n, _c, y, x, i: pixel(d, n, y, x, i),
            name="pack_data",
        ),
        data,
        primfunc_name_hint="pack_data",
        # Integer data: the quantize before it stays a vectorized pass of its own (fused in, it
        # would run per packed byte, one channel at a time).
        primfunc_attrs={"op_pattern": OPAQUE} if integer else None,
    )
    packed = bb.emit_te(
        lambda w: te.compute(
            (out_channels // oc, 1, kh, kw, block, oc),
            lambda o, _c, r, q, i, b: value(
                w, (o * oc + b, tirx.min(i, in_channels - 1), r, q), [i < in_channels] if block != in_channels else []
            ),
            name="pack_weights",
        ),
        weight,
        primfunc_name_hint="pack_weights",
    )
    attrs = call.attrs
    inner = relax.op.nn.conv2d(
        blocked,
        packed,
        attrs.strides,
        0,
        attrs.dilation,
        attrs.groups,
        data_layout=f"NCHW{block}c",
        kernel_layout=f"OIHW{block}i{oc}o",
        out_layout=attrs.out_layout,
        out_dtype=str(call.ty.dtype),
    )
    return legalize(bb, bb.normalize(inner), vectors, lambda _: data_max(data))


def _pad(data: te.Tensor, padding: list[int], dtype: str, offset: int = 0, block: int | None = None) -> te.Tensor:
    """Zero padding, the values cast to ``dtype``; with ``offset``, ``offset`` is added to every
    value (the padding included) through int32; with ``block``, the channels re-blocked to blocks
    of ``block``. With nothing to pad, cast, offset or re-block (a float 1x1 conv), ``data``
    itself: the conv reads its input where it lies, no copy of it is made."""
    _, chunks, height, width, data_block = data.shape
    block = block or int(data_block)
    if not any(padding) and not offset and data.dtype == dtype and block == int(data_block):
        return data
    top, left, bottom, right = padding

    def value(n, c, y, x, b):
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        if block == int(data_block):
            inner = data[n, c, y - top, x - left, b]
        else:
            channel = c * block + b
            inner = data[n, channel // data_block, y - top, x - left, channel % data_block]
        shifted = (inner.astype("int32") + offset).astype(dtype) if offset else inner.astype(dtype)
        return tirx.if_then_else(inside, shifted, tirx.const(offset, dtype))

    shape = (data.shape[0], chunks * data_block // block, height + top + bottom, width + left + right, block)
    return te.compute(shape, value, name=PAD_BLOCK)


def _out_shape(padded: te.Tensor, kh: int, kw: int, strides: list[int], blocks: int, block: int):
    height, width = int(padded.shape[2]), int(padded.shape[3])
    return (padded.shape[0], blocks, (height - kh) // strides[0] + 1, (width - kw) // strides[1] + 1, block)


def _reduce_axes(**extents: int) -> list[te.IterVar]:
    """One reduction axis per keyword, in order, named by it."""
    return [te.reduce_axis((0, extent), name) for name, extent in extents.items()]


def _conv_nchwc(
    data: te.Tensor, weight: te.Tensor, strides: list[int], padding: list[int], out_dtype: str
) -> te.Tensor:
    """out[n, o, y, x, b] = sum data[n, c, y*s+r, x*s+q, i] * weight[o, c, r, q, i, b], in ``out_dtype``."""
    padded = _pad(data, padding, data.dtype)
    oc_chunks, ic_chunks, kh, kw, ic_block, oc_block = (int(d) for d in weight.shape)
    c, r, q, i = _reduce_axes(c=ic_chunks, r=kh, q=kw, i=ic_block)
    sy, sx = strides
    return te.compute(
        _out_shape(padded, kh, kw, strides, oc_chunks, oc_block),
        lambda n, o, y, x, b: te.sum(
            padded[n, c, y * sy + r, x * sx + q, i].astype(out_dtype) * weight[o, c, r, q, i, b].astype(out_dtype),
            axis=[c, r, q, i],
        ),
        name=CONV_BLOCK,
    )


def _group_weights(weight: te.Tensor, group: int, dtype: str, block: int | None = None) -> te.Tensor:
    """(O/o, I/i, KH, KW, i, o) -> (O/o, I/i, KH, KW, i/g, o, g) in ``dtype``: each output lane's
    ``group`` input channels adjacent, the operand order of the intrinsic that takes them (2 int16:
    ``vpmaddwd``; 4 int8: ``vpdpbusd``, ``vpmaddubsw``, AMX's ``tdpbssd``); with ``block``, input
    channel blocks of ``block`` in place of ``i`` (AMX's 64)."""
    oc_chunks, ic_chunks, kh, kw, ic_block, oc_block = weight.shape
    block = block or int(ic_block)

    def value(o, c, r, q, p, b, t):
        if block == int(ic_block):
            return weight[o, c, r, q, p * group + t, b].astype(dtype)
        channel = c * block + p * group + t
        return weight[o, channel // ic_block, r, q, channel % ic_block, b].astype(dtype)

    return te.compute(
        (oc_chunks, ic_chunks * ic_block // block, kh, kw, block // group, oc_block, group),
        value,
        name=f"pack_weights_{dtype}x{group}",
    )


def _grouped_conv(padded: te.Tensor, grouped: te.Tensor, strides: list[int], accumulate: str, name: str) -> te.Tensor:
    """Padded data x grouped weights (``_group_weights``), accumulated in ``accumulate``."""
    oc_chunks, ic_chunks, kh, kw, groups, oc_block, group = (int(d) for d in grouped.shape)
    c, r, q, p, t = _reduce_axes(c=ic_chunks, r=kh, q=kw, p=groups, t=group)
    sy, sx = strides
    return te.compute(
        _out_shape(padded, kh, kw, strides, oc_chunks, oc_block),
        lambda n, o, y, x, b: te.sum(
            padded[n, c, y * sy + r, x * sx + q, p * group + t].astype(accumulate)
            * grouped[o, c, r, q, p, b, t].astype(accumulate),
            axis=[c, r, q, p, t],
        ),
        name=name,
    )


def _conv_nchwc_int(
    data: te.Tensor, pairs: te.Tensor, strides: list[int], padding: list[int], out_dtype: str
) -> te.Tensor:
    """Integer: int16-widened data and paired weights, accumulated in ``out_dtype`` (int32)."""
    return _grouped_conv(_pad(data, padding, "int16"), pairs, strides, out_dtype, CONV_BLOCK)


def _conv_nchwc_s8(
    data: te.Tensor, quads: te.Tensor, strides: list[int], padding: list[int], out_dtype: str
) -> te.Tensor:
    """Integer, signed bytes: int8 data as it is x int8 weight quads, accumulated in ``out_dtype`` (int32)."""
    return _grouped_conv(_pad(data, padding, "int8"), quads, strides, out_dtype, CONV_BLOCK + SIGNED_BYTES)


def _offset_sums(weight: te.Tensor) -> te.Tensor:
    """(O/o, o) int32: ``UNSIGNED_OFFSET`` x each output channel's weight sum, what the offset adds."""
    oc_chunks, ic_chunks, kh, kw, ic_block, oc_block = (int(d) for d in weight.shape)
    c, r, q, i = _reduce_axes(c=ic_chunks, r=kh, q=kw, i=ic_block)
    return te.compute(
        (oc_chunks, oc_block),
        lambda o, b: te.sum(weight[o, c, r, q, i, b].astype("int32") * UNSIGNED_OFFSET, axis=[c, r, q, i]),
        name="offset_sums",
    )


def _conv_amx(data: te.Tensor, quads: te.Tensor, strides: list[int], padding: list[int], out_dtype: str) -> te.Tensor:
    """Integer, AMX: int8 or uint8 data as it is, in ``amx.DEPTH``-channel blocks, x int8 weight
    quads (``_group_weights`` with ``amx.DEPTH``), accumulated in int32."""
    padded = _pad(data, padding, str(data.dtype), block=amx.DEPTH)
    conv = _grouped_conv(padded, quads, strides, "int32", CONV_BLOCK + AMX)
    if out_dtype == "int32":
        return conv
    return te.compute(conv.shape, lambda *i: conv(*i).astype(out_dtype), name="qbuild_amx_out")


def _conv_nchwc_u8(
    data: te.Tensor, quads: te.Tensor, sums: te.Tensor, strides: list[int], padding: list[int], out_dtype: str
) -> te.Tensor:
    """Integer, VNNI form: unsigned (offset) data x int8 weight quads in int32, minus the offset's share."""
    padded = _pad(data, padding, "uint8", UNSIGNED_OFFSET)
    conv = _grouped_conv(padded, quads, strides, "int32", CONV_BLOCK)
    return te.compute(
        conv.shape,
        lambda n, o, y, x, b: (conv[n, o, y, x, b] - sums[o, b]).astype(out_dtype),
        name="qbuild_unsigned_offset",
    )


def _conv_nchwc_unsigned(
    data: te.Tensor, quads: te.Tensor, strides: list[int], padding: list[int], out_dtype: str, suffix: str
) -> te.Tensor:
    """Integer, data read as uint8 as it is (no offset) x int8 weight quads. ``suffix`` names the
    block for the schedule: ``SEVEN_BIT`` for data known to lie in [0, 127], so that a
    ``vpmaddubsw`` pair sum (at most 2 x 127 x 128) cannot saturate; ``UNSIGNED_BYTES`` for uint8
    data over its whole range, for ``vpdpbusd`` only."""
    conv = _grouped_conv(_pad(data, padding, "uint8"), quads, strides, "int32", CONV_BLOCK + suffix)
    return te.compute(conv.shape, lambda *i: conv(*i).astype(out_dtype), name="qbuild_unsigned_out")


def _conv_nchwc_acc16(
    data: te.Tensor, quads: te.Tensor, strides: list[int], padding: list[int], out_dtype: str
) -> te.Tensor:
    """Integer, data in [0, 127] and every partial sum known to fit in int16 (``legalize``): the
    products of each half h of a channel quad accumulated in int16 in lane 2b + h of a block of
    twice the output lanes (the lanes of ``vpmaddubsw``), the two halves of each output channel
    added in ``out_dtype`` once the reduction is done."""
    padded = _pad(data, padding, "uint8")
    oc_chunks, ic_chunks, kh, kw, quad_count, oc_block, quad = (int(d) for d in quads.shape)
    half = quad // 2
    c, r, q, p, t = _reduce_axes(c=ic_chunks, r=kh, q=kw, p=quad_count, t=half)
    sy, sx = strides
    shape = _out_shape(padded, kh, kw, strides, oc_chunks, oc_block)
    halves = te.compute(
        (*shape[:-1], 2 * oc_block),
        lambda n, o, y, x, lane: te.sum(
            padded[n, c, y * sy + r, x * sx + q, p * quad + lane % 2 * half + t].astype("int16")
            * quads[o, c, r, q, p, lane // 2, lane % 2 * half + t].astype("int16"),
            axis=[c, r, q, p, t],
        ),
        name=CONV_BLOCK + INT16_SUMS,
    )
    return te.compute(
        shape,
        lambda n, o, y, x, b: (
            halves[n, o, y, x, b * 2].astype(out_dtype) + halves[n, o, y, x, b * 2 + 1].astype(out_dtype)
        ),
        name=PAIR_SUM_BLOCK,
    )


def _depthwise(data: te.Tensor, weight: te.Tensor, strides: list[int], padding: list[int], out_dtype: str) -> te.Tensor:
    """Depthwise: out[n, c, y, x, b] = sum data[n, c, y*s+r, x*s+q, b] * weight[c, 0, r, q, 0, b]."""
    padded = _pad(data, padding, data.dtype)
    chunks, _, kh, kw, _, block = (int(d) for d in weight.shape)
    r, q = _reduce_axes(r=kh, q=kw)
    sy, sx = strides
    return te.compute(
        _out_shape(padded, kh, kw, strides, chunks, block),
        lambda n, c, y, x, b: te.sum(
            padded[n, c, y * sy + r, x * sx + q, b].astype(out_dtype) * weight[c, 0, r, q, 0, b].astype(out_dtype),
            axis=[r, q],
        ),
        name=CONV_BLOCK + DEPTHWISE,
    )


def _tap_weights(weight: te.Tensor) -> te.Tensor:
    """Depthwise weights (C/c, 1, KH, KW, 1, c) -> (C/c, KH, ceil(KW/4), c, 4) int8: each lane's
    ``TAPS`` neighbouring taps of a kernel row side by side, zero past the row's end."""
    chunks, _, kh, kw, _, block = (int(d) for d in weight.shape)

    def value(c, r, p, b, t):
        q = p * TAPS + t
        return tirx.if_then_else(q < kw, weight[c, 0, r, tirx.min(q, kw - 1), 0, b], tirx.const(0, "int8"))

    return te.compute((chunks, kh, -(-kw // TAPS), block, TAPS), value, name="pack_weights_taps")


def _depthwise_taps(
    data: te.Tensor, taps: te.Tensor, kw: int, strides: list[int], padding: list[int], out_dtype: str, suffix: str
) -> te.Tensor:
    """Depthwise on data known to lie in [0, 127] (or, ``suffix`` ``UNSIGNED_BYTES``, uint8 data
    over its whole range, for ``vpdpbusd``), ``TAPS`` taps per lane: the data padded as
    uint8 (with zero columns on the right for the last quad's taps past the kernel) and
    out[n, c, y, x, b] = sum padded[n, c, y*s+r, x*s+4p+t, b] * taps[c, r, p, b, t]."""
    chunks, kh, quads, block, _ = (int(d) for d in taps.shape)
    top, left, bottom, right = padding
    sy, sx = strides
    height, width = int(data.shape[2]) + top + bottom, int(data.shape[3]) + left + right
    out_h, out_w = (height - kh) // sy + 1, (width - kw) // sx + 1
    past = max(0, (out_w - 1) * sx + quads * TAPS - width)  # columns the last quad reads past the edge
    padded = _pad(data, [top, left, bottom, right + past], "uint8")
    r, p, t = _reduce_axes(r=kh, p=quads, t=TAPS)
    return te.compute(
        (data.shape[0], chunks, out_h, out_w, block),
        lambda n, c, y, x, b: te.sum(
            padded[n, c, y * sy + r, x * sx + p * TAPS + t, b].astype(out_dtype)
            * taps[c, r, p, b, t].astype(out_dtype),
            axis=[r, p, t],
        ),
        name=CONV_BLOCK + DEPTHWISE_TAPS + suffix,
    )
