"""A plan run as parallel jobs: their untimed stages overlap, a timed stage overlaps nothing."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from qbuild.gate import TimingGate
from qbuild.plan import build_plan
from qbuild.progress import Progress
from qbuild.runner import run_plan


def _hold(gate_dir: str, name: str, delay_s: float, hold_s: float, log: str) -> None:
    """After ``delay_s``, hold the gate as stage ``name`` for ``hold_s``; log when it was inside."""
    time.sleep(delay_s)
    with TimingGate(Path(gate_dir)).stage(name):
        inside = time.time()
        time.sleep(hold_s)
        left = time.time()
    with open(log, "a") as out:
        out.write(f"{name} {inside} {left}\n")


def _run_jobs(tmp_path: Path, jobs: list[tuple[str, float, float]]) -> dict[str, tuple[float, float]]:
    """Run each (stage, delay, hold) in a process of its own; {stage: (entered, left)}."""
    log = tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_hold, args=(str(tmp_path), *job, str(log))) for job in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return {name: (float(inside), float(left)) for name, inside, left in
            (line.split() for line in log.read_text().splitlines())}


def test_untimed_stages_of_two_jobs_run_at_the_same_time(tmp_path):
    held = _run_jobs(tmp_path, [("compile", 0.0, 1.5), ("quantize", 0.0, 1.5)])
    assert held["compile"][0] < held["quantize"][1] and held["quantize"][0] < held["compile"][1]


def test_a_timed_stage_waits_for_the_stage_running_and_holds_back_the_next(tmp_path):
    """compile runs; bench asks while it runs and waits; analyse asks while bench waits and waits too."""
    held = _run_jobs(tmp_path, [("compile", 0.0, 2.0), ("bench", 1.0, 1.0), ("analyse", 1.5, 0.5)])
    assert held["bench"][0] >= held["compile"][1], "the bench started while another stage ran"
    assert held["analyse"][0] >= held["bench"][1], "a stage started while the bench ran"


def _threads_inside(gate_dir: str, name: str, jobs: int, log: str) -> None:
    """Log how many threads TVM, PyTorch and NumPy's BLAS run on inside the gate as stage ``name``."""
    import threadpoolctl
    import torch
    import tvm

    with TimingGate(Path(gate_dir), jobs).stage(name):
        blas = {pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"}
        counts = tvm.get_global_func("runtime.NumThreads")(), torch.get_num_threads(), *blas
    with open(log, "a") as out:
        out.write(" ".join(map(str, (name, *counts))) + "\n")


def test_an_untimed_stage_runs_on_its_jobs_share_of_the_threads_and_a_timed_one_on_all(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_NUM_THREADS", "4")  # the pool of each job process: 4 threads
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")  # and NumPy's BLAS
    log = tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    for stage in ("accuracy", "bench"):
        process = context.Process(target=_threads_inside, args=(str(tmp_path), stage, 2, str(log)))
        process.start()
        process.join(timeout=120)
        assert process.exitcode == 0
    counts = {name: tuple(map(int, counts)) for name, *counts in (line.split() for line in log.read_text().splitlines())}
    assert counts == {"accuracy": (2, 2, 2), "bench": (4, 4, 4)}, "(TVM, PyTorch, BLAS) threads"


def test_a_plan_of_two_models_runs_as_two_jobs_and_returns_its_outcomes_in_plan_order(tmp_path):
    plan = build_plan(["resnet18", "efficientnet_lite0"], ["torch-fp32"], profile="quick", weights="random")
    outcomes = run_plan(plan, tmp_path, progress=Progress(quiet=True), jobs=2)
    assert [o.record["id"] for o in outcomes] == [e.id for e in plan]
    for outcome in outcomes:
        assert outcome.record["jobs"] == 2 and outcome.record["stages"]["bench"]["status"] == "ok"
