"""Timed stages run alone: how the jobs of a plan run in parallel share the machine.

A plan run as several jobs (processes, ``scheduler.run_plan(..., jobs=N)``) overlaps their untimed
stages (quantize, compile, verify, analyse, accuracy: mostly one core each), but a timed stage
(``TIMED_STAGES``) never overlaps anything: the job about to time stops every other job where it
stands (``SIGSTOP``), times, and lets them go on (``SIGCONT``). Waiting for the other jobs'
stages to end instead left a core idle before every bench for the rest of the stage running
(up to 90 s: ResNet-50's first sweep quantize). In a directory the jobs share:

- ``jobs/<pid>``: each job's file, locked (``fcntl.flock``) by that job while it runs: a job
  stops only the jobs whose files are locked, so never a finished one, nor a process that
  took its pid later;
- ``door``: locked by the job that is timing: one at a time;
- ``stopped``: the intervals (``time.monotonic``, the same clock in every process on Linux) in
  which a job had the others stopped, with its pid, written before they go on; a stage's seconds leave out
  the time its job spent stopped (``TimingGate.stopped_seconds``).

An untimed stage runs its kernels on the job's share of the CPUs (all of them divided by the
jobs still running, ``qbuild.threads.run_on``), a timed one on all of them: an untimed stage that runs the model
(calibration, verify, accuracy) on a pool as wide as the machine, beside another job's busy
stage, waits on a descheduled thread at every parallel loop (5x slower, ``qbuild.threads``).

A lock goes with its process, however it ends; ``release_all`` lets every stopped job go on
(the plan calls it when its jobs are done, in case a job died while timing).
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qbuild import threads

TIMED_STAGES = frozenset({"bench"})
_STOP_WAIT_S = 2.0  # at most, for a stopped job to be seen stopped (/proc) before timing starts
_PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent ends


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """``path`` (made if missing) locked exclusively by this process for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class TimingGate:
    """The gate of a plan's jobs, in ``directory``; ``None``: a plan run as one job (no locks,
    nobody stopped, the thread count left alone)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = None if directory is None else Path(directory)

    @contextmanager
    def joined(self) -> Iterator[None]:
        """This job, registered for the others to stop while they time (for as long as it runs)."""
        if self.directory is None:
            yield
            return
        mine = self.directory / "jobs" / str(os.getpid())
        mine.parent.mkdir(exist_ok=True)
        with _locked(mine):
            try:
                yield
            finally:
                mine.unlink(missing_ok=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run stage ``name`` as it needs: alone on every CPU if it is timed (the other jobs
        stopped), on this job's share of them otherwise."""
        if self.directory is None:
            yield
            return
        if name not in TIMED_STAGES:
            threads.run_on(threads.pool_size() // (len(self._running_jobs()) + 1))
            yield
            return
        with _locked(self.directory / "door"):
            others = self._running_jobs()
            since = time.monotonic()
            _signal(others, signal.SIGSTOP)
            _wait_stopped(others)
            try:
                threads.run_on(threads.pool_size())
                yield
            finally:
                with open(self.directory / "stopped", "a") as log:
                    log.write(f"{os.getpid()} {since} {time.monotonic()}\n")
                _signal(others, signal.SIGCONT)

    def stopped_seconds(self, start: float, end: float) -> float:
        """Seconds of [start, end] (``time.monotonic``) in which the other jobs had this one stopped."""
        if self.directory is None or not (self.directory / "stopped").exists():
            return 0.0
        total = 0.0
        for line in (self.directory / "stopped").read_text().splitlines():
            pid, since, until = line.split()
            if int(pid) != os.getpid():  # not this job's own timing
                total += max(0.0, min(end, float(until)) - max(start, float(since)))
        return total

    def _running_jobs(self) -> list[int]:
        """The pids of the other jobs still running (their files locked)."""
        running = []
        for path in (self.directory / "jobs").glob("*"):
            if path.name == str(os.getpid()):
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:  # that job just ended
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                running.append(int(path.name))
            finally:
                os.close(fd)
        return running


def release_all(directory: Path) -> None:
    """Let every job registered in ``directory`` go on (a job that died while timing left them stopped)."""
    jobs = Path(directory) / "jobs"
    _signal([int(path.name) for path in jobs.glob("*")] if jobs.exists() else [], signal.SIGCONT)


def end_with_parent() -> None:
    """A job process's initializer: the kernel kills the job when the plan's process ends, however
    it ends (a plan stopped by ``kill`` left its jobs running for minutes, one of them stopped by
    the gate). Linux only (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere nothing."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _signal(pids: list[int], which: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, which)
        except ProcessLookupError:  # it ended meanwhile
            pass


def _wait_stopped(pids: list[int]) -> None:
    """Until each of ``pids`` is seen stopped (SIGSTOP takes effect when the process is next
    scheduled), or gone, or ``_STOP_WAIT_S`` has passed; without /proc, not at all."""
    deadline = time.monotonic() + _STOP_WAIT_S
    for pid in pids:
        while time.monotonic() < deadline and process_state(pid) not in (None, "T", "t"):
            time.sleep(0.001)


def process_state(pid: int) -> str | None:
    """Process ``pid``'s state letter in /proc ("R" running, "T" stopped, "Z" a zombie, ...);
    None if it is gone or there is no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (IndexError, OSError):
        return None
