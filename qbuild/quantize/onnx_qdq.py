"""ONNX QDQ models (ONNX Runtime's ``quantize_static``, NNCF) as qbuild's integer Relax program.

Design: Relax's ONNX frontend imports the whole graph (every op has a float lowering there, and
QuantizeLinear/DequantizeLinear become ``relax.quantize``/``relax.dequantize``); this module then
walks that float program as ``qbuild.quantize.rewrite`` walks a traced one, and replaces each
dequantize -> conv2d/matmul -> quantize chain by integer ops of the kind the quantizer emits (int32
accumulators, ``rewrite.Acc``, and requantize epilogues), on codes held in the model's own dtype
(int8 or uint8) with its own scales and zero points (``zero_point``), never re-calibrated.
Residual adds, ReLU/clip, max pooling and reshapes of integer codes stay integer; any other op
between a dequantize and a quantize runs in float, for that op only, and is recorded as such.
Reading the float program rather than the ONNX graph leaves every op's semantics (padding,
layouts, Gemm's transposes) to the frontend.

Forms not supported are refused with one line naming them: dynamic quantization, QOperator
models, int4 QDQ, asymmetric weights (a weight zero point other than 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax

from qbuild.errors import QbuildError
from qbuild.quantize import emit, zero_point
from qbuild.quantize.rewrite import Acc, Float, per_channel
from qbuild.relax.graph import bindings, const_array, op_name, scalar_value, substitute

MIN_OPSET = 13
DYNAMIC_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool")
# The zero point of symmetric weights in each 8-bit dtype (uint8 codes shift exactly to int8).
SYMMETRIC_WEIGHT_ZERO = {"int8": 0, "uint8": 128}
# ONNX TensorProto data types of 4-bit integers (UINT4, INT4).
INT4_TYPES = {21: "uint4", 22: "int4"}
# Ops that move int8 codes without changing them: run on the codes, same scale and zero point.
CODE_MOVES = ("relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims", "relax.nn.max_pool2d")
# Elementwise ops on constants evaluated at import time (the frontend guards Clip's bounds with them).
CONST_FOLDS = {"relax.isnan": np.isnan, "relax.where": np.where}
# The TE functions the frontend lowers Clip's two bounds to (``emit_te(topi.maximum / minimum)``),
# as the clip bound each one sets; names get a numeric suffix when shapes differ.
TE_BOUNDS = re.compile(r"(maximum|minimum)(_?\d+)?")


class UnsupportedQuantization(QbuildError):
    """A quantized model in a form qbuild does not compile (named in the message)."""


@dataclass
class Codes:
    """Integer codes (int8 or uint8, the model's own) of a real tensor: real = (expr - zero) * scale."""

    expr: relax.Expr
    scale: float
    zero: int


@dataclass
class ChannelCodes:
    """Integer codes with one scale per channel (axis 1) and one zero point, as NNCF quantizes a
    depthwise conv's input: read as integers by that conv only, in float by anything else."""

    expr: relax.Expr
    scale: np.ndarray
    zero: int


@dataclass
class Const:
    """A tensor known at import time (an initializer, or ops on initializers)."""

    array: np.ndarray


@dataclass
class Weights:
    """Dequantized constant codes: real = (codes - zero) * scale, scales along ``axis``."""

    codes: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    axis: int

    def real(self) -> np.ndarray:
        shape = [1] * self.codes.ndim
        if self.scale.size > 1:
            shape[self.axis] = -1
        return (self.codes.astype(np.float64) - self.zero.reshape(shape)) * self.scale.reshape(shape)

    def symmetric(self, layer: str) -> np.ndarray:
        """The int8 codes of symmetric weights (uint8 codes with zero point 128 shift exactly)."""
        offset = SYMMETRIC_WEIGHT_ZERO.get(str(self.codes.dtype))
        if offset is None or np.any(self.zero.astype(np.int64) != offset):
            raise UnsupportedQuantization(
                f"asymmetric weights in {layer}: {self.codes.dtype} with zero points "
                f"{sorted(set(self.zero.astype(int).tolist()))[:4]} (qbuild's kernels take symmetric weights)",
                "quantize weights symmetrically (onnxruntime: weight_type=QuantType.QInt8)",
            )
        return (self.codes.astype(np.int64) - offset).astype(np.int8)


@dataclass
class Sum:
    """A residual add of integer operands, not yet stored: the quantize that reads it sets its codes."""

    operands: list[Codes]


@dataclass
class Mean:
    """An average pool over ``axes`` of integer codes, not yet stored (as ``Sum``)."""

    codes: Codes
    call: relax.Call

    @property
    def count(self) -> int:
        shape = [int(d) for d in self.call.args[0].ty.shape]
        return int(np.prod([shape[int(a)] for a in self.call.attrs.axis]))


def check_onnx(model: Any) -> None:
    """Refuse, with the form's name, an ONNX model qbuild cannot compile as an integer program."""
    opset = max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=0)
    ops = {node.op_type for node in model.graph.node}
    if ops & set(DYNAMIC_OPS):
        raise UnsupportedQuantization(
            f"dynamic quantization ({', '.join(sorted(ops & set(DYNAMIC_OPS)))}) is not supported: "
            "activation scales computed at run time",
            "quantize statically (onnxruntime.quantization.quantize_static, QDQ format)",
        )
    if ops & set(QOPERATOR_OPS):
        raise UnsupportedQuantization(
            f"QOperator models ({', '.join(sorted(ops & set(QOPERATOR_OPS)))}) are not supported",
            "quantize in QDQ format (quantize_static(..., quant_format=QuantFormat.QDQ))",
        )
    if "QuantizeLinear" not in ops and "DequantizeLinear" not in ops:
        raise UnsupportedQuantization(
            "the ONNX model has no QuantizeLinear/DequantizeLinear: it is not quantized",
            "quantize it first (onnxruntime.quantization.quantize_static or nncf.quantize), or compile it as float",
        )
    if opset < MIN_OPSET:
        raise UnsupportedQuantization(
            f"opset {opset} QDQ models are not supported (per-channel scales need opset {MIN_OPSET})",
            f"export with opset {MIN_OPSET} or later",
        )
    four_bit = {t.name for t in model.graph.initializer if t.data_type in INT4_TYPES}
    if four_bit:
        raise UnsupportedQuantization(
            f"int4 QDQ is not supported ({len(four_bit)} 4-bit tensors, e.g. {sorted(four_bit)[0]})",
            "quantize weights to 8 bits (qbuild's own sub-byte variants are w4a8 ... w1a1)",
        )


class QdqImporter:
    """Walks the frontend's float program of a QDQ model; ``layers`` records each op's fate."""

    def __init__(self) -> None:
        self.layers: list[dict] = []
        self.counts: dict[str, int] = {}

    def run(self, mod: tvm.IRModule) -> tvm.IRModule:
        """``mod``'s ``main`` rewritten; the frontend's TE functions that ops left in float still
        call are kept, the rest dropped."""
        main = mod["main"]
        values: dict = {param: Float(param) for param in main.params}
        bb = relax.BlockBuilder()
        with bb.function("main", list(main.params), attrs=dict(main.attrs or {})):
            with bb.dataflow():
                for binding in bindings(mod):
                    values[binding.var] = self.rewrite(bb, binding.var, binding.value, values)
                result = main.body.body
                floats = {var: self.as_float(bb, values[var]) for var in relax.analysis.free_vars(result)}
                out = bb.emit_output(substitute(result, floats))
            bb.emit_func_output(out)
        rewritten = bb.get()
        for gvar, func in mod.functions.items():
            if gvar.name_hint != "main":
                rewritten[gvar] = func
        return relax.transform.DeadCodeElimination(["main"])(rewritten)

    def as_float(self, bb: relax.BlockBuilder, value) -> relax.Expr:
        if isinstance(value, Float):
            return value.expr
        if isinstance(value, (Codes, ChannelCodes)):
            return zero_point.dequantize(bb, value.expr, value.scale, value.zero)
        if isinstance(value, Acc):
            return emit.dequantize(bb, value.expr, value.scale, value.axis)
        if isinstance(value, Sum):
            floats = [self.as_float(bb, operand) for operand in value.operands]
            return bb.emit(relax.op.add(*floats))
        if isinstance(value, Mean):
            data = self.as_float(bb, value.codes)
            return bb.emit(relax.Call(value.call.op, [data], value.call.attrs, value.call.ty_args))
        array = value.real() if isinstance(value, Weights) else value.array
        return relax.const(array.astype(np.float32) if array.dtype.kind == "f" else array)

    def rewrite(self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Expr, values: dict):
        name = op_name(call)
        args = list(call.args) if isinstance(call, relax.Call) else []
        found = [self.value_of(arg, values) for arg in args]
        if name == "relax.dequantize":
            return self.dequantize(call, found)
        if name == "relax.quantize":
            return self.quantize(bb, var, call, found)
        if name in CONST_FOLDS and found and all(isinstance(v, Const) for v in found):
            return Const(np.asarray(CONST_FOLDS[name](*(v.array for v in found))))
        if name == "relax.call_tir" and (bound := self.te_bound(args, values)) is not None:
            value, lower, upper = bound
            return self.clip(bb, var, value, lower, upper)
        if name in ("relax.reshape", "relax.permute_dims") and isinstance(found[0], (Const, Weights)):
            return self.fold(call, found)
        if name == "relax.nn.conv2d" and isinstance(found[0], (Codes, ChannelCodes)) and isinstance(found[1], Weights):
            return self.conv2d(bb, var, call, found[0], found[1])
        if name == "relax.matmul" and isinstance(found[0], Codes) and isinstance(found[1], Weights):
            if found[1].codes.ndim == 2:
                return self.dense(bb, var, found[0], found[1])
        if name == "relax.add" and isinstance(found[0], Acc) and isinstance(found[1], (Const, Weights)):
            bias = found[1].real() if isinstance(found[1], Weights) else found[1].array
            vector = per_channel(bias, found[0])
            if vector is not None:
                return self.bias_add(bb, var, found[0], vector)
        if name == "relax.add" and all(isinstance(v, Codes) for v in found):
            return Sum(found)
        if name == "relax.nn.relu" and isinstance(found[0], (Codes, Acc)):
            return self.clip(bb, var, found[0], 0.0, np.inf)
        if name == "relax.clip" and isinstance(found[0], (Codes, Acc)):
            return self.clip(bb, var, found[0], scalar_value(args[1]), scalar_value(args[2]))
        if name == "relax.mean" and isinstance(found[0], Codes) and call.attrs.axis is not None:
            return Mean(found[0], call)
        if name in CODE_MOVES and isinstance(found[0], Codes):
            moved = bb.emit(relax.Call(call.op, [found[0].expr, *args[1:]], call.attrs, call.ty_args))
            return Codes(moved, found[0].scale, found[0].zero)
        return self.float_op(bb, var, call, values, found)

    def te_bound(self, args: list, values: dict) -> tuple | None:
        """(codes or accumulator, lower, upper) for the frontend's TE maximum/minimum of integer
        values and a constant scalar (one bound of a Clip), else None."""
        match = TE_BOUNDS.fullmatch(args[0].name_hint)
        operands = [self.value_of(arg, values) for arg in args[1].fields]
        if match is None or len(operands) != 2 or not isinstance(operands[0], (Codes, Acc)):
            return None
        if not isinstance(operands[1], Const) or operands[1].array.size != 1:
            return None
        bound = float(operands[1].array.reshape(()))
        return (operands[0], bound, np.inf) if match.group(1) == "maximum" else (operands[0], -np.inf, bound)

    def value_of(self, arg: relax.Expr, values: dict):
        if isinstance(arg, relax.Var):
            return values.get(arg)
        array = const_array(arg)
        return Const(array) if array is not None else None

    # --- quantize / dequantize ---------------------------------------------------------------
    def dequantize(self, call: relax.Call, found: list):
        data, scale, zero = found
        axis = int(call.attrs.axis)
        if isinstance(data, Const) and data.array.dtype.kind in "iu":
            return Weights(data.array, scale.array.astype(np.float64), zero.array.astype(np.int64), axis)
        if isinstance(data, Codes) and scale.array.size == zero.array.size == 1:
            return Codes(data.expr, float(scale.array.reshape(())), int(zero.array.reshape(())))
        if isinstance(data, ChannelCodes):
            return data
        raise UnsupportedQuantization(
            f"a dequantize of {type(data).__name__.lower()} data with {scale.array.size} scales",
            "quantize activations per tensor (per-channel scales are for weights)",
        )

    def quantize(self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Call, found: list):
        data, scale, zero = found
        dtype = str(call.attrs.out_dtype)
        if dtype not in zero_point.CODE_DTYPES:
            raise UnsupportedQuantization(
                f"{dtype} QDQ is not supported ({var.name})", "quantize to int8 or uint8 (4- and 16-bit are not)"
            )
        if isinstance(data, Const):  # weights kept float with a QuantizeLinear of their own (NNCF)
            codes = np.clip(np.round(data.array / _along(scale.array, data.array, call)), *zero_point.code_range(dtype))
            return Const((codes + _along(zero.array, data.array, call)).astype(dtype))
        if scale.array.size != 1:
            return self.quantize_channels(bb, var, call, data, scale.array, zero.array)
        step = float(scale.array.reshape(()))
        point = int(zero.array.reshape(()))
        if isinstance(data, Float):
            return Codes(zero_point.quantize(bb, data.expr, step, point, dtype), step, point)
        if isinstance(data, Acc):
            return Codes(zero_point.requantize(bb, data.expr, data.scale / step, point, dtype, data.axis), step, point)
        if isinstance(data, Sum):
            operands = [(o.expr, o.scale, o.zero) for o in data.operands]
            self.note("relax.add", var, "integer", None)
            return Codes(zero_point.add(bb, operands, step, point, dtype), step, point)
        if isinstance(data, Mean):
            self.note("relax.mean", var, "integer", None)
            values = zero_point.centred(bb, data.codes.expr, data.codes.zero)
            attrs = data.call.attrs
            total = bb.emit(relax.op.sum(values, [int(a) for a in attrs.axis], bool(attrs.keepdims)))
            ratio = data.codes.scale / (step * data.count)
            return Codes(zero_point.requantize(bb, total, ratio, point, dtype), step, point)
        if isinstance(data, Codes):
            same_codes = data.zero == point and str(data.expr.ty.dtype) == dtype
            if same_codes and np.isclose(data.scale, step, rtol=1e-7, atol=0):
                return data
            values = zero_point.centred(bb, data.expr, data.zero)
            return Codes(zero_point.requantize(bb, values, data.scale / step, point, dtype), step, point)
        raise UnsupportedQuantization(f"a quantize of {type(data).__name__.lower()} data ({var.name})", "report it")

    def quantize_channels(
        self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Call, data, scale: np.ndarray, zero: np.ndarray
    ) -> ChannelCodes:
        """A quantize with one scale per channel (axis 1) and one zero point, of an accumulator or
        a float tensor."""
        dtype = str(call.attrs.out_dtype)
        if int(call.attrs.axis) % len(call.ty.shape) != 1 or np.unique(zero).size != 1:
            raise UnsupportedQuantization(
                f"per-channel activation scales other than along channels with one zero point ({var.name})",
                "quantize activations per tensor",
            )
        point = int(zero.reshape(-1)[0])
        step = scale.astype(np.float64).reshape(-1)
        if isinstance(data, Acc) and data.axis % len(call.ty.shape) == 1:
            return ChannelCodes(zero_point.requantize(bb, data.expr, data.scale / step, point, dtype, 1), step, point)
        return ChannelCodes(zero_point.quantize(bb, self.as_float(bb, data), step, point, dtype), step, point)

    def fold(self, call: relax.Call, found: list):
        """reshape / permute_dims of a constant, at import time (Gemm's transposed weights)."""
        source = found[0]
        array = source.codes if isinstance(source, Weights) else source.array
        if op_name(call) == "relax.permute_dims":
            axes = [int(a) for a in call.attrs.axes] if call.attrs.axes is not None else None
            moved = np.transpose(array, axes)
            if isinstance(source, Weights):
                order = axes if axes is not None else list(reversed(range(array.ndim)))
                return Weights(moved, source.scale, source.zero, order.index(source.axis % array.ndim))
            return Const(moved)
        shape = [int(d) for d in call.ty.shape]
        if isinstance(source, Weights):
            return Const(source.real().reshape(shape))
        return Const(array.reshape(shape))

    # --- integer layers --------------------------------------------------------------------------
    def conv2d(
        self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Call, data: Codes | ChannelCodes, weights: Weights
    ) -> Acc:
        attrs = call.attrs
        if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
            raise UnsupportedQuantization(f"a {attrs.data_layout} conv ({var.name})", "export NCHW convolutions")
        codes = weights.symmetric(var.name)
        if isinstance(data, ChannelCodes) and not int(attrs.groups) == codes.shape[0] == data.scale.size:
            raise UnsupportedQuantization(
                f"per-channel input scales into a conv that mixes channels ({var.name})",
                "quantize the inputs of non-depthwise convolutions per tensor",
            )
        conv = emit.conv2d(bb, data.expr, codes, attrs)
        if data.zero:
            conv = bb.emit(relax.op.add(conv, self._zero_correction(call, codes, data.zero)))
        scale = data.scale * np.broadcast_to(weights.scale, (codes.shape[0],))
        padding = [int(p) for p in attrs.padding]
        self.record(
            "nn.conv2d",
            var,
            data,
            codes,
            scale / data.scale,
            {"groups": int(attrs.groups), "strides": [int(s) for s in attrs.strides], "padding": padding},
        )
        return Acc(conv, scale, 1, var)

    def _zero_correction(self, call: relax.Call, codes: np.ndarray, zero: int) -> relax.Expr:
        """``-zero * conv(1, codes)``: per channel, or per output position where padding cuts windows."""
        attrs = call.attrs
        in_hw = tuple(int(d) for d in list(call.args[0].ty.shape)[2:])
        out_hw = tuple(int(d) for d in list(call.ty.shape)[2:])
        pads = [int(p) for p in attrs.padding]
        response = zero_point.ones_response(
            codes,
            in_hw,
            tuple(int(s) for s in attrs.strides),
            (pads[0], pads[1], pads[2], pads[3]),
            tuple(int(d) for d in attrs.dilation),
            out_hw,
        )
        correction = -zero * response
        if np.all(correction == correction[:, :1, :1]):
            return emit.channel_const(correction[:, 0, 0], "int32", 4, 1)
        return relax.const(correction[None].astype(np.int32))

    def dense(self, bb: relax.BlockBuilder, var: relax.Var, data: Codes, weights: Weights) -> Acc:
        if weights.scale.size > 1 and weights.axis % 2 != 1:
            raise UnsupportedQuantization(
                f"per-input-channel weight scales in {var.name}", "quantize Gemm/MatMul weights per output channel"
            )
        codes = weights.symmetric(var.name)
        product = bb.emit(relax.op.matmul(data.expr, relax.const(codes), out_dtype="int32"))
        if data.zero:
            correction = (-data.zero * codes.astype(np.int64).sum(axis=0)).astype(np.int32)
            product = bb.emit(relax.op.add(product, relax.const(correction)))
        scale = data.scale * np.broadcast_to(weights.scale, (codes.shape[1],))
        self.record("nn.dense", var, data, codes.T, scale / data.scale, {})
        return Acc(product, scale, -1, var)

    def bias_add(self, bb: relax.BlockBuilder, var: relax.Var, acc: Acc, bias: np.ndarray) -> Acc:
        """A float bias added to an accumulator in int32 at its scale (ONNX's int32 bias codes come back)."""
        codes = np.round(bias / np.broadcast_to(acc.scale, bias.shape))
        codes = np.clip(codes, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        ndim = len(acc.expr.ty.shape)
        return Acc(
            bb.emit(relax.op.add(acc.expr, emit.channel_const(codes, "int32", ndim, acc.axis))),
            acc.scale,
            acc.axis,
            var,
        )

    def clip(self, bb: relax.BlockBuilder, var: relax.Var, value, lower: float, upper: float):
        """ReLU / clip on integers: each bound at the codes' scale (an accumulator's per channel)."""
        if isinstance(value, Acc):
            limits = np.iinfo(np.int32)
            low = np.clip(np.ceil(lower / value.scale), limits.min, limits.max)
            high = np.clip(np.floor(upper / value.scale), limits.min, limits.max)
            ndim = len(value.expr.ty.shape)
            clipped = relax.op.minimum(
                relax.op.maximum(value.expr, emit.channel_const(low, "int32", ndim, value.axis)),
                emit.channel_const(high, "int32", ndim, value.axis),
            )
            return Acc(bb.emit(clipped), value.scale, value.axis, var, nonneg=value.nonneg or lower >= 0)
        codes = zero_point.code_range(str(value.expr.ty.dtype))
        low = int(np.clip(value.zero + np.ceil(lower / value.scale), *codes))
        high = int(np.clip(value.zero + np.floor(upper / value.scale), *codes))
        return Codes(bb.emit(relax.op.clip(value.expr, low, high)), value.scale, value.zero)

    def float_op(self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Expr, values: dict, found: list) -> Float:
        """The op as the frontend wrote it, on float inputs; recorded where it reads integers."""
        if any(isinstance(v, (Codes, Acc, Sum, Mean)) for v in found):
            self.note(op_name(call) or type(call).__name__, var, "float", "no integer lowering: runs in float")
        used = relax.analysis.free_vars(call) if isinstance(call, relax.Expr) else []
        mapping = {v: self.as_float(bb, values[v]) for v in used if v in values}
        return Float(bb.emit(substitute(call, mapping)))

    # --- records -----------------------------------------------------------------------------------
    def record(
        self, op: str, var: relax.Var, data: Codes | ChannelCodes, codes: np.ndarray, wscale: np.ndarray, extra: dict
    ) -> None:
        index = self.counts.get(op, 0)
        self.counts[op] = index + 1
        self.layers.append(
            {
                "op": op,
                "index": index,
                "name": var.name,
                "weight_shape": list(codes.shape),
                "status": "quantized",
                "reason": None,
                "input_scale": data.scale if isinstance(data, Codes) else [float(v) for v in data.scale],
                "input_zero_point": data.zero,
                "weight_scale_min": float(wscale.min()),
                "weight_scale_max": float(wscale.max()),
                "input_encoding": {"bits": 8, "kind": "unsigned" if data.expr.ty.dtype == "uint8" else "signed"},
                "weight_encoding": {"bits": 8, "kind": "signed"},
                "kernel": "int8",
                "weight_bytes": int(codes.nbytes),
                "input_shape": [int(d) for d in data.expr.ty.shape],
                **extra,
            }
        )

    def note(self, op: str, var: relax.Var, status: str, reason: str | None) -> None:
        """An op other than conv/dense that ran on integers, or in float between quantized tensors."""
        index = self.counts.get(op, 0)
        self.counts[op] = index + 1
        self.layers.append({"op": op, "index": index, "name": var.name, "status": status, "reason": reason})


def _along(values: np.ndarray, like: np.ndarray, call: relax.Call) -> np.ndarray:
    """A quantize's scale or zero point laid along its axis of ``like``."""
    if values.size == 1:
        return values.reshape(())
    shape = [1] * like.ndim
    shape[int(call.attrs.axis) % like.ndim] = -1
    return values.reshape(shape)


def import_onnx(source: str | PathLike | Any) -> tuple[tvm.IRModule, Any]:
    """The float Relax program of a QDQ ONNX model (a path or an ``onnx.ModelProto``; weights
    bound) and the model, checked."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
    elif Path(source).is_file():
        model = onnx.load(str(source))
    else:
        raise QbuildError(f"no ONNX model at {source}", "pass the path of a .onnx file")
    check_onnx(model)
    return from_onnx(model, keep_params_in_input=False), model


def load_onnx_qdq(source: str | PathLike | Any, producer: str = "onnx") -> tuple[tvm.IRModule, list[dict], dict]:
    """A QDQ ONNX model (path or ``onnx.ModelProto``) as qbuild's integer program: (module, the
    record of each layer, its origin: format, ``producer`` (who quantized it: "onnxruntime",
    "nncf"), opset)."""
    float_mod, model = import_onnx(source)
    importer = QdqImporter()
    mod = importer.run(float_mod)
    origin = {"format": "onnx-qdq", "producer": producer, "opset": max(e.version for e in model.opset_import)}
    return mod, importer.layers, origin
