"""``qbuild tune``: a knob search over the builtin conv schedule, per conv workload.

The builtin schedule has one knob, the register tile of a conv (``qbuild.kernels.tiles``). For
every distinct conv workload of the models given (the fused PrimFuncs that the builtin pipeline
schedules, found by ``schedule.conv_workload``), each candidate tile is scheduled, built on its
own and timed on random operands; the candidates of all workloads run in interleaved rounds (a
slow spell of this shared machine slows them alike) and the fastest median wins. The tiles go
into this machine's tuning database (``qbuild.tuning_db``), merged with what it held, and the
``tuned`` kernel set compiles with them. This tunes the builtin schedule's knob; it does not
search schedule space from scratch as MetaSchedule does (no MetaSchedule database is made).

TVM 0.27 notes learned here: ``tvm.compile`` of a module of PrimFuncs returns an ``Executable``
whose ``jit()`` module has ``time_evaluator``; a PrimFunc's ``params`` are its buffers (shape and
dtype on each; there is no ``buffer_map``); a block's read regions name their buffer as
``region.source``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from qbuild.kernels.tiles import ConvTile
from qbuild.tuning_db import Record, TuningDatabase

OPERAND_SEED = 0


@dataclass
class Candidate:
    """One tile of one workload, with its timings."""

    tile: ConvTile
    run: Callable[[], float]  # one timed call, in ms
    samples_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)


def conv_functions(mod, target) -> dict:
    """The distinct conv workloads of a Relax module under the builtin pipeline:
    {key: (ConvWorkload, fused PrimFunc)}."""
    import tvm

    from qbuild.kernels.pipeline import lowering_passes
    from qbuild.kernels.schedule import conv_workload
    from qbuild.kernels.vectors import of_target

    with target:
        lowered = tvm.transform.Sequential(lowering_passes(of_target(target)))(mod)
    found: dict = {}
    for func in lowered.functions.values():
        workload = conv_workload(func) if isinstance(func, tvm.tirx.PrimFunc) else None
        if workload is not None:
            found.setdefault(workload.key, (workload, func))
    return found


def _operand(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    low = 0 if dtype.startswith("uint") else -8
    return rng.integers(low, 8, shape).astype(dtype)


def timer(func, workload, tile: ConvTile, target, features: frozenset[str], executions: int) -> Callable[[], float]:
    """``func`` scheduled with ``tile``, built on its own; a call timing ``executions`` runs (ms).
    Raises ValueError if the conv rule does not take the tile."""
    import tvm

    from qbuild.kernels.pipeline import codegen_target
    from qbuild.kernels.schedule import KernelReport, schedule_function

    report = KernelReport()
    scheduled = schedule_function(func.with_attr("global_symbol", "main"), features, report, {workload.key: tile})
    if report.tuned_convs != 1:
        raise ValueError(f"the conv schedule does not take {tile} for {workload.summary}")
    library = tvm.compile(tvm.IRModule({"main": scheduled}), codegen_target("builtin", target))
    rng = np.random.default_rng(OPERAND_SEED)
    args = [tvm.runtime.tensor(_operand(rng, tuple(int(d) for d in p.shape), str(p.dtype))) for p in func.params]
    evaluator = library.jit().time_evaluator("main", tvm.cpu(), number=executions, repeat=1)
    return lambda: float(evaluator(*args).mean * 1e3)


def workloads_of(modules: list, target) -> dict:
    """The distinct conv workloads of all ``modules``: {key: (ConvWorkload, fused PrimFunc)}."""
    workloads: dict = {}
    for mod in modules:
        for key, found in conv_functions(mod, target).items():
            workloads.setdefault(key, found)
    return workloads


def tune(
    workloads: dict, target, rounds: int = 5, executions: int = 10, say: Callable[[str], None] = print
) -> dict[str, tuple[object, list[Candidate]]]:
    """Time every candidate tile of every workload (``workloads_of``) in interleaved rounds:
    {key: (workload, candidates)}; the default tile is each list's first entry."""
    from qbuild.kernels.vectors import cpu_features, of_features

    features = cpu_features(target)
    registers = of_features(features)
    measured = {}
    for index, (key, (workload, func)) in enumerate(workloads.items(), start=1):
        tiles = workload.candidate_tiles(registers)
        say(f"building {len(tiles)} tiles of conv {index}/{len(workloads)}: {workload.summary}")
        measured[key] = (
            workload,
            [Candidate(tile, timer(func, workload, tile, target, features, executions)) for tile in tiles],
        )
    for round_index in range(rounds):
        for _, candidates in measured.values():
            for candidate in candidates:
                candidate.samples_ms.append(candidate.run())
        say(f"round {round_index + 1}/{rounds} done")
    return measured


def to_database(
    measured: dict,
    previous: TuningDatabase | None,
    machine_id: str,
    rounds: int,
    environment: dict,
    keep: set[str] | None = None,
) -> TuningDatabase:
    """A record per measured workload (its fastest tile), added to or replacing ``previous``'s.
    ``keep``: the workload keys whose earlier records stay (None: all); a change to a conv's
    compute changes its key, and the old key's record would otherwise stay for good."""
    records = {
        key: record for key, record in (previous.records if previous else {}).items() if keep is None or key in keep
    }
    for key, (workload, candidates) in measured.items():
        best = min(candidates, key=lambda c: c.median_ms)
        records[key] = Record(best.tile, workload.summary, candidates[0].median_ms, best.median_ms, len(candidates))
    return TuningDatabase(machine_id, rounds, records, environment)


def render(database: TuningDatabase) -> str:
    """The database as a table: each workload's tile and its speed-up over the default tile."""
    lines = [f"{'conv workload':<72} {'tile':>6} {'default ms':>11} {'tuned ms':>9} {'speed-up':>9}"]
    for record in sorted(database.records.values(), key=lambda r: r.summary):
        lines.append(
            f"{record.summary:<72} {record.tile.label():>6} {record.default_ms:>11.3f} {record.best_ms:>9.3f} "
            f"{record.default_ms / record.best_ms:>8.2f}x"
        )
    total_default, total_best = database.summed_ms()
    lines.append(
        f"all {len(database.records)} workloads, once each: {total_default:.1f} ms with the default tiles, "
        f"{total_best:.1f} ms tuned ({database.trials} tiles measured)"
    )
    return "\n".join(lines)
