"""The study's benchmark protocol: iterations x executions, a fresh random input each iteration.

Each iteration draws a new N(0, 1) input (the study used torch.randn), uploads it once, then
times ``executions`` synchronous runs of the model on it. ``warmup`` runs before the first
iteration are timed only to size the run and are not kept. Raw samples are kept per iteration.

A time budget keeps untuned models (seconds per image) from running for an hour: when the
requested counts would not fit, executions per iteration shrink first (fresh inputs are what
the protocol is about), then iterations; what actually ran is recorded next to what was asked.
Under a budget the warm-up stops once the runs after the first have taken ``WARMUP_SHARE`` of it:
a model that takes seconds per run is warm after two (ResNet-50's untuned float build: 4.7 s
per run, three warm-up runs were a quarter of its bench). The first run does not count, nor does
it size the run: a peer that compiles lazily (``torch.compile``: ~18 s, then its CUDA graphs
recorded on later calls) spends it compiling; the last warm-up run is the estimate.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from qbuild.errors import QbuildError

WARMUP_SHARE = 0.1  # of a benchmark's budget, at most, for the warm-up runs after the first


@dataclass(frozen=True)
class Protocol:
    """How to benchmark: the study used 15 iterations x 30 executions."""

    iterations: int = 15
    executions: int = 30
    warmup: int = 3
    budget_s: float | None = None  # None: always run the full counts
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "executions", "warmup"):
            minimum = 0 if name == "warmup" else 1
            if getattr(self, name) < minimum:
                raise QbuildError(
                    f"benchmark {name} must be >= {minimum}, got {getattr(self, name)}",
                    f"pass --{name} {max(minimum, 1)} or more",
                )
        if self.budget_s is not None and self.budget_s <= 0:
            raise QbuildError(
                f"benchmark budget must be positive, got {self.budget_s}",
                "pass a positive --budget in seconds, or none",
            )
        if self.budget_s is not None and self.warmup < 1:
            raise QbuildError(
                "a benchmark budget needs at least one warm-up run to size the run",
                "pass --warmup 1 or more, or drop the budget",
            )

    def to_json(self) -> dict:
        return asdict(self)


def fit_counts(protocol: Protocol, seconds_per_run: float) -> tuple[int, int]:
    """(iterations, executions) that fit the protocol's budget at ``seconds_per_run``."""
    iterations, executions = protocol.iterations, protocol.executions
    if protocol.budget_s is None or seconds_per_run <= 0:
        return iterations, executions
    runs_allowed = max(1, math.floor(protocol.budget_s / seconds_per_run))
    if iterations * executions <= runs_allowed:
        return iterations, executions
    executions = max(1, runs_allowed // iterations)
    if iterations * executions > runs_allowed:
        iterations = max(1, runs_allowed)
    return iterations, executions


def summarise(samples_ms: list[list[float]]) -> dict:
    """Median, mean, spread and percentiles over all samples (ms)."""
    flat = np.asarray([s for iteration in samples_ms for s in iteration], dtype=np.float64)
    return {
        "n": int(flat.size),
        "median_ms": float(np.median(flat)),
        "mean_ms": float(flat.mean()),
        "std_ms": float(flat.std(ddof=1)) if flat.size > 1 else 0.0,
        "min_ms": float(flat.min()),
        "max_ms": float(flat.max()),
        "p10_ms": float(np.percentile(flat, 10)),
        "p90_ms": float(np.percentile(flat, 90)),
        "iteration_medians_ms": [float(statistics.median(it)) for it in samples_ms],
    }


def benchmark(
    prepare: Callable[[np.ndarray], Callable[[], None]],
    input_shape: tuple[int, ...],
    protocol: Protocol,
    on_iteration: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Run the protocol. ``prepare(batch)`` uploads a batch and returns a closure that runs the
    model once and waits for it. ``on_iteration(done, total, eta_s)`` reports progress.
    """

    def timer(batch: np.ndarray) -> Timer:
        run = prepare(batch)
        return lambda n: [time_ms(run) for _ in range(n)]

    return benchmark_timed(timer, input_shape, protocol, on_iteration)


# n -> the milliseconds of n runs of a model on the batch it was made for.
Timer = Callable[[int], list[float]]


def benchmark_timed(
    timer: Callable[[np.ndarray], Timer],
    input_shape: tuple[int, ...],
    protocol: Protocol,
    on_iteration: Callable[[int, int, float], None] | None = None,
) -> dict:
    """``benchmark`` for a model timed by a clock of its own (a remote device's, ``qbuild.remote``):
    ``timer(batch)`` uploads a batch and returns the function that times runs on it."""
    rng = np.random.default_rng(protocol.seed)

    def fresh_timer() -> Timer:
        return timer(rng.standard_normal(input_shape).astype(np.float32))

    warmup_timer = fresh_timer() if protocol.warmup else None
    warmup_ms: list[float] = []
    while warmup_timer is not None and len(warmup_ms) < protocol.warmup and not _warm_enough(warmup_ms, protocol):
        warmup_ms.extend(warmup_timer(1))
    pilot_s = warmup_ms[-1] / 1e3 if warmup_ms else 0.0
    iterations, executions = fit_counts(protocol, pilot_s)

    samples: list[list[float]] = []
    started = time.perf_counter()
    for i in range(iterations):
        samples.append(fresh_timer()(executions))
        if on_iteration is not None:
            elapsed = time.perf_counter() - started
            on_iteration(i + 1, iterations, elapsed / (i + 1) * (iterations - i - 1))
    truncated = (iterations, executions) != (protocol.iterations, protocol.executions)
    return {
        "protocol": protocol.to_json(),
        "iterations_run": iterations,
        "executions_run": executions,
        "truncated_by_budget": truncated,
        "warmup_ms": warmup_ms,
        "samples_ms": samples,
        "summary": summarise(samples),
    }


def _warm_enough(warmup_ms: list[float], protocol: Protocol) -> bool:
    """Have the warm-up runs after the first used their share of the budget (``WARMUP_SHARE``)?"""
    return protocol.budget_s is not None and sum(warmup_ms[1:]) / 1e3 >= protocol.budget_s * WARMUP_SHARE


def time_ms(run: Callable[[], None]) -> float:
    """Wall-clock milliseconds of one call of ``run``."""
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3
