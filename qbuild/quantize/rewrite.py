"""The integer rewrite: a float Relax ``main`` (weights bound, batch norm folded) -> integer kernels.

Each tensor of the new program is in one of three forms:

- ``Float``: unchanged float32.
- ``Quant``: an integer tensor ``q`` in [low, high] with one scale: real = q * scale (no zero
  point; signed ranges are symmetric).
- ``Acc``: the int32 accumulator of a quantized conv2d/dense, with one scale per output channel
  (input scale x weight scale). Its bias is added in int32; a ReLU or ReLU6 keeps it an
  accumulator (ReLU6's bounds at each channel's accumulator scale), and the next conv takes it
  straight into its input codes: one rounding from the accumulator, not one into the activation
  dtype and another into a narrower conv input.

Each form also knows whether its values are ``nonneg`` (after a ReLU, a ReLU6, and the max
pooling and padding of such a tensor): a sub-byte conv input that is non-negative takes the
unsigned range [0, 2**bits - 1] rather than wasting a bit on a sign (a signed 1-bit range is
empty, so a possibly negative 1-bit input gets 2 bits, and its layer records that).

A quantized conv2d/dense takes its input in ``dtype_input`` (``nbit_input`` bits) and its
weights in ``dtype_weight`` (``nbit_weight`` bits; 1-bit weights are bipolar, {-1, +1} x scale;
the ``edge_layers`` take ``nbit_edge`` bits), accumulates in int32 and, when another op needs
its value, requantizes (the *epilogue*) to the activation dtype with the activation's calibrated
scale.
Residual adds, ReLU, ReLU6 (clip), max pooling and zero padding run on integers in the
activation dtype; every other op gets float input (dequantized), so float stays only where it
must: skipped layers and the pooling/classifier head.

A sub-byte conv2d (fewer than 8 bits in either operand) runs either as the int8 conv on its
narrow values, or as a bit-serial conv over bit-packed weights, as the target's kernels choose
under ``subbyte_kernel`` (``SubbyteKernels``; without them, as the int8 conv). Each layer's record
says which ran, in what encoding, and how many bytes its weights take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import tvm
from tvm import relax

from qbuild.bitpack import Encoding
from qbuild.quantize import block_reconstruct, emit, gptq, memo, mixed_precision
from qbuild.quantize.calibrate import Histogram
from qbuild.quantize.config import QConfig
from qbuild.quantize.fixed_point import round_half
from qbuild.relax.graph import bindings, const_array, op_name, readers, scalar_value, substitute
from qbuild.verify import sqnr_db

# (var, levels) -> the real-valued range bound T of that tensor with ``levels`` positive codes.
Thresholds = Callable[[relax.Var, int], float]
# var -> what calibration measured of it (channel means, Gram matrix), None if nothing.
Statistics = Callable[[relax.Var], "Histogram | None"]
# (op, index) of a layer -> its (weight bits, input bits) under a bit budget.
ChosenBits = dict[tuple[str, int], tuple[int, int]]


class SubbyteKernels(Protocol):
    """How the target runs sub-byte convs (``qbuild.kernels.subbyte_convs.SubbyteConvs``)."""

    @property
    def max_pairs(self) -> int:
        """ "auto" runs a conv of at most this many plane pairs bit-serially."""
        ...

    def kernel(self, choice: str, attrs, activation: Encoding, weight: Encoding) -> str:
        """ "bitserial" or "int8" for a conv with these attributes and encodings under ``choice``."""
        ...

    def emit_bitserial(
        self,
        bb: relax.BlockBuilder,
        data: relax.Expr,
        weights: np.ndarray,
        attrs,
        activation: Encoding,
        weight: Encoding,
    ) -> tuple[relax.Expr, int]:
        """The bit-serial conv (int32 NCHW) and the bytes its packed weights take."""
        ...


@dataclass
class Float:
    expr: relax.Expr
    nonneg: bool = False


@dataclass
class Quant:
    expr: relax.Expr
    scale: float
    low: int
    high: int
    dtype: str
    nonneg: bool = False

    @property
    def encoding(self) -> Encoding:
        """The bit planes of this range (``qbuild.bitpack``)."""
        if self.low >= 0:
            return Encoding(self.high.bit_length(), "unsigned")
        return Encoding(self.high.bit_length() + 1, "signed")


def signed_range(nbit: int) -> tuple[int, int]:
    """The symmetric signed range of ``nbit`` bits: (-127, 127) for 8."""
    return -QConfig.qmax(nbit), QConfig.qmax(nbit)


def input_range(nbit: int, nonneg: bool) -> tuple[int, int]:
    """The codes of an ``nbit``-bit conv input: unsigned below 8 bits when it is non-negative,
    else signed (at least 2 bits: a signed 1-bit range is empty)."""
    return (0, (1 << nbit) - 1) if nbit < 8 and nonneg else signed_range(max(nbit, 2))


@dataclass
class Acc:
    expr: relax.Expr
    scale: np.ndarray  # per output channel
    axis: int  # the channel axis of expr
    source: relax.Var  # the float tensor this accumulator stands for (whose range settles it)
    nonneg: bool = False


def _relu_of(mod: tvm.IRModule) -> dict:
    """{var: the var of the ReLU that is its only reader} over ``main``."""
    return {
        var: only[0].var
        for var, only in readers(mod).items()
        if len(only) == 1 and only[0] is not None and op_name(only[0].value) == "relax.nn.relu"
    }


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(dim) for dim in expr.ty.shape)


def per_channel(bias: np.ndarray, acc: Acc) -> np.ndarray | None:
    """The per-channel vector of a constant added to ``acc``, or None if it varies along other axes."""
    shape = _shape(acc.expr)
    try:
        full = np.broadcast_to(bias, shape)
    except ValueError:
        return None
    if full.shape != shape:
        return None
    axis = acc.axis % len(shape)
    index = tuple(slice(None) if i == axis else 0 for i in range(len(shape)))
    vector = full[index]
    keep = [1] * len(shape)
    keep[axis] = -1
    return vector.astype(np.float64) if np.array_equal(full, np.broadcast_to(vector.reshape(keep), shape)) else None


class Rewriter:
    """Rewrites one module under one config; ``layers`` reports each conv2d/dense and its fate."""

    def __init__(
        self,
        config: QConfig,
        thresholds: Thresholds,
        statistics: Statistics = lambda var: None,
        kernels: SubbyteKernels | None = None,
        memory: memo.Memory | None = None,
        chosen: ChosenBits | None = None,
        learned: dict[relax.Var, np.ndarray] | None = None,
    ) -> None:
        self.config = config
        # Under weight_rounding="reconstruct", the codes block reconstruction learned for each
        # conv (by output var); None: not learned yet (``quantizations`` holds what it learns from).
        self.learned = learned
        self.quantizations: dict[relax.Var, block_reconstruct.LayerQuantization] = {}
        # Under a bit budget, each chosen layer's bits; None: not chosen yet, so each such layer
        # runs at the widest bits and its sensitivity is measured (given calibration statistics).
        self.chosen = chosen
        self.sensitivities: dict[tuple[str, int], mixed_precision.Sensitivity] = {}
        self.memory = memory if memory is not None else memo.Memory()  # rounded weights shared with other rewrites
        self.kernels = kernels  # how sub-byte convs run; None: as the int8 conv
        self.thresholds = thresholds
        self.statistics = statistics
        self.gram_inputs: set = set()  # the inputs whose Gram matrix GPTQ rounding or a bit budget asks for
        self.inputs: dict = {}  # (var, bits) -> its Quant as a conv input, emitted once for all its convs
        self.relu_of: dict = {}  # var -> the ReLU that alone reads it (``run``)
        self.layers: list[dict] = []
        self.layer_vars: list[relax.Var] = []  # each layer's output in the float module, as ``layers``
        self.layer_inputs: list[relax.Expr] = []  # and its input there
        self.conv_count = 0
        self.dense_count = 0

    # --- scales ------------------------------------------------------------------------
    def step(self, var: relax.Var, high: int) -> float:
        """The scale of ``var`` stored with ``high`` positive codes."""
        if self.config.calibrate_mode == "global_scale":
            return self.config.global_activation_scale(high)
        return self.thresholds(var, high) / high

    def weight_step(
        self, weights: np.ndarray, out_axis: int, encoding: Encoding, gram: np.ndarray | None = None
    ) -> np.ndarray:
        """Weight scale, per output channel (``per_channel_weights``) or one for the tensor:
        from the largest magnitude (power2, max), the clipping that minimises the squared error
        (mse; given the input's Gram matrix, each input channel's error weighted by its energy,
        the diagonal: the error the layer's output sees), or, for bipolar weights, the mean
        magnitude (the least-squares scale of sign(w))."""
        rows = np.moveaxis(weights, out_axis, 0).reshape(weights.shape[out_axis], -1).astype(np.float64)
        if not self.config.per_channel_weights:
            rows = rows.reshape(1, -1)
        magnitude = np.abs(rows).max(axis=1)
        magnitude = np.where(magnitude > 0, magnitude, 1.0)
        if encoding.kind == "bipolar":
            mean = np.abs(rows).mean(axis=1)
            return np.where(mean > 0, mean, 1.0)
        if self.config.weight_scale == "power2":
            return 2.0 ** np.ceil(np.log2(magnitude)) / (1 << (encoding.bits - 1))
        if self.config.weight_scale == "mse":
            energy = None if gram is None or not self.config.per_channel_weights else np.diag(gram)
            return mse_steps(rows, magnitude, encoding.high, self.config.rounding, energy)
        return magnitude / encoding.high

    # --- conversions between forms ------------------------------------------------------
    def as_float(self, bb: relax.BlockBuilder, value) -> relax.Expr:
        if isinstance(value, Float):
            return value.expr
        if isinstance(value, Quant):
            return emit.dequantize(bb, value.expr, value.scale)
        return emit.dequantize(bb, value.expr, value.scale, value.axis)

    def settle(self, bb: relax.BlockBuilder, value) -> Quant | Float:
        """An accumulator becomes an activation: the requantize epilogue to ``dtype_activation``."""
        if not isinstance(value, Acc):
            return value
        cfg = self.config
        low, high = signed_range(cfg.nbit_activation)
        scale = self.step(value.source, high)
        q = emit.requantize(
            bb,
            value.expr,
            value.scale / scale,
            (low, high),
            cfg.dtype_activation,
            cfg.rounding,
            cfg.round_for_shift,
            value.axis,
        )
        return Quant(q, scale, low, high, cfg.dtype_activation, value.nonneg)

    def as_input(self, bb: relax.BlockBuilder, var: relax.Var, value, nbit: int) -> Quant:
        """``value`` (the tensor ``var``) as an ``nbit``-bit conv input in ``dtype_input``, with
        ``var``'s input scale: unsigned below 8 bits when it is non-negative, else signed. A tensor
        that several convs read (a ResNet block's input: its first conv and its shortcut's) is
        quantized once for all of them."""
        if (var, nbit) not in self.inputs:
            self.inputs[var, nbit] = self._as_input(bb, var, value, nbit)
        return self.inputs[var, nbit]

    def _as_input(self, bb: relax.BlockBuilder, var: relax.Var, value, nbit: int) -> Quant:
        cfg = self.config
        dtype = cfg.dtype_input
        nonneg = value.nonneg
        low, high = input_range(nbit, nonneg)
        scale = self.step(var, high)
        if isinstance(value, Float):
            q = emit.quantize(bb, value.expr, scale, (low, high), dtype, cfg.rounding)
            return Quant(q, scale, low, high, dtype)
        if (
            isinstance(value, Quant)
            and (value.low, value.high, value.dtype) == (low, high, dtype)
            and np.isclose(value.scale, scale, rtol=1e-12)
        ):
            return value
        axis = value.axis if isinstance(value, Acc) else 1  # an accumulator's scales are per channel
        q = emit.requantize(
            bb, value.expr, value.scale / scale, (low, high), dtype, cfg.rounding, cfg.round_for_shift, axis
        )
        return Quant(q, scale, low, high, dtype, nonneg)

    # --- the rewrite -------------------------------------------------------------------------
    def run(self, mod: tvm.IRModule, probe: bool = False) -> tvm.IRModule:
        """The integer module of ``mod``; with ``probe``, one whose ``main`` returns instead each
        conv/dense layer's output (float32, in ``layers`` order: an accumulator dequantized at its
        scales), with the same integers (``qbuild.layer_errors``)."""
        main = mod["main"]
        self.relu_of = _relu_of(mod)
        values: dict = {param: Float(param) for param in main.params}
        bb = relax.BlockBuilder()
        with bb.function("main", list(main.params), attrs=dict(main.attrs or {})):
            with bb.dataflow():
                for binding in bindings(mod):
                    values[binding.var] = self.rewrite(bb, binding.var, binding.value, values)
                result = main.body.body
                if probe:
                    out = bb.emit_output(relax.Tuple([self.as_float(bb, values[var]) for var in self.layer_vars]))
                else:
                    floats = {var: self.as_float(bb, values[var]) for var in relax.analysis.free_vars(result)}
                    out = bb.emit_output(substitute(result, floats))
            bb.emit_func_output(out)
        return bb.get()

    def rewrite(self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Expr, values: dict):
        name = op_name(call)
        args = list(call.args) if isinstance(call, relax.Call) else []
        arg_values = [values.get(a) if isinstance(a, relax.Var) else None for a in args]
        if name == "relax.nn.conv2d" and const_array(args[1]) is not None:
            return self.conv2d(bb, var, call, values[args[0]])
        if name == "relax.matmul" and const_array(args[1]) is not None and const_array(args[1]).ndim == 2:
            return self.dense(bb, var, call, values[args[0]])
        if name == "relax.add":
            return self.add(bb, var, call, values)
        if name == "relax.nn.relu" and isinstance(arg_values[0], (Quant, Acc)):
            return self.relu(bb, var, arg_values[0])
        if name == "relax.clip" and isinstance(arg_values[0], (Quant, Acc)):
            return self.clip(bb, var, call, arg_values[0])
        if name in ("relax.nn.max_pool2d", "relax.nn.pad") and isinstance(arg_values[0], (Quant, Acc)):
            if name == "relax.nn.pad" and float(call.attrs.pad_value) != 0.0:
                return self.float_op(bb, call, values)
            quant = self.settle(bb, arg_values[0])
            return Quant(
                bb.emit(relax.Call(call.op, [quant.expr, *args[1:]], call.attrs, call.ty_args)),
                quant.scale,
                quant.low,
                quant.high,
                quant.dtype,
                quant.nonneg,
            )
        result = self.float_op(bb, call, values)
        result.nonneg = _keeps_float_nonneg(name, call, arg_values[0] if arg_values else None)
        return result

    def float_op(self, bb: relax.BlockBuilder, call: relax.Expr, values: dict) -> Float:
        used = {v for v in relax.analysis.free_vars(call)} if isinstance(call, relax.Expr) else set()
        mapping = {v: self.as_float(bb, values[v]) for v in used if v in values}
        return Float(bb.emit(substitute(call, mapping)))

    # --- quantizable layers --------------------------------------------------------------
    def _layer_enabled(self, op: str, index: int) -> str | None:
        """None if layer ``index`` of kind ``op`` is quantized, else the reason it is skipped."""
        cfg = self.config
        if cfg.debug_enabled_ops is not None and op not in cfg.debug_enabled_ops:
            return f"debug_enabled_ops={list(cfg.debug_enabled_ops)}"
        if op == "nn.conv2d" and cfg.skip_conv_layers and index in cfg.skip_conv_layers:
            return f"skip_conv_layers={list(cfg.skip_conv_layers)}"
        if op == "nn.dense" and cfg.skip_dense_layer:
            return "skip_dense_layer=True"
        return None

    def _record(
        self,
        op: str,
        index: int,
        var: relax.Var,
        data: relax.Expr,
        weights: np.ndarray,
        skipped: str | None,
        layer: dict | None = None,
    ) -> None:
        entry = {
            "op": op,
            "index": index,
            "name": var.name,
            "weight_shape": list(weights.shape),
            "status": "skipped" if skipped else "quantized",
            "reason": skipped,
        }
        entry.update(layer or {"weight_bytes": int(weights.nbytes)})
        self.layers.append(entry)
        self.layer_vars.append(var)
        self.layer_inputs.append(data)

    def quantized_weights(
        self, weights: np.ndarray, out_axis: int, nbit: int, gram: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, Encoding]:
        """(integer weights, scale per output channel, their encoding) for ``nbit``-bit weights,
        rounded to nearest, or by GPTQ given the input's Gram matrix (``gram``, for weights whose
        only non-output axis is the input channel: a 1x1 conv). Read-only arrays: the same
        weights at the same precision come back from ``memory.codes`` (a sweep's precisions with
        equal weight bits share them)."""
        cfg = self.config
        key = (
            memo.digest(weights, gram),
            out_axis,
            nbit,
            cfg.per_channel_weights,
            cfg.weight_scale,
            cfg.rounding,
            cfg.dtype_weight,
        )
        return memo.remembered(
            self.memory.codes, key, lambda: self._round_weights(weights, out_axis, nbit, gram), memo.CODES_KEPT
        )

    def _round_weights(
        self, weights: np.ndarray, out_axis: int, nbit: int, gram: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, Encoding]:
        self.memory.roundings += 1
        encoding = Encoding(1, "bipolar") if nbit == 1 else Encoding(nbit, "signed")
        step = self.weight_step(weights, out_axis, encoding, gram)
        shape = [1] * weights.ndim
        shape[out_axis] = -1

        def rounded(values: np.ndarray, steps: np.ndarray) -> np.ndarray:
            if encoding.kind == "bipolar":
                return np.where(values >= 0, 1, -1)
            return np.clip(round_half(values / steps, self.config.rounding), encoding.low, encoding.high)

        if gram is None:
            q = rounded(weights, step.reshape(shape))
        else:
            by_output = np.moveaxis(weights, out_axis, 0)
            columns = by_output.reshape(by_output.shape[0], -1)
            codes = gptq.round_columns(columns, gram, lambda column: rounded(column, step), step)
            q = np.moveaxis(codes.reshape(by_output.shape), 0, out_axis)
        q = q.astype(self.config.dtype_weight)
        for array in (q, step):
            array.flags.writeable = False
        return q, step, encoding

    def _gram(self, data: relax.Expr, attrs, weights: np.ndarray) -> np.ndarray | None:
        """The Gram matrix of a 1x1 conv's input for GPTQ rounding (None: round to nearest). The
        dry run notes which inputs need one; calibration measures them."""
        pointwise = weights.shape[2:] == (1, 1) and attrs.groups == 1 and all(int(s) == 1 for s in attrs.strides)
        if self.config.weight_rounding == "nearest" or not pointwise or not isinstance(data, relax.Var):
            return None
        self.gram_inputs.add(data)
        stats = self.statistics(data)
        return None if stats is None else stats.gram

    def _bits(
        self,
        key: tuple[str, int],
        kind: str,
        data: relax.Expr,
        value,
        weights: np.ndarray,
        axes: tuple[int, int],
        groups: int,
        macs: int,
        gram: np.ndarray | None = None,
    ) -> tuple[int, int]:
        """(input bits, weight bits) of quantized layer ``key``: the config's, or under a bit budget
        the ``chosen`` ones; before they are chosen, the widest, and the layer's sensitivity is
        measured into ``sensitivities`` (``gram``: the input Gram matrix its weights are rounded
        with, as ``quantized_weights`` takes it)."""
        if not self.config.chosen_by_budget(kind) or not isinstance(data, relax.Var):
            return self.config.layer_bits(kind)
        if self.chosen is not None:
            weight_bits, input_bits = self.chosen[key]
            return input_bits, weight_bits
        self.gram_inputs.add(data)
        stats = self.statistics(data)
        if stats is not None and stats.gram is not None:
            self.sensitivities[key] = self._sensitivity(data, value.nonneg, weights, axes, groups, macs, gram, stats)
        return self.config.layer_bits(kind)

    def _sensitivity(
        self,
        data: relax.Var,
        nonneg: bool,
        weights: np.ndarray,
        axes: tuple[int, int],
        groups: int,
        macs: int,
        gram: np.ndarray | None,
        stats: Histogram,
    ) -> mixed_precision.Sensitivity:
        """A layer's output error at each of the budget's widths (``qbuild.quantize.mixed_precision``)."""
        out_axis = axes[0]
        by_output = np.moveaxis(weights, axes, (0, 1))
        shape = [1] * weights.ndim
        shape[out_axis] = -1
        weight_errors = {}
        for bits in self.config.budget_bits("weight"):
            codes, step, _encoding = self.quantized_weights(weights, out_axis, bits, gram)
            rounded = np.moveaxis(codes * step.reshape(shape), axes, (0, 1))
            weight_errors[bits] = mixed_precision.weight_error(by_output, rounded, stats.gram, groups)
        input_errors = {}
        for bits in self.config.budget_bits("input"):
            high = input_range(bits, nonneg)[1]
            input_errors[bits] = mixed_precision.input_error(by_output, groups, stats, self.step(data, high), high)
        return mixed_precision.Sensitivity(macs, weight_errors, input_errors)

    def _layer(
        self,
        qin: Quant,
        weights: np.ndarray,
        qweights: np.ndarray,
        wstep: np.ndarray,
        out_axis: int,
        encoding: Encoding,
        kernel: str,
        weight_bytes: int,
    ) -> dict:
        shape = [1] * weights.ndim
        shape[out_axis] = -1
        return {
            "input_scale": qin.scale,
            "weight_scale_min": float(wstep.min()),
            "weight_scale_max": float(wstep.max()),
            "weight_sqnr_db": sqnr_db(weights, qweights * wstep.reshape(shape)),
            "input_encoding": qin.encoding.to_json(),
            "weight_encoding": encoding.to_json(),
            "kernel": kernel,
            "weight_bytes": weight_bytes,
        }

    def _conv_kernel(self, attrs, qin: Quant, encoding: Encoding) -> str:
        """ "bitserial" or "int8": how this quantized conv runs (``subbyte_kernel``, ``kernels``)."""
        if self.kernels is None:
            return "int8"
        return self.kernels.kernel(self.config.subbyte_kernel, attrs, qin.encoding, encoding)

    def conv2d(self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Call, value):
        index = self.conv_count
        self.conv_count += 1
        weights = const_array(call.args[1])
        skipped = self._layer_enabled("nn.conv2d", index)
        attrs = call.attrs
        if skipped:
            self._record(
                "nn.conv2d",
                index,
                var,
                call.args[0],
                weights,
                skipped,
                {"weight_bytes": int(weights.nbytes), "groups": int(attrs.groups)},
            )
            return Float(bb.emit(relax.Call(call.op, [self.as_float(bb, value), call.args[1]], call.attrs)))
        depthwise = attrs.groups > 1 and attrs.groups == int(weights.shape[0]) and int(weights.shape[1]) == 1
        kind = "first_conv" if index == 0 else "depthwise" if depthwise else "conv"
        gram = self._gram(call.args[0], attrs, weights)
        out_axis, in_axis = (str(attrs.kernel_layout).index(axis) for axis in "OI")
        macs = _macs(var, weights, out_axis)
        in_bits, weight_bits = self._bits(
            ("nn.conv2d", index), kind, call.args[0], value, weights, (out_axis, in_axis), int(attrs.groups), macs, gram
        )
        qin = self.as_input(bb, call.args[0], value, in_bits)
        qweights, wstep, encoding = self.quantized_weights(weights, out_axis, weight_bits, gram)
        learned = (self.learned or {}).get(var)
        qweights = qweights if learned is None else learned
        self.quantizations[var] = block_reconstruct.LayerQuantization(
            weights,
            qweights,
            wstep,
            (encoding.low, encoding.high),
            qin.scale,
            (qin.low, qin.high),
            learnable=out_axis == 0 and encoding.kind == "signed" and encoding.bits < 8,
        )
        kernel = self._conv_kernel(attrs, qin, encoding)
        if kernel == "bitserial":
            conv, weight_bytes = self.kernels.emit_bitserial(bb, qin.expr, qweights, attrs, qin.encoding, encoding)
        else:
            conv = emit.conv2d(bb, qin.expr, qweights, attrs)
            weight_bytes = qweights.nbytes
        correction = self._bias_correction(call.args[0], weights, qweights, wstep, qin.scale, attrs.groups)
        if correction is not None:
            conv = bb.emit(relax.op.add(conv, emit.channel_const(correction, "int32", 4, 1)))
        layer = self._layer(qin, weights, qweights, wstep, out_axis, encoding, kernel, weight_bytes)
        layer.update(
            macs=macs,
            bias_correction=correction is not None,
            weight_rounding="reconstruct" if learned is not None else "gptq" if gram is not None else "nearest",
            input_shape=list(_shape(qin.expr)),
            strides=[int(s) for s in attrs.strides],
            padding=[int(p) for p in attrs.padding],
            groups=int(attrs.groups),
        )
        self._record("nn.conv2d", index, var, call.args[0], weights, None, layer)
        axis = str(attrs.out_layout or attrs.data_layout).index("C")
        return Acc(conv, qin.scale * wstep, axis, var)

    def _bias_correction(
        self,
        data: relax.Expr,
        weights: np.ndarray,
        qweights: np.ndarray,
        wstep: np.ndarray,
        input_scale: float,
        groups: int,
    ) -> np.ndarray | None:
        """The int32 per-channel constant that cancels the rounded weights' error on the mean
        input: -sum((q * step - w) * mean(input channel)), at the accumulator's scale."""
        stats = self.statistics(data) if self.config.bias_correction and isinstance(data, relax.Var) else None
        means = stats.channel_means() if stats is not None else None
        if means is None:
            return None
        out_channels, per_group = weights.shape[:2]
        error = (qweights.astype(np.float64) * wstep.reshape(-1, 1, 1, 1) - weights).sum(axis=(2, 3))  # O x I/g
        group_means = means.reshape(groups, per_group)[np.arange(out_channels) // (out_channels // groups)]
        shift = (error * group_means).sum(axis=1)
        return round_half(-shift / (input_scale * wstep), self.config.rounding).astype(np.int32)

    def dense(self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Call, value):
        index = self.dense_count
        self.dense_count += 1
        weights = const_array(call.args[1])  # (in, out)
        skipped = self._layer_enabled("nn.dense", index)
        if skipped:
            self._record("nn.dense", index, var, call.args[0], weights, skipped)
            return Float(bb.emit(relax.Call(call.op, [self.as_float(bb, value), call.args[1]], call.attrs)))
        macs = _macs(var, weights, 1)
        in_bits, weight_bits = self._bits(("nn.dense", index), "dense", call.args[0], value, weights, (1, 0), 1, macs)
        qin = self.as_input(bb, call.args[0], value, in_bits)
        qweights, wstep, encoding = self.quantized_weights(weights, 1, weight_bits)
        product = bb.emit(relax.op.matmul(qin.expr, relax.const(qweights), out_dtype="int32"))
        layer = self._layer(qin, weights, qweights, wstep, 1, encoding, "int8", qweights.nbytes)
        self._record("nn.dense", index, var, call.args[0], weights, None, {**layer, "macs": macs})
        return Acc(product, qin.scale * wstep, -1, var)

    # --- integer elementwise ops ----------------------------------------------------------
    def add(self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Call, values: dict):
        lhs, rhs = call.args
        lv, rv = (values.get(a) if isinstance(a, relax.Var) else None for a in (lhs, rhs))
        for acc, const in ((lv, rhs), (rv, lhs)):
            bias = const_array(const)
            if isinstance(acc, Acc) and bias is not None:
                vector = per_channel(bias, acc)
                if vector is not None:
                    return self.bias_add(bb, var, acc, vector)
        if (
            isinstance(lv, (Quant, Acc))
            and isinstance(rv, (Quant, Acc, Float))
            or isinstance(rv, (Quant, Acc))
            and isinstance(lv, Float)
        ):
            return self.residual_add(bb, var, [lv, rv])
        return self.float_op(bb, call, values)

    def bias_add(self, bb: relax.BlockBuilder, var: relax.Var, acc: Acc, bias: np.ndarray) -> Acc:
        """Add a per-channel float ``bias`` to the accumulator in int32, at the accumulator's scale."""
        ndim = len(acc.expr.ty.shape)
        qbias = round_half(bias / np.broadcast_to(acc.scale, bias.shape), self.config.rounding)
        qbias = np.clip(qbias, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        summed = bb.emit(relax.op.add(acc.expr, emit.channel_const(qbias, "int32", ndim, acc.axis)))
        return Acc(summed, acc.scale, acc.axis, var)

    def residual_add(self, bb: relax.BlockBuilder, var: relax.Var, operands: list) -> Quant:
        """A residual add in integers, its result stored in ``dtype_activation`` at the scale of
        what is stored: the ReLU's output where a ReLU alone reads the sum (the next block's convs
        and its residual read that; with the sum's own range, its negative half of no use there,
        every calibrated ResNet block output was requantized again, in a kernel of its own, for
        the next conv), else the sum's."""
        cfg = self.config
        dtype = cfg.dtype_activation
        low, high = signed_range(cfg.nbit_activation)
        scale = self.step(self.relu_of.get(var, var), high)
        wide = []
        for value in operands:
            value = self.settle(bb, value)
            if isinstance(value, Float):
                value = Quant(
                    emit.quantize(bb, value.expr, scale, (low, high), dtype, cfg.rounding), scale, low, high, dtype
                )
            wide.append(
                emit.requantize(bb, value.expr, value.scale / scale, None, "int64", cfg.rounding, cfg.round_for_shift)
            )
        total = bb.emit(relax.op.clip(relax.op.add(*wide), low, high))
        return Quant(bb.emit(relax.op.astype(total, dtype)), scale, low, high, dtype)

    def relu(self, bb: relax.BlockBuilder, var: relax.Var, value):
        zero = relax.const(0, value.expr.ty.dtype)
        out = bb.emit(relax.op.maximum(value.expr, zero))
        if isinstance(value, Acc):
            return Acc(out, value.scale, value.axis, var, nonneg=True)
        return Quant(out, value.scale, value.low, value.high, value.dtype, nonneg=True)

    def clip(self, bb: relax.BlockBuilder, var: relax.Var, call: relax.Call, value) -> Quant | Acc:
        """A clip (ReLU6) in integers. On an accumulator it clips each channel at its own scale and
        the result stays an accumulator whose range is the clip's output (``var``'s), not its
        input's: a conv's pre-activation spans far more than ReLU6's [0, 6], and codes spread over
        that span would leave the clipped values a fraction of the levels (EfficientNet-Lite0
        int8-a8-calibrated lost 2.6 points to float there)."""
        lower, upper = scalar_value(call.args[1]), scalar_value(call.args[2])
        if isinstance(value, Acc):
            int32 = np.iinfo(np.int32)  # a tiny scale's or a one-sided clip's bound beyond int32 clips nothing
            low, high = _code_bounds(lower, upper, value.scale, (int32.min, int32.max))
            ndim = len(_shape(value.expr))
            clipped = bb.emit(
                relax.op.minimum(
                    relax.op.maximum(value.expr, emit.channel_const(low, "int32", ndim, value.axis)),
                    emit.channel_const(high, "int32", ndim, value.axis),
                )
            )
            return Acc(clipped, value.scale, value.axis, var, nonneg=value.nonneg or lower >= 0)
        low, high = (int(b) for b in _code_bounds(lower, upper, value.scale, (value.low, value.high)))
        return Quant(
            bb.emit(relax.op.clip(value.expr, low, high)),
            value.scale,
            value.low,
            value.high,
            value.dtype,
            nonneg=value.nonneg or low >= 0,
        )


def _macs(var: relax.Var, weights: np.ndarray, out_axis: int) -> int:
    """The multiply-accumulates of a layer whose output is ``var``: one per output value and weight
    of its output channel."""
    return int(np.prod(_shape(var))) * (weights.size // weights.shape[out_axis])


def _code_bounds(lower: float, upper: float, scale, limits: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The integer codes of a clip to [lower, upper] at ``scale`` (a float or one per channel):
    the codes inside it, kept within ``limits``."""
    return (np.clip(np.ceil(lower / np.asarray(scale)), *limits), np.clip(np.floor(upper / np.asarray(scale)), *limits))


def _keeps_float_nonneg(name: str | None, call: relax.Expr, value) -> bool:
    """Whether a float op's result is non-negative: a ReLU, a clip from 0 up, or pooling and
    zero padding of a non-negative tensor (a float stem's output feeding quantized convs)."""
    if name == "relax.nn.relu":
        return True
    if name == "relax.clip":
        return scalar_value(call.args[1]) >= 0
    passes_sign = name == "relax.nn.max_pool2d" or (name == "relax.nn.pad" and float(call.attrs.pad_value) == 0.0)
    return passes_sign and getattr(value, "nonneg", False)


def mse_steps(
    rows: np.ndarray, magnitude: np.ndarray, high: int, rounding: str, column_weights: np.ndarray | None = None
) -> np.ndarray:
    """Per row, the step (clip / high) among clips of 20%..100% of the row's largest magnitude
    that minimises the squared quantization error of the row, each column's weighted by
    ``column_weights`` if given (searched in float32: a ranking)."""
    rows = rows.astype(np.float32)
    weights = np.ones(rows.shape[1], np.float32) if column_weights is None else column_weights.astype(np.float32)
    best_step, best_error = magnitude / high, np.full(rows.shape[0], np.inf)
    for fraction in np.linspace(0.2, 1.0, 41):
        step = (magnitude * fraction / high).astype(np.float32)[:, None]
        error = (((np.clip(round_half(rows / step, rounding), -high, high) * step - rows) ** 2) * weights).sum(axis=1)
        better = error < best_error
        best_step = np.where(better, step[:, 0], best_step)
        best_error = np.where(better, error, best_error)
    return best_step
