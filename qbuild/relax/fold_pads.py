"""Zero pads folded into the convs that read them: ``conv2d(pad(x), w)`` as ``conv2d(x, w)``."""

from __future__ import annotations

import tvm
from tvm import relax


def fold_zero_pad(call: relax.Call, pad: relax.Call) -> relax.Call | None:
    """conv2d(pad(x)) as conv2d(x) with the pad's widths added to its own padding, where the pad
    is a zero pad of the rows and columns of NCHW data (TF-style "same" padding, as in
    EfficientNet-Lite's strided convs, is such a pad); None otherwise. ``ConvertLayout`` has no
    rule for ``nn.pad``, so each such pad would otherwise run in NCHW between two layout transforms."""
    attrs, pad_attrs = call.attrs, pad.attrs
    widths = [int(w) for w in pad_attrs.pad_width]
    if (
        pad_attrs.pad_mode != "constant"
        or float(pad_attrs.pad_value) != 0.0
        or len(widths) != 8
        or any(widths[:4])
        or attrs.data_layout != "NCHW"
    ):
        return None
    top, bottom, left, right = widths[4:]
    own = [int(p) for p in attrs.padding]
    padding = [own[0] + top, own[1] + left, own[2] + bottom, own[3] + right]
    return relax.op.nn.conv2d(
        pad.args[0],
        call.args[1],
        attrs.strides,
        padding,
        attrs.dilation,
        attrs.groups,
        attrs.data_layout,
        attrs.kernel_layout,
        attrs.out_layout or None,
        str(call.ty.dtype),
    )  # not attrs.out_dtype: "void" when it was left unset


def fold_pads_into_convs() -> tvm.transform.Pass:
    """conv2d(pad(x), w) -> conv2d(x, w) with the padding added, where ``fold_zero_pad`` allows
    (a pad that other ops also read stays for them)."""
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    pad = is_op("relax.nn.pad")(wildcard())
    conv = is_op("relax.nn.conv2d")(pad, wildcard())

    def rewrite(expr: relax.Expr, matches) -> relax.Expr:
        folded = fold_zero_pad(matches[conv], matches[pad])
        return expr if folded is None else folded

    @tvm.transform.module_pass(opt_level=0, name="qbuild.FoldPadsIntoConvs")
    def _apply(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = mod.clone()  # a Python module pass receives the caller's module itself
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gvar] = rewrite_call(conv, rewrite, func)
        return mod

    return _apply
