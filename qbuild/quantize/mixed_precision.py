"""Mixed precision under a bit budget: each layer's weight and input bits, from its sensitivity.

A layer's sensitivity at a width is the relative error of its output, on the calibration
images, that rounding one operand to that width causes (the other kept exact):

- weights: ``tr(dW H dW^T) / tr(W H W^T)``, with ``dW`` the rounded weights' error (as the
  rewrite rounds them: GPTQ where it applies) and ``H`` the input channels' Gram matrix (each
  kernel tap of a k x k conv taken to see the same channel covariance; per group for grouped convs);
- inputs: the output noise the input's rounding adds, ``sigma^2 N ||W||^2 / tr(W H W^T)``, with
  ``sigma^2`` the expected squared error per input value at that width's calibrated step and
  clipping (from the calibration histogram), ``N`` the input positions ``H`` sums over.

``choose`` then spends the budget: starting from the widest bits, it lowers, one step at a
time, the operand whose next narrower width adds the least error per multiply-accumulate bit
saved, until the MAC-weighted mean of (weight bits + input bits) / 2 is within the budget, then
raises again, while they fit, the operands that remove the most error per bit. The layers'
errors are taken to add up (noise-to-signal ratios along a chain of layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from qbuild.quantize.calibrate import Histogram

PARTS = ("weight", "input")


@dataclass(frozen=True)
class Sensitivity:
    """A layer whose bits the budget chooses: its multiply-accumulates, and its output's relative
    error with each candidate weight width and each candidate input width."""

    macs: int
    weight: dict[int, float]
    input: dict[int, float]

    def to_json(self) -> dict:
        return {part: {str(bits): error for bits, error in getattr(self, part).items()} for part in PARTS}


def output_energy(weights: np.ndarray, gram: np.ndarray, groups: int) -> float:
    """``tr(W H W^T)`` summed over kernel taps and groups: ``weights`` is (outputs, inputs per
    group, taps...), ``gram`` the input channels' Gram matrix (channels x channels)."""
    out, per_group = weights.shape[:2]
    taps = weights.reshape(out, per_group, -1).astype(np.float64)
    total = 0.0
    for group in range(groups):
        rows = taps[group * out // groups : (group + 1) * out // groups].transpose(0, 2, 1).reshape(-1, per_group)
        block = gram[group * per_group : (group + 1) * per_group, group * per_group : (group + 1) * per_group]
        total += float(np.sum((rows @ block) * rows))
    return total


def weight_error(weights: np.ndarray, rounded: np.ndarray, gram: np.ndarray, groups: int) -> float:
    """The relative output error of ``rounded`` weights in place of ``weights`` (both as
    ``output_energy`` takes them)."""
    return output_energy(rounded - weights, gram, groups) / max(output_energy(weights, gram, groups), 1e-30)


def input_error(weights: np.ndarray, groups: int, stats: Histogram, step: float, high: int) -> float:
    """The relative output noise of the layer's input rounded at ``step`` into ``high`` positive
    codes, its magnitudes as ``stats`` (with its Gram matrix) saw them on the calibration images."""
    centres = (np.arange(stats.counts.size) + 0.5) * stats.bin_width
    rounded = step * np.clip(np.rint(centres / step), 0, high)
    squared = float(np.sum(stats.counts * (centres - rounded) ** 2))  # over all input values seen
    channels = stats.gram.shape[0]
    norm = float(np.sum(weights.astype(np.float64) ** 2))
    return squared / channels * norm / max(output_energy(weights, stats.gram, groups), 1e-30)


def mean_bits(layers: Iterable[tuple[int, int, int]]) -> float:
    """The MAC-weighted mean of (weight bits + input bits) / 2 over (macs, weight bits, input bits)."""
    chosen = list(layers)
    return sum(macs * (w + a) / 2 for macs, w, a in chosen) / max(sum(macs for macs, _w, _a in chosen), 1)


def choose(layers: Sequence[Sensitivity], budget: float) -> list[tuple[int, int]]:
    """(weight bits, input bits) for each layer, in order, whose ``mean_bits`` is at most
    ``budget``, chosen by the greedy descent and refill of the module's docstring. Every layer
    must be able to reach the budget with its narrowest widths."""
    ladders = [{part: sorted(getattr(layer, part)) for part in PARTS} for layer in layers]
    state = {(i, part): len(ladders[i][part]) - 1 for i in range(len(layers)) for part in PARTS}
    limit = budget * sum(layer.macs for layer in layers) * 2  # in MAC-bits of weight + input

    def bits(i: int, part: str, position: int | None = None) -> int:
        return ladders[i][part][state[i, part] if position is None else position]

    def used() -> float:
        return sum(layers[i].macs * bits(i, part) for i, part in state)

    def move(i: int, part: str, step: int) -> tuple[float, float]:
        """(error added, MAC-bits saved) by moving one operand ``step`` along its ladder."""
        table = getattr(layers[i], part)
        new = bits(i, part, state[i, part] + step)
        return table[new] - table[bits(i, part)], layers[i].macs * (bits(i, part) - new)

    while used() > limit * (1 + 1e-12):
        lower = [(move(i, part, -1), (i, part)) for (i, part), at in state.items() if at > 0]
        (_added, _saved), chosen = min(lower, key=lambda option: option[0][0] / max(option[0][1], 1e-30))
        state[chosen] -= 1
    while True:
        spare = limit * (1 + 1e-12) - used()
        raises = [
            (move(i, part, 1), (i, part))
            for (i, part), at in state.items()
            if at + 1 < len(ladders[i][part]) and -move(i, part, 1)[1] <= spare and move(i, part, 1)[0] < 0
        ]
        if not raises:
            break
        state[max(raises, key=lambda option: option[0][0] / min(option[0][1], -1e-30))[1]] += 1
    return [(bits(i, "weight"), bits(i, "input")) for i in range(len(layers))]


def record(layers: list[dict], sensitivities: dict[tuple[str, int], Sensitivity], budget: float) -> dict:
    """The summary of a budgeted quantization: each chosen layer's record (``layers``, the
    rewrite's) gets its ``sensitivity``; the realised mean bits, from the encodings that ran, over
    the chosen layers (what the budget bounds) and over every quantized layer, edge layers included."""

    def mean(chosen: Iterable[dict]) -> float:
        return mean_bits((r["macs"], r["weight_encoding"]["bits"], r["input_encoding"]["bits"]) for r in chosen)

    quantized = [layer for layer in layers if layer["status"] == "quantized"]
    chosen = [layer for layer in quantized if (layer["op"], layer["index"]) in sensitivities]
    for layer in chosen:
        layer["sensitivity"] = sensitivities[layer["op"], layer["index"]].to_json()
    return {
        "bit_budget": budget,
        "layers_chosen": len(chosen),
        "mean_bits": mean(chosen),
        "mean_bits_quantized": mean(quantized),
    }
