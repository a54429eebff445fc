"""Side-by-side benchmark: several builds of one model timed in interleaved rounds.

Timings on a shared 2-core machine drift by tens of percent over minutes, so comparing numbers
taken at different times says little. Here every build is made first; then each round runs
every build ``executions`` times in turn (on a fresh random input per round), so a slow spell
slows all of them alike. The result is each build's median and its ratio to the others, above
all to the fastest peer of the same precision; ``save`` keeps it as a results file for the
report. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from qbuild.bench import time_ms
from qbuild.plan import Experiment

SCHEMA = "qbuild.side-by-side/1"
# The issues' goals per target, as (numerator, denominator, at most): ratios the table always
# prints. On the GPU (issue 7) int8 is held against the fastest fp16 peer, torch.compile with
# CUDA graphs.
GOALS = {
    # int8-a8 is the study's build (relay's defaults), int8-a8-calibrated the one whose accuracy is
    # ONNX Runtime int8's (relay's defaults lose most of EfficientNet-Lite0's top-1): both are judged.
    "cpu": (("int8-a8", "ort-int8-qoperator", 0.9), ("int8-a8-calibrated", "ort-int8-qoperator", 0.9),
            ("float", "ort-fp32", 1.1), ("int8-a8", "float", 0.5)),
    "cuda": (("float", "torch-fp32", 1.0), ("int8-a8", "torch-compile-fp16-graphs", 1.0)),
}
DEFAULT_BUILDS = {
    "cpu": ("float", "int8-a8", "int8-a8-calibrated", "torch-fp32", "ort-fp32", "ort-int8-qoperator", "ort-int8-qdq"),
    "cuda": ("float", "int8-a8", "torch-fp32", "torch-compile-fp16-graphs"),
}


@dataclass
class Entry:
    """One build in the comparison."""

    experiment: Experiment
    model: object | None = None  # anything with ``prepare(batch) -> run once`` (compiled or peer)
    samples_ms: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def name(self) -> str:
        return self.experiment.variant.name

    @property
    def precision(self) -> str:
        return self.experiment.variant.precision

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.samples_ms) if self.samples_ms else None


def measure(entries: list[Entry], input_shape: tuple[int, ...], rounds: int, executions: int,
            say: Callable[[str], None] = print) -> None:
    """Interleaved timing: ``rounds`` x (every ready entry ``executions`` times)."""
    rng = np.random.default_rng(0)
    ready = [e for e in entries if e.model is not None]
    for round_index in range(rounds):
        batch = rng.standard_normal(input_shape).astype(np.float32)
        for entry in ready:
            run = entry.model.prepare(batch)
            run()  # untimed: the first call after a new upload
            entry.samples_ms.extend(time_ms(run) for _ in range(executions))
        say(f"round {round_index + 1}/{rounds}: " + ", ".join(f"{e.name} {e.median_ms:.1f} ms" for e in ready))


def ratios(entries: list[Entry]) -> list[dict]:
    """Each build's median against the fastest peer of its precision."""
    timed = {e.name: e for e in entries if e.median_ms is not None}
    rows = []
    for entry in timed.values():
        peers = [e for e in timed.values() if e.experiment.variant.engine != "tvm" and e.precision == entry.precision]
        best = min(peers, key=lambda e: e.median_ms) if peers else None
        rows.append({"name": entry.name, "label": entry.experiment.variant.label, "engine": entry.experiment.variant.engine,
                     "precision": entry.precision, "median_ms": entry.median_ms, "samples": len(entry.samples_ms),
                     "best_peer": best.name if best else None,
                     "ratio_to_best_peer": entry.median_ms / best.median_ms if best else None})
    return rows


def targets(entries: list[Entry]) -> list[dict]:
    """The goals of the entries' target (``GOALS``) that can be computed from what was timed."""
    timed = {e.name: e.median_ms for e in entries if e.median_ms is not None}
    goals = GOALS.get(entries[0].experiment.target.name, ()) if entries else ()
    return [{"numerator": a, "denominator": b, "goal_at_most": goal, "ratio": timed[a] / timed[b], "met": timed[a] / timed[b] <= goal}
            for a, b, goal in goals if a in timed and b in timed]


def render(rows: list[dict], goals: list[dict], errors: dict[str, str]) -> str:
    """The comparison as a plain-text table."""
    lines = [f"{'build':<28} {'engine':<12} {'precision':<9} {'median ms':>10} {'vs best peer':>14}"]
    for row in sorted(rows, key=lambda r: r["median_ms"]):
        vs = f"{row['ratio_to_best_peer']:.2f}x {row['best_peer']}" if row["best_peer"] else "-"
        lines.append(f"{row['name']:<28} {row['engine']:<12} {row['precision']:<9} {row['median_ms']:>10.1f} {vs:>14}")
    for goal in goals:
        verdict = "met" if goal["met"] else "not met"
        lines.append(f"{goal['numerator']} / {goal['denominator']} = {goal['ratio']:.2f} (goal <= {goal['goal_at_most']}: {verdict})")
    for name, error in errors.items():
        lines.append(f"{name}: not timed: {error}")
    return "\n".join(lines)


def record(model: str, entries: list[Entry], rounds: int, executions: int, env: dict) -> dict:
    """The comparison as a results document."""
    target = entries[0].experiment.target.name if entries else "cpu"
    return {"schema": SCHEMA, "model": model, "target": target, "rounds": rounds, "executions": executions,
            "environment": env,
            "builds": ratios(entries), "targets": targets(entries),
            "errors": {e.name: e.error for e in entries if e.error},
            "experiments": [e.experiment.to_json() for e in entries]}


def save(root: Path, machine_id: str, document: dict) -> Path:
    """Write the comparison where the report finds it: <root>/<machine>/side-by-side/<model>.json
    (<model>-cuda.json for a GPU's)."""
    from qbuild.results import write_result

    suffix = "" if document.get("target", "cpu") == "cpu" else f"-{document['target']}"
    path = Path(root) / machine_id / "side-by-side" / f"{document['model']}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_result(path, document)
    return path


def run(experiments: list[Experiment], rounds: int, executions: int, say: Callable[[str], None] = print) -> list[Entry]:
    """Build every experiment's model (one model load), then time them side by side."""
    from qbuild.errors import one_line
    from qbuild.models import load_model
    from qbuild.runner import build

    first = experiments[0]
    loaded = load_model(first.model, first.weights, first.profile.image_size)
    entries = [Entry(experiment) for experiment in experiments]
    for entry in entries:
        say(f"building {entry.name} ...")
        try:
            entry.model = build(entry.experiment, loaded)
        except Exception as exc:  # noqa: BLE001 - a build that fails is reported, the rest still run
            entry.error = one_line(exc)
            say(f"{entry.name}: {entry.error}")
    measure(entries, loaded.input_shape, rounds, executions, say)
    return entries
