"""QConfig: relay.quantize's options, names and defaults, validated, plus qbuild's additions.

Every option either does what it says or is rejected here with an error that names the
option and the fix; none is silently ignored. Derived constants (integer ranges, scales of
the global-scale mode) are computed here so the rewrite never re-derives them.

Usage, as with Relay::

    with qconfig(nbit_activation=16, dtype_activation="int16"):
        quantized = quantize(mod, dataset=images)
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Iterator

from qbuild.errors import QbuildError

# Integer dtypes a quantized tensor may be stored in, with their bit widths.
INT_DTYPES = {"int8": 8, "int16": 16, "int32": 32}
CALIBRATE_MODES = ("global_scale", "max", "percentile", "kl_divergence", "mse", "kl_mse")
WEIGHT_SCALES = ("power2", "max", "mse")
# How a sub-byte conv2d runs (qbuild.kernels.bitserial, or the int8 conv on the same values).
SUBBYTE_KERNELS = ("auto", "bitserial", "int8")
WEIGHT_ROUNDINGS = ("nearest", "gptq", "reconstruct")
# Layers that ``nbit_edge`` may keep wider than nbit_input/nbit_weight.
EDGE_LAYERS = ("first_conv", "dense", "depthwise")
ROUNDINGS = ("UPWARD", "TONEAREST")
# The weight and conv-input widths ``bit_budget`` chooses among (those up to nbit_weight /
# nbit_input): 8 keeps a sensitive layer on the int8 kernel; 2 to 4 are where the budget is won;
# 5 and 6 let a layer too sensitive for 4 bits take one or two more rather than four.
BUDGET_BITS = (2, 3, 4, 5, 6, 8)
QUANTIZABLE_OPS = ("nn.conv2d", "nn.dense")


def _fail(option: str, value: object, fix: str) -> QbuildError:
    return QbuildError(f"qconfig option {option}={value!r} is not possible", fix)


@dataclass(frozen=True)
class QConfig:
    """Post-training quantization settings (relay.quantize.qconfig's names and defaults)."""

    nbit_input: int = 8
    nbit_weight: int = 8
    nbit_activation: int = 32
    dtype_input: str = "int8"
    dtype_weight: str = "int8"
    dtype_activation: str = "int32"
    calibrate_mode: str = "global_scale"
    global_scale: float = 8.0
    weight_scale: str = "power2"
    skip_dense_layer: bool = True
    skip_conv_layers: tuple[int, ...] | None = (0,)
    do_simulation: bool = False
    round_for_shift: bool = True
    debug_enabled_ops: tuple[str, ...] | None = None
    rounding: str = "UPWARD"
    calibrate_chunk_by: int = -1
    partition_conversions: str = "disabled"
    # qbuild's additions
    per_channel_weights: bool = False
    calibrate_percentile: float = 99.99
    calibrate_samples: int = 32
    # Bits of the ``edge_layers``' inputs and weights when they are quantized (the layers that
    # low-bit quantization hurts most: the first conv, the classifier, depthwise convs with 9
    # weights per channel); None: nbit_input/nbit_weight like every other layer.
    nbit_edge: int | None = 8
    edge_layers: tuple[str, ...] = ("first_conv", "dense")
    # Add to each conv's accumulator the expected error its rounded weights cause on the
    # calibration images' mean input (analytic bias correction; needs calibration data).
    bias_correction: bool = False
    # How weights are rounded: to nearest; by GPTQ (1x1 convs; minimises the layer output's
    # error on the calibration images, see qbuild.quantize.gptq); or learned by block
    # reconstruction (convs below 8 bits; the block's output error, qbuild.quantize.block_reconstruct).
    weight_rounding: str = "nearest"
    subbyte_kernel: str = "auto"
    # Mixed precision: each quantized layer outside the edge layers (those that ``nbit_edge`` does
    # not hold) gets its own weight and input bits from ``budget_bits`` so that their mean, weighted
    # by each layer's multiply-accumulates, of (weight bits + input bits) / 2 is at most
    # bit_budget; edge layers keep nbit_edge bits and are outside the budget. Chosen from each
    # layer's sensitivity on the calibration images (``qbuild.quantize.mixed_precision``).
    # None: nbit_weight / nbit_input everywhere.
    bit_budget: float | None = None

    def __post_init__(self) -> None:
        if self.skip_conv_layers is not None:
            object.__setattr__(self, "skip_conv_layers", tuple(self.skip_conv_layers))
        if self.debug_enabled_ops is not None:
            object.__setattr__(self, "debug_enabled_ops", tuple(self.debug_enabled_ops))
        object.__setattr__(self, "edge_layers", tuple(self.edge_layers))
        self._validate()

    def _validate(self) -> None:
        for kind in ("input", "weight", "activation"):
            nbit, dtype = getattr(self, f"nbit_{kind}"), getattr(self, f"dtype_{kind}")
            if dtype not in INT_DTYPES:
                raise _fail(
                    f"dtype_{kind}",
                    dtype,
                    f"use one of {', '.join(INT_DTYPES)} (sub-byte values are stored in int8 with nbit < 8)",
                )
            if not isinstance(nbit, int) or nbit < (2 if kind == "activation" else 1):
                fix = (
                    "use 2 or more bits: activations between layers are signed (1-bit conv inputs are nbit_input=1)"
                    if kind == "activation"
                    else "use 1 or more bits"
                )
                raise _fail(f"nbit_{kind}", nbit, fix)
            if nbit > INT_DTYPES[dtype]:
                raise _fail(
                    f"nbit_{kind}",
                    nbit,
                    f"dtype_{kind}={dtype!r} holds at most {INT_DTYPES[dtype]} bits: "
                    f"lower nbit_{kind} or widen dtype_{kind}",
                )
        if self.nbit_input > 8 or self.nbit_weight > 8:
            option = "nbit_input" if self.nbit_input > 8 else "nbit_weight"
            raise _fail(option, getattr(self, option), "convolution operands are at most 8 bits (int32 accumulation)")
        if self.nbit_edge is not None and not (isinstance(self.nbit_edge, int) and 1 <= self.nbit_edge <= 8):
            raise _fail("nbit_edge", self.nbit_edge, "use 1 to 8 bits, or None for nbit_input/nbit_weight")
        if any(kind not in EDGE_LAYERS for kind in self.edge_layers):
            raise _fail("edge_layers", self.edge_layers, f"name layers among {', '.join(EDGE_LAYERS)}")
        if self.bias_correction and not self.needs_data:
            raise _fail(
                "bias_correction",
                True,
                "it needs the mean inputs of calibration images: use a calibrate_mode other than global_scale",
            )
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise _fail("weight_rounding", self.weight_rounding, f"use one of {', '.join(WEIGHT_ROUNDINGS)}")
        if self.weight_rounding != "nearest" and not self.needs_data:
            raise _fail(
                "weight_rounding",
                self.weight_rounding,
                "it needs calibration images: use a calibrate_mode other than global_scale",
            )
        if self.bit_budget is not None:
            if isinstance(self.bit_budget, bool) or not isinstance(self.bit_budget, (int, float)):
                raise _fail("bit_budget", self.bit_budget, "use a number of bits, e.g. 3.0, or None")
            lowest = (self.budget_bits("weight")[0] + self.budget_bits("input")[0]) / 2
            if not lowest <= self.bit_budget <= 8:
                raise _fail(
                    "bit_budget",
                    self.bit_budget,
                    f"use {lowest:g} to 8 bits (the mean (weight + input bits) / 2 of {self.budget_bits('weight')} "
                    f"x {self.budget_bits('input')}), or None",
                )
            if not self.needs_data:
                raise _fail(
                    "bit_budget",
                    self.bit_budget,
                    "it needs calibration images: use a calibrate_mode other than global_scale",
                )
        if self.subbyte_kernel not in SUBBYTE_KERNELS:
            raise _fail("subbyte_kernel", self.subbyte_kernel, f"use one of {', '.join(SUBBYTE_KERNELS)}")
        if self.calibrate_mode not in CALIBRATE_MODES:
            raise _fail("calibrate_mode", self.calibrate_mode, f"use one of {', '.join(CALIBRATE_MODES)}")
        if not self.global_scale > 0:
            raise _fail("global_scale", self.global_scale, "use a positive range bound, e.g. 8.0")
        if self.weight_scale not in WEIGHT_SCALES:
            raise _fail("weight_scale", self.weight_scale, f"use one of {', '.join(WEIGHT_SCALES)}")
        if self.rounding not in ROUNDINGS:
            raise _fail("rounding", self.rounding, f"use one of {', '.join(ROUNDINGS)}")
        if self.skip_conv_layers is not None and any((not isinstance(i, int)) or i < 0 for i in self.skip_conv_layers):
            raise _fail("skip_conv_layers", self.skip_conv_layers, "list conv indices counted from 0")
        if self.debug_enabled_ops is not None:
            unknown = [op for op in self.debug_enabled_ops if op not in QUANTIZABLE_OPS]
            if unknown:
                raise _fail(
                    "debug_enabled_ops",
                    self.debug_enabled_ops,
                    f"name ops among {', '.join(QUANTIZABLE_OPS)}, or None for all",
                )
        if self.do_simulation:
            raise _fail("do_simulation", True, "qbuild always realizes integer kernels; use do_simulation=False")
        if self.partition_conversions != "disabled":
            raise _fail(
                "partition_conversions",
                self.partition_conversions,
                "qbuild keeps conversions inline; use partition_conversions='disabled'",
            )
        if not isinstance(self.calibrate_chunk_by, int) or self.calibrate_chunk_by == 0 or self.calibrate_chunk_by < -1:
            raise _fail(
                "calibrate_chunk_by",
                self.calibrate_chunk_by,
                "use -1 (all tensors in one pass) or a positive number of tensors per pass",
            )
        if not 50.0 < self.calibrate_percentile <= 100.0:
            raise _fail("calibrate_percentile", self.calibrate_percentile, "use a percentile in (50, 100], e.g. 99.99")
        if not isinstance(self.calibrate_samples, int) or self.calibrate_samples < 1:
            raise _fail("calibrate_samples", self.calibrate_samples, "use 1 or more calibration images")

    # --- derived constants -------------------------------------------------------------
    @staticmethod
    def qmax(nbit: int) -> int:
        """Largest value of a signed symmetric nbit range: 127 for 8 bits."""
        return (1 << (nbit - 1)) - 1

    def layer_bits(self, kind: str) -> tuple[int, int]:
        """(input bits, weight bits) of a layer of ``kind`` ("first_conv", "dense", "depthwise",
        or "conv" for any other conv)."""
        if kind in self.edge_layers and self.nbit_edge is not None:
            return self.nbit_edge, self.nbit_edge
        return self.nbit_input, self.nbit_weight

    def chosen_by_budget(self, kind: str) -> bool:
        """Whether ``bit_budget`` chooses the bits of a layer of ``kind`` (see ``layer_bits``)."""
        return self.bit_budget is not None and not (kind in self.edge_layers and self.nbit_edge is not None)

    def budget_bits(self, part: str) -> tuple[int, ...]:
        """The bits ``bit_budget`` chooses among for a layer's "weight" or "input", ascending:
        ``BUDGET_BITS`` up to nbit_weight / nbit_input, and that width itself."""
        top = self.nbit_weight if part == "weight" else self.nbit_input
        return tuple(sorted({bits for bits in BUDGET_BITS if bits <= top} | {top}))

    @property
    def needs_data(self) -> bool:
        """Whether calibration runs the model on data (every mode but global_scale)."""
        return self.calibrate_mode != "global_scale"

    def global_activation_scale(self, levels: int) -> float:
        """Relay's global_scale mode: a tensor with ``levels`` positive codes (127 for int8)
        spans [-global_scale, global_scale] (its step is global_scale / 2**(nbit-1))."""
        return self.global_scale / (levels + 1)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


DEFAULTS = QConfig()
_current: list[QConfig] = [DEFAULTS]


def options() -> list[dict]:
    """Every option with its default, for the report's defaults table."""
    return [{"name": f.name, "default": getattr(DEFAULTS, f.name)} for f in dataclasses.fields(QConfig)]


def make(**overrides: object) -> QConfig:
    """A QConfig from option names; an unknown name is an error that lists the known ones."""
    known = {f.name for f in dataclasses.fields(QConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise QbuildError(f"unknown qconfig option {unknown[0]!r}", f"use one of: {', '.join(sorted(known))}")
    return QConfig(**overrides)  # type: ignore[arg-type]


@contextlib.contextmanager
def qconfig(**overrides: object) -> Iterator[QConfig]:
    """``with qconfig(...):`` makes a config current for quantize() inside the block."""
    config = make(**overrides)
    _current.append(config)
    try:
        yield config
    finally:
        _current.pop()


def current_qconfig() -> QConfig:
    """The innermost active qconfig, or the defaults."""
    return _current[-1]
