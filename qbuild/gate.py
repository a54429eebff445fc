"""Timed stages run alone: the lock that the jobs of a plan run in parallel share.

A plan run as several jobs (processes, ``runner.run_plan(..., jobs=N)``) overlaps their untimed
stages (quantize, compile, verify, analyse, accuracy: mostly one core each), but a timed stage
(``TIMED_STAGES``) never overlaps anything: it waits until no other job is inside a stage, and
no other job enters one until it is done. Two lock files (``fcntl.flock``) in a directory the
jobs share:

- ``room``: held shared by a job inside an untimed stage, exclusively by one inside a timed one;
- ``door``: held by a job waiting for the room alone, and passed through (taken and released)
  by a job before it enters the room; so once a timed stage waits, no new untimed stage starts
  ahead of it.

Inside the room a job's kernels run on its share of the CPUs (all of them divided by the jobs,
``qbuild.threads.run_on``), alone on all of them: an untimed stage that runs the model
(calibration, verify, accuracy) on a pool as wide as the machine, beside another job's busy
stage, waits on a descheduled thread at every parallel loop (5x slower, ``qbuild.threads``).

A lock held by a process goes when it exits, however it exits: a killed job blocks nobody.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qbuild import threads

TIMED_STAGES = frozenset({"bench"})


@contextmanager
def _locked(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


class TimingGate:
    """The gate of a plan's ``jobs`` jobs, in ``directory``; ``None``: a plan run as one job (no
    locks, the thread count left alone)."""

    def __init__(self, directory: Path | None = None, jobs: int = 2) -> None:
        self.directory = None if directory is None else Path(directory)
        self.jobs = jobs

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Hold the gate as stage ``name`` needs it: alone on every CPU if it is timed, shared
        on this job's share of them otherwise."""
        if self.directory is None:
            yield
            return
        room, door = self.directory / "room.lock", self.directory / "door.lock"
        if name in TIMED_STAGES:
            with _locked(door, fcntl.LOCK_EX), _locked(room, fcntl.LOCK_EX):
                threads.run_on(threads.pool_size())
                yield
            return
        with _locked(door, fcntl.LOCK_EX):
            pass
        with _locked(room, fcntl.LOCK_SH):
            threads.run_on(threads.pool_size() // self.jobs)
            yield
