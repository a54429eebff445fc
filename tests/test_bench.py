"""The study's benchmark protocol, checked with a fake model that records what it was given."""

from __future__ import annotations

import numpy as np
import pytest

from qbuild.bench import Protocol, benchmark, fit_counts
from qbuild.errors import QbuildError


class FakeModel:
    """Records each uploaded batch and each run; one run 'takes' no real time."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.runs_per_batch: list[int] = []

    def prepare(self, batch: np.ndarray):
        self.batches.append(batch)
        self.runs_per_batch.append(0)
        index = len(self.batches) - 1

        def run() -> None:
            self.runs_per_batch[index] += 1

        return run


def test_each_iteration_gets_a_fresh_random_input_and_runs_it_executions_times():
    model = FakeModel()
    result = benchmark(model.prepare, (1, 3, 8, 8), Protocol(iterations=4, executions=5, warmup=2))
    # one warm-up batch, then one fresh batch per iteration
    assert len(model.batches) == 5
    assert model.runs_per_batch == [2, 5, 5, 5, 5]
    firsts = [b.ravel()[0] for b in model.batches]
    assert len(set(firsts)) == 5, "every batch must be a new random draw"
    assert np.std(np.concatenate([b.ravel() for b in model.batches])) == pytest.approx(1.0, abs=0.1)
    assert [len(it) for it in result["samples_ms"]] == [5] * 4
    assert len(result["warmup_ms"]) == 2
    assert result["summary"]["n"] == 20 and not result["truncated_by_budget"]


def test_the_same_seed_gives_the_same_inputs():
    a, b = FakeModel(), FakeModel()
    benchmark(a.prepare, (4,), Protocol(iterations=2, executions=1, warmup=0, seed=7))
    benchmark(b.prepare, (4,), Protocol(iterations=2, executions=1, warmup=0, seed=7))
    np.testing.assert_array_equal(np.stack(a.batches), np.stack(b.batches))


def test_budget_shrinks_executions_first_then_iterations():
    protocol = Protocol(iterations=15, executions=30, budget_s=120.0)
    assert fit_counts(protocol, 0.010) == (15, 30)  # 4.5 s: fits
    assert fit_counts(protocol, 4.9) == (15, 1)  # ResNet50 untuned: 24 runs allowed
    assert fit_counts(protocol, 1.0) == (15, 8)  # 120 runs allowed
    assert fit_counts(protocol, 60.0) == (2, 1)  # only 2 runs fit
    assert fit_counts(Protocol(budget_s=None), 100.0) == (15, 30)


def test_a_budget_that_cuts_the_run_is_recorded():
    def slow_prepare(_batch):
        import time

        return lambda: time.sleep(0.02)

    result = benchmark(slow_prepare, (2,), Protocol(iterations=3, executions=10, warmup=1, budget_s=0.2))
    assert result["truncated_by_budget"]
    assert result["iterations_run"] * result["executions_run"] <= 10
    assert result["protocol"]["executions"] == 10


@pytest.mark.parametrize("field, value", [("iterations", 0), ("executions", 0), ("warmup", -1), ("budget_s", -5.0)])
def test_impossible_protocols_are_rejected(field, value):
    with pytest.raises(QbuildError):
        Protocol(**{field: value})


def test_a_budget_needs_a_warmup_run_to_size_the_run():
    with pytest.raises(QbuildError, match="warm-up"):
        Protocol(warmup=0, budget_s=10.0)


def test_under_a_budget_the_warmup_stops_once_the_runs_after_the_first_have_taken_their_share():
    def slow_prepare(_batch):
        import time

        return lambda: time.sleep(0.03)

    slow = benchmark(slow_prepare, (2,), Protocol(iterations=1, executions=1, warmup=4, budget_s=0.2))
    assert len(slow["warmup_ms"]) == 2, "the second 30 ms run is more than a tenth of a 0.2 s budget"
    ample = benchmark(slow_prepare, (2,), Protocol(iterations=1, executions=1, warmup=3, budget_s=10.0))
    assert len(ample["warmup_ms"]) == 3


def test_a_first_run_that_compiles_neither_ends_the_warmup_nor_sizes_the_run():
    """torch.compile compiles at its first call (seconds), then runs in milliseconds."""
    import time

    calls = []

    def compiling(_batch):
        def run():
            calls.append(1)
            time.sleep(0.5 if len(calls) == 1 else 0.001)

        return run

    result = benchmark(compiling, (2,), Protocol(iterations=3, executions=4, warmup=3, budget_s=1.0))
    assert len(result["warmup_ms"]) == 3
    assert not result["truncated_by_budget"], "sized by a 1 ms run, the 12 runs fit the budget"
    assert result["summary"]["median_ms"] < 100
