"""A plan run as parallel jobs: their untimed stages overlap, a timed stage overlaps nothing
(the job that times stops the others)."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from qbuild import threads
from qbuild.gate import TimingGate, end_with_parent, process_state, release_all
from qbuild.plan import build_plan
from qbuild.progress import Progress
from qbuild.scheduler import run_plan
from qbuild.stagelog import StageLog


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
    return {
        name: (float(inside), float(left))
        for name, inside, left in (line.split() for line in log.read_text().splitlines())
    }


def test_untimed_stages_of_two_jobs_run_at_the_same_time(tmp_path):
    held = _run_jobs(tmp_path, [("compile", 0.0, 1.5), ("quantize", 0.0, 1.5)])
    assert held["compile"][0] < held["quantize"][1] and held["quantize"][0] < held["compile"][1]


def _count_in_a_stage(gate_dir: str, ready, log: str) -> None:
    """A job: joined, it spends 3 s of wall time in an untimed stage, stamping the clock every 5 ms."""
    gate = TimingGate(Path(gate_dir))
    threads.run_on(1)  # TVM imported before the clock starts
    with gate.joined():
        ready.wait()
        stamps: list[float] = []

        def busy() -> None:
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                stamps.append(time.monotonic())
                time.sleep(0.005)

        stages = StageLog(Progress(quiet=True), gate)
        stages.run("compile", busy)
    Path(log).write_text(json.dumps({"stamps": stamps, "seconds": stages.stages["compile"]["seconds"]}))


def _time_alone(gate_dir: str, ready, log: str) -> None:
    """A job: joined, after 1 s it times for 1 s."""
    gate = TimingGate(Path(gate_dir))
    threads.run_on(1)
    with gate.joined():
        ready.wait()
        time.sleep(1.0)
        stages = StageLog(Progress(quiet=True), gate)
        stages.run("bench", lambda: time.sleep(1.0))
    Path(log).write_text(json.dumps({"seconds": stages.stages["bench"]["seconds"]}))


def test_a_timed_stage_stops_the_other_jobs_and_their_stages_leave_that_time_out(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(2)
    counter = context.Process(target=_count_in_a_stage, args=(str(tmp_path), ready, str(tmp_path / "counter")))
    timer = context.Process(target=_time_alone, args=(str(tmp_path), ready, str(tmp_path / "timer")))
    for process in (counter, timer):
        process.start()
    for process in (counter, timer):
        process.join(timeout=120)
        assert process.exitcode == 0
    ((pid, since, until),) = (line.split() for line in (tmp_path / "stopped").read_text().splitlines())
    since, until = float(since), float(until)
    counted = json.loads((tmp_path / "counter").read_text())
    assert int(pid) == timer.pid and 1.0 <= until - since < 2.0
    assert not [t for t in counted["stamps"] if since + 0.05 < t < until], "the other job ran while one timed"
    assert counted["seconds"] == pytest.approx(3.0 - (until - since), abs=0.1), "the stopped time is not its stage's"
    assert json.loads((tmp_path / "timer").read_text())["seconds"] == pytest.approx(1.0, abs=0.1)


def test_jobs_stopped_by_a_job_that_died_while_timing_are_let_go(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(2)
    counter = context.Process(target=_count_in_a_stage, args=(str(tmp_path), ready, str(tmp_path / "counter")))
    counter.start()
    gate = TimingGate(tmp_path)
    with gate.joined():
        ready.wait()
        with gate.stage("bench"):  # this process times: the counter stops ...
            stopped = Path(f"/proc/{counter.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            release_all(tmp_path)  # ... and goes on, as when the plan ends after a job died here
            counter.join(timeout=30)
    assert stopped in ("T", "t") and counter.exitcode == 0


def _threads_inside(gate_dir: str, name: str, log: str) -> None:
    """Log how many threads TVM, PyTorch and NumPy's BLAS run on inside the gate as stage ``name``."""
    import threadpoolctl
    import torch
    import tvm

    gate = TimingGate(Path(gate_dir))
    with gate.joined(), gate.stage(name):
        blas = {pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"}
        counts = tvm.get_global_func("runtime.NumThreads")(), torch.get_num_threads(), *blas
    with open(log, "a") as out:
        out.write(" ".join(map(str, (name, *counts))) + "\n")


def _threads_in_stages(tmp_path: Path, stages: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """{stage: (TVM, PyTorch, BLAS threads)} in a job process whose pools have 4 threads."""
    log = tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    for stage in stages:
        process = context.Process(target=_threads_inside, args=(str(tmp_path), stage, str(log)))
        process.start()
        process.join(timeout=120)
        assert process.exitcode == 0
    return {name: tuple(map(int, counts)) for name, *counts in (line.split() for line in log.read_text().splitlines())}


def test_an_untimed_stage_runs_on_its_jobs_share_of_the_threads_and_a_timed_one_on_all(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_NUM_THREADS", "4")  # the pools of each job process: 4 threads
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    with TimingGate(tmp_path).joined():  # this process: the other job, still running
        shared = _threads_in_stages(tmp_path, ("accuracy", "bench"))
    assert shared == {"accuracy": (2, 2, 2), "bench": (4, 4, 4)}, "(TVM, PyTorch, BLAS) threads"
    (tmp_path / "log").unlink()
    assert _threads_in_stages(tmp_path, ("accuracy",)) == {"accuracy": (4, 4, 4)}, "the last job running takes all"


def test_a_plan_of_two_models_runs_as_two_jobs_and_returns_its_outcomes_in_plan_order(tmp_path):
    plan = build_plan(["resnet18", "efficientnet_lite0"], ["torch-fp32"], profile="quick", weights="random")
    outcomes = run_plan(plan, tmp_path, progress=Progress(quiet=True), jobs=2)
    assert [o.record["id"] for o in outcomes] == [e.id for e in plan]
    for outcome in outcomes:
        assert outcome.record["jobs"] == 2 and outcome.record["stages"]["bench"]["status"] == "ok"


def _write_pid_and_wait(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(60)


def _plan_with_one_job(pid_file: str) -> None:
    """A plan's process in miniature: a pool of one job process, as ``run_plan`` makes it."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=end_with_parent) as pool:
        pool.submit(_write_pid_and_wait, pid_file).result()


def _alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux (/proc, prctl)")
def test_a_job_process_ends_when_the_plans_process_is_killed(tmp_path):
    pid_file = tmp_path / "job.pid"
    plan = multiprocessing.get_context("spawn").Process(target=_plan_with_one_job, args=(str(pid_file),))
    plan.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    job = int(pid_file.read_text())
    assert _alive(job)
    plan.kill()  # SIGKILL: the plan's process cleans nothing up itself
    plan.join()
    deadline = time.monotonic() + 10
    while _alive(job) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(job), "the job outlived the plan"
