"""A plan's experiments run in order or shared out to job processes (``run_plan``): each process
runs its models' experiments in plan order with one ``ModelSession`` for them, and the timed stages
of all jobs pass one ``TimingGate`` so that they run alone.

The experiments of ``rpc:`` targets (remote devices, ``qbuild.remote``) go to a pool of job
processes one by one: each builds here, on its share of the cores, and runs its measuring stages
on the next free device of its key (the tracker's queue), so the devices of a key measure in
parallel, one experiment each at a time. Nothing of theirs is timed here: they pass no gate."""

from __future__ import annotations

from pathlib import Path

from qbuild.gate import TimingGate, end_with_parent, release_all
from qbuild.plan import Experiment
from qbuild.progress import Progress
from qbuild.runner import Outcome, run_experiment
from qbuild.session import ModelSession


def run_plan(
    experiments: list[Experiment],
    root: Path,
    force: bool = False,
    progress: Progress | None = None,
    stop_after_s: float | None = None,
    jobs: int = 1,
) -> list[Outcome]:
    """Run every experiment; each result is written as soon as it is done. With ``stop_after_s``,
    no experiment starts once that many seconds have passed (a lent machine's time is limited;
    what finished is kept). With ``jobs`` > 1, the plan's models are shared out to that many
    processes, each running its models' experiments in plan order (a model's builds share its
    trace and evaluation images, ``ModelSession``): their untimed stages overlap, their timed stages
    run alone (``qbuild.gate``). The experiments of ``rpc:`` targets go to ``jobs`` processes one
    by one, each measured on the next free device of its key (this module's doc). Outcomes come
    back in plan order."""
    import time

    from qbuild.results import ensure_writable

    progress = progress or Progress()
    ensure_writable(Path(root))
    numbered = list(enumerate(experiments, start=1))
    deadline = None if stop_after_s is None else time.time() + stop_after_s
    remote = [(index, experiment) for index, experiment in numbered if experiment.target.remote is not None]
    local = [(index, experiment) for index, experiment in numbered if experiment.target.remote is None]
    total = len(experiments)
    done: list[tuple[int, Outcome]] = []
    if remote:
        # One experiment a task: the pool's processes take the next one as they finish.
        tasks = [[pair] for pair in remote]
        done += _in_processes(tasks, total, root, force, progress, deadline, jobs, gated=False)
    groups = list(_by_model(local).values())
    if local:
        done += _in_processes(groups, total, root, force, progress, deadline, jobs, gated=True)
    return [outcome for _, outcome in sorted(done, key=lambda pair: pair[0])]


def _in_processes(
    groups: list, total: int, root: Path, force: bool, progress: Progress, deadline, jobs: int, gated: bool
) -> list[tuple[int, Outcome]]:
    """``groups`` run here (one job, or one group) or in ``jobs`` processes, through a timing gate if ``gated``."""
    if jobs <= 1 or len(groups) <= 1:
        return _run_group([pair for group in groups for pair in group], total, root, force, progress, deadline)
    return _run_parallel(groups, total, root, force, progress.quiet, deadline, jobs, gated)


def _by_model(numbered: list[tuple[int, Experiment]]) -> dict[str, list[tuple[int, Experiment]]]:
    groups: dict[str, list[tuple[int, Experiment]]] = {}
    for index, experiment in numbered:
        groups.setdefault(experiment.model, []).append((index, experiment))
    return groups


def _run_group(
    numbered: list[tuple[int, Experiment]],
    total: int,
    root: Path,
    force: bool,
    progress: Progress,
    deadline: float | None,
    gate_dir: str | None = None,
    jobs: int = 1,
) -> list[tuple[int, Outcome]]:
    """Run ``numbered`` (plan index, experiment) in order, in this process; ``(index, outcome)`` each."""
    import time

    gate = TimingGate(gate_dir)
    session = ModelSession()
    outcomes = []
    with gate.joined():
        for done, (index, experiment) in enumerate(numbered):
            if deadline is not None and time.time() > deadline:
                progress.prefix = ""
                progress.say("time limit reached: not started: " + ", ".join(e.id for _, e in numbered[done:]))
                break
            progress.experiment(index, total, experiment.id, done, len(numbered) - done)
            outcomes.append((index, run_experiment(experiment, root, force, progress, gate, jobs, session)))
    progress.prefix = ""
    return outcomes


def _run_group_quietly(
    numbered, total, root, force, quiet: bool, deadline, gate_dir, jobs
) -> list[tuple[int, Outcome]]:
    """``_run_group`` in a job process (a ``Progress`` cannot be sent to one: it holds a stream)."""
    return _run_group(numbered, total, root, force, Progress(quiet=quiet), deadline, gate_dir, jobs)


def _run_parallel(
    groups: list, total: int, root: Path, force: bool, quiet: bool, deadline: float | None, jobs: int, gated: bool
) -> list[tuple[int, Outcome]]:
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no TVM thread pool forked mid-use
    workers = min(jobs, len(groups))
    with (
        tempfile.TemporaryDirectory(prefix="qbuild-gate-") as gate_dir,
        ProcessPoolExecutor(workers, mp_context=context, initializer=end_with_parent) as pool,
    ):
        try:
            gate = gate_dir if gated else None
            futures = [
                pool.submit(_run_group_quietly, group, total, root, force, quiet, deadline, gate, workers)
                for group in groups
            ]
            return [pair for future in futures for pair in future.result()]
        finally:
            release_all(Path(gate_dir))
