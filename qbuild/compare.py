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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from qbuild.plan import Experiment
from qbuild.schema.documents import Goal
from qbuild.schema.kinds import SIDE_BY_SIDE as SCHEMA

# The goals per target, as (numerator, denominator, at most): ratios the table always prints. A
# denominator "fastest <precision> peer" is the fastest peer of that precision timed in the run
# (OpenVINO, ONNX Runtime, PyTorch). int8-a8 is the study's build (relay's defaults),
# int8-a8-calibrated the one whose accuracy matches the int8 peers': both are judged. On the GPU
# int8 is held against the fastest fp16 peer, torch.compile with CUDA graphs.
GOALS = {
    "cpu": (
        ("int8-a8-calibrated", "fastest int8 peer", 0.9),
        ("int8-a8", "fastest int8 peer", 0.9),
        ("float", "fastest fp32 peer", 1.0),
        ("int8-a8", "float", 0.5),
        ("import-ort-qdq", "ort-int8-qdq", 1.0),  # the same QDQ model: compiled by qbuild vs run by ONNX Runtime
        ("import-nncf-qdq", "ort-nncf-qdq", 1.0),
    ),
    "cuda": (("float", "torch-fp32", 1.0), ("int8-a8", "torch-compile-fp16-graphs", 1.0)),
}
_FASTEST = "fastest "
DEFAULT_BUILDS = {
    "cpu": (
        "float",
        "int8-a8",
        "int8-a8-calibrated",
        "torch-fp32",
        "ort-fp32",
        "ort-int8-qoperator",
        "ort-int8-qdq",
        "import-ort-qdq",
        "import-nncf-qdq",
        "ort-nncf-qdq",
        "openvino-f32",
        "openvino-int8",
        "openvino-bf16",
    ),
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


def measure(
    entries: list[Entry],
    input_shape: tuple[int, ...],
    rounds: int,
    executions: int,
    say: Callable[[str], None] = print,
    idle: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Interleaved timing: ``rounds`` x (every ready entry ``executions`` times). An entry's
    ``model`` is its ``qbuild.isolated.Worker``: each build times in its own process, one at a time.
    After each build's turn the machine idles ``idle`` times as long as the turn took, so that a
    machine which slows down under sustained load (a shared VM's CPU quota) times every build rested."""
    rng = np.random.default_rng(0)
    ready = [e for e in entries if e.model is not None]
    for round_index in range(rounds):
        batch = rng.standard_normal(input_shape).astype(np.float32)
        for entry in ready:
            started = time.perf_counter()
            entry.samples_ms.extend(entry.model.time(batch, executions))
            if idle > 0:
                sleep(idle * (time.perf_counter() - started))
        say(f"round {round_index + 1}/{rounds}: " + ", ".join(f"{e.name} {e.median_ms:.1f} ms" for e in ready))


def ratios(entries: list[Entry]) -> list[dict]:
    """Each build's median against the fastest peer of its precision."""
    timed = {e.name: e for e in entries if e.median_ms is not None}
    rows = []
    for entry in timed.values():
        best = _fastest_peer(timed.values(), entry.precision)
        rows.append(
            {
                "name": entry.name,
                "label": entry.experiment.variant.label,
                "engine": entry.experiment.variant.engine,
                "precision": entry.precision,
                "median_ms": entry.median_ms,
                "samples": len(entry.samples_ms),
                "best_peer": best.name if best else None,
                "ratio_to_best_peer": entry.median_ms / best.median_ms if best else None,
            }
        )
    return rows


def _fastest_peer(timed: Iterable[Entry], precision: str) -> Entry | None:
    """The fastest timed peer (not a TVM build) of ``precision``, or None."""
    peers = [e for e in timed if e.experiment.variant.engine != "tvm" and e.precision == precision]
    return min(peers, key=lambda e: e.median_ms) if peers else None


def targets(entries: list[Entry]) -> list[dict]:
    """The goals of the entries' target (``GOALS``) that can be computed from what was timed; a
    "fastest <precision> peer" denominator names the peer it was."""
    timed = {e.name: e for e in entries if e.median_ms is not None}
    goals = GOALS.get(entries[0].experiment.target.name, ()) if entries else ()
    judged = []
    for a, b, goal in goals:
        if b.startswith(_FASTEST):
            fastest = _fastest_peer(timed.values(), b[len(_FASTEST) :].split()[0])
            b = fastest.name if fastest else b
        if a in timed and b in timed:
            ratio = timed[a].median_ms / timed[b].median_ms
            judged.append(
                {"numerator": a, "denominator": b, "goal_at_most": goal, "ratio": ratio, "met": ratio <= goal}
            )
    return judged


def render(rows: list[dict], goals: list[dict], errors: dict[str, str]) -> str:
    """The comparison as a plain-text table."""
    lines = [f"{'build':<28} {'engine':<12} {'precision':<9} {'median ms':>10} {'vs best peer':>14}"]
    for row in sorted(rows, key=lambda r: r["median_ms"]):
        vs = f"{row['ratio_to_best_peer']:.2f}x {row['best_peer']}" if row["best_peer"] else "-"
        lines.append(f"{row['name']:<28} {row['engine']:<12} {row['precision']:<9} {row['median_ms']:>10.1f} {vs:>14}")
    for goal in goals:
        verdict = "met" if goal["met"] else "not met"
        lines.append(
            f"{goal['numerator']} / {goal['denominator']} = {goal['ratio']:.2f} "
            f"(goal <= {goal['goal_at_most']}: {verdict})"
        )
    for name, error in errors.items():
        lines.append(f"{name}: not timed: {error}")
    return "\n".join(lines)


def record(model: str, entries: list[Entry], rounds: int, executions: int, env: dict, idle: float = 0.0) -> dict:
    """The comparison as a results document (``idle``: as ``measure`` took it), with the goals of
    its target that it was judged against (``qbuild.schema.documents``)."""
    target = entries[0].experiment.target.name if entries else "cpu"
    return {
        "schema": SCHEMA,
        "model": model,
        "target": target,
        "rounds": rounds,
        "executions": executions,
        "idle": idle,
        "environment": env,
        "method": "each build in a worker process of its own, one running at a time",
        "builds": ratios(entries),
        "goals": [Goal(*goal).to_json() for goal in GOALS.get(target, ())],
        "targets": targets(entries),
        "errors": {e.name: e.error for e in entries if e.error},
        "experiments": [e.experiment.to_json() for e in entries],
    }


def save(root: Path, machine_id: str, document: dict) -> Path:
    """Write the comparison where the report finds it: <root>/<machine>/side-by-side/<model>.json
    (<model>-cuda.json for a GPU's)."""
    from qbuild.results import write_result

    suffix = "" if document.get("target", "cpu") == "cpu" else f"-{document['target']}"
    path = Path(root) / machine_id / "side-by-side" / f"{document['model']}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_result(path, document)
    return path


def run(
    experiments: list[Experiment], rounds: int, executions: int, say: Callable[[str], None] = print, idle: float = 0.0
) -> list[Entry]:
    """Build every experiment in a worker process of its own (``qbuild.isolated``), then time them
    side by side; the workers end before this returns."""
    from qbuild.isolated import Worker, WorkerError
    from qbuild.models import get_spec
    from qbuild.stages import build

    first = experiments[0]
    side = get_spec(first.model).input_side(first.profile.image_size)
    entries = [Entry(experiment) for experiment in experiments]
    try:
        for entry in entries:
            say(f"building {entry.name} in its own process ...")
            try:
                entry.model = Worker(entry.experiment, build=build)
            except WorkerError as exc:  # a build that fails is reported, the rest still run
                entry.error = str(exc)
                say(f"{entry.name}: {entry.error}")
        measure(entries, (1, 3, side, side), rounds, executions, say, idle)
    finally:
        for entry in entries:
            if entry.model is not None:
                entry.model.close()
    return entries
