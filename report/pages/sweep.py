"""The bit-width sweep page: each precision's stages, latency, accuracy, weight bytes and kernels,
issue 29's goals judged on them, and the points of its latency-against-accuracy Pareto chart."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

from report.rows import Row, group_by

SWEEP_STAGES = ("quantize", "compile", "kernel_check", "bench", "accuracy")
# The options a sweep precision sets for itself (its bits, or the budget each layer's bits are chosen
# under), and those its settings table shows beside the ones the sweep sets for all (as its variants
# recorded them).
SWEPT = ("nbit_weight", "nbit_input", "bit_budget")
UNSWEPT_SETTINGS = ("skip_conv_layers", "nbit_edge", "subbyte_kernel")
INT8 = "int8-a8"  # the build each sweep precision's latency is set against
# Beside the sweep's precisions, qbuild's builds the Pareto chart shows (with every int8 peer).
PARETO_BUILDS = ("float", INT8, "int8-a8-calibrated")
# The CPU class issue 29's speed goals are set for (the page says when a machine lacks one).
SPEED_GOAL_FLAGS = ("avx512_vpopcntdq", "avx512_vnni")


@dataclass(frozen=True)
class Measure:
    """What a goal judges on a sweep row (lower is better), whether it needs real weights, how it
    must compare with the goal's limit."""

    name: str  # "drop_points" (top-1 points below float) or "vs_int8" (median over int8-a8's)
    value: Callable[[dict], float | None]  # of a sweep row; None: not measured
    accuracy: bool  # judged only where the model's weights are real
    holds: Callable[[float, float], bool]  # holds(value, limit): the goal is met


DROP = Measure(
    "drop_points",
    lambda row: None if row["delta_points"] is None else -row["delta_points"],
    accuracy=True,
    holds=operator.le,
)
VS_INT8 = Measure("vs_int8", lambda row: row["vs_int8"], accuracy=False, holds=operator.lt)


@dataclass(frozen=True)
class Goal:
    """One of issue 29's goals: the best of the candidate precisions' ``measure`` against ``limit``.
    Candidates: the ``variants`` named, and mixed-precision builds whose recorded mean bits are at
    most ``mean_bits_at_most`` (where given)."""

    name: str
    measure: Measure
    limit: float
    variants: tuple[str, ...]
    mean_bits_at_most: float | None = None


# Issue 29's goals against float (accuracy) and qbuild's int8-a8 build (speed, CPU targets).
GOALS = (
    Goal("W4A8", DROP, 1.0, ("w4a8",)),
    Goal("W4A4", DROP, 3.0, ("w4a4",)),
    Goal("W2A4", DROP, 10.0, ("w2a4",), mean_bits_at_most=3.0),
    Goal("W4A4", VS_INT8, 1.0, ("w4a4",)),
    Goal("W2A2", VS_INT8, 1.0, ("w2a2",)),
)


def _stage(row: Row, name: str) -> dict:
    stage = row.field("stages", name, default={"status": "absent"})
    note = (stage.get("error") or {}).get("message") or stage.get("reason")
    return {"status": stage["status"], "note": note}


def _settings(swept: list[Row]) -> list[str]:
    """The qconfig options a sweep group's settings table shows: those its variants set (as they
    recorded them), less the swept bit widths, then ``UNSWEPT_SETTINGS``."""
    chosen = [r.field("experiment", "variant", "qconfig", default={}) for r in swept]
    options = dict.fromkeys(name for qconfig in chosen for name in qconfig if name not in SWEPT)
    return [*options, *(name for name in UNSWEPT_SETTINGS if name not in options)]


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value and base else None


def _row(r: Row, config: dict, float_top1: float | None, float_bytes: int | None, int8_ms: float | None) -> dict:
    """One sweep precision's line of the page, against float's top-1 and bytes and int8-a8's median."""
    layers = [layer for layer in r.field("quantization", "layers", default=[]) if layer["status"] == "quantized"]
    top1, weight_bytes = r.field("accuracy", "top1"), r.field("compile", "weight_bytes")
    return {
        "variant": r.variant,
        "label": r.label,
        "id": r.id,
        "commit": r.commit,
        "weight_bits": config.get("nbit_weight"),
        "input_bits": config.get("nbit_input"),
        # under a bit budget: the MAC-weighted mean (W + A) / 2 its chosen layers ran at
        "mean_bits": r.field("quantization", "mixed_precision", "mean_bits"),
        "stages": {name: _stage(r, name) for name in SWEEP_STAGES},
        # the quantize stage's seconds: calibration, sensitivities and block reconstruction included
        "quantize_s": r.field("stages", "quantize", "seconds"),
        "median_ms": r.median_ms,
        "vs_int8": _ratio(r.median_ms, int8_ms),
        "top1": top1,
        "top5": r.field("accuracy", "top5"),
        "delta_points": None if top1 is None or float_top1 is None else 100 * (top1 - float_top1),
        "weight_bytes": weight_bytes,
        "bytes_vs_float": _ratio(weight_bytes, float_bytes),
        "bitserial_layers": sum(layer.get("kernel") == "bitserial" for layer in layers),
        "int8_layers": sum(layer.get("kernel") == "int8" for layer in layers),
        "int16_sum_convs": r.field("compile", "kernels", "int16_sum_convs"),
        "kernel_check": r.record.get("kernel_check"),
    }


def _candidate(goal: Goal, row: dict) -> bool:
    if row["variant"] in goal.variants:
        return True
    bits = row["mean_bits"]
    return goal.mean_bits_at_most is not None and bits is not None and bits <= goal.mean_bits_at_most


def judge(goal: Goal, rows: list[dict], weights: str, target: str) -> dict:
    """``goal`` judged on a sweep group's ``rows`` (``sweep``'s): ``status`` "met", "not met", "not
    measured" (no candidate has the measure) or "not judged" (an accuracy goal on weights that are not
    ``pretrained``, a speed goal off the CPU), with ``reason`` for the last, and ``row``: the best
    candidate, judged (lowest ``value`` of the measure), else None."""
    judged = {
        "name": goal.name,
        "measure": goal.measure.name,
        "limit": goal.limit,
        "mean_bits_at_most": goal.mean_bits_at_most,
        "row": None,
        "value": None,
        "reason": None,
    }
    if goal.measure.accuracy and weights != "pretrained":
        return {**judged, "status": "not judged", "reason": f"{weights} weights: accuracy goals not judged"}
    if not goal.measure.accuracy and target != "cpu":
        return {**judged, "status": "not judged", "reason": "a CPU goal"}
    measured = [
        (value, row) for row in rows if _candidate(goal, row) and (value := goal.measure.value(row)) is not None
    ]
    if not measured:
        return {**judged, "status": "not measured"}
    value, best = min(measured, key=lambda pair: pair[0])
    met = goal.measure.holds(value, goal.limit)
    return {**judged, "status": "met" if met else "not met", "row": best, "value": value}


def pareto_front(points: list[dict]) -> list[dict]:
    """``points`` (each with ``median_ms`` and ``top1``), each with ``front`` added: True where no
    other point is at least as fast and as accurate, and strictly better in one."""

    def dominates(q: dict, p: dict) -> bool:
        at_least = q["median_ms"] <= p["median_ms"] and q["top1"] >= p["top1"]
        return at_least and (q["median_ms"] < p["median_ms"] or q["top1"] > p["top1"])

    return [{**p, "front": not any(dominates(q, p) for q in points)} for p in points]


def pareto_points(group: list[Row]) -> list[dict]:
    """The Pareto chart's points of a (model, target, machine) group: the sweep's precisions,
    ``PARETO_BUILDS`` and the int8 peers, each timed and with measured top-1, front marked."""
    shown = [
        r
        for r in group
        if (r.in_sweep or r.variant in PARETO_BUILDS or (r.is_peer and r.precision == "int8"))
        and r.median_ms is not None
        and r.top1 is not None
    ]
    points = [
        {
            "build": r.label,
            "short": r.variant,
            "engine": r.engine,
            "precision": r.precision,
            "machine": r.machine,
            "median_ms": r.median_ms,
            "top1": r.top1,
        }
        for r in shown
    ]
    return pareto_front(points)


def _timed(group: list[Row], variant: str) -> Row | None:
    return next((r for r in group if r.variant == variant and r.median_ms is not None), None)


def sweep(all_rows: list[Row]) -> list[dict]:
    """Per (model, target, machine): each sweep precision's stages, latency, accuracy, weight
    bytes and kernels, against the float and int8-a8 builds of the same model; ``GOALS`` judged
    on them; the Pareto chart's points."""
    out = []
    for (model, target, machine), group in group_by(all_rows, lambda r: (r.subject, r.target, r.machine)):
        swept = sorted((r for r in group if r.in_sweep), key=lambda r: r.description.rank())
        if not swept:
            continue
        settings = _settings(swept)
        base = next((r for r in group if r.variant == "float"), None)
        int8 = _timed(group, INT8)
        float_top1 = base.field("accuracy", "top1") if base else None
        parameters = next((r.field("model", "parameters") for r in group if r.field("model", "parameters")), None)
        float_bytes = 4 * parameters if parameters else None
        configs = [r.field("quantization", "config", default={}) for r in swept]
        int8_ms = int8.median_ms if int8 else None
        rows_out = [_row(r, config, float_top1, float_bytes, int8_ms) for r, config in zip(swept, configs)]
        shared = [name for name in settings if len({repr(c.get(name)) for c in configs}) == 1]
        weights = swept[0].weights
        flags = swept[0].field("environment", "cpu", "flags", default=[])
        out.append(
            {
                "model": model,
                "target": target,
                "machine": machine,
                "weights": weights,
                "settings": [{"name": name, "value": configs[0].get(name)} for name in shared],
                "differing": [name for name in settings if name not in shared],
                "float_ms": base.median_ms if base else None,
                "float_top1": float_top1,
                "float_bytes": float_bytes,
                "float_commit": base.commit if base else None,
                "int8_ms": int8_ms,
                "int8_label": int8.label if int8 else None,
                "rows": rows_out,
                # the rule "auto" chose sub-byte kernels by (absent in results written before it was recorded)
                "auto_pairs": sorted(
                    {pairs for r in swept if (pairs := r.field("quantization", "auto_bitserial_pairs")) is not None}
                ),
                "failed": [
                    (row["label"], name, stage["note"])
                    for row in rows_out
                    for name, stage in row["stages"].items()
                    if stage["status"] == "error"
                ],
                "goals": [judge(goal, rows_out, weights.get("kind"), target) for goal in GOALS],
                "speed_goal_cpu": target == "cpu" and all(flag in flags for flag in SPEED_GOAL_FLAGS),
                "speed_goal_flags": SPEED_GOAL_FLAGS,
                "pareto": pareto_points(group),
            }
        )
    return out
