"""Progress lines for long runs: which experiment, which stage, how long, what is left."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """1.2s, 3m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Writes one line per event to a stream (stderr by default), prefixed with the position in the plan."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.prefix = ""
        self._plan_started = time.perf_counter()

    def experiment(self, index: int, total: int, experiment_id: str, done: int, left: int) -> None:
        """Announce experiment ``index`` (1-based) of ``total``; ``done`` and ``left`` (this one
        included) count this job's experiments, from which the ETA of its share of the plan comes."""
        self.prefix = f"[{index}/{total}] {experiment_id}"
        elapsed = time.perf_counter() - self._plan_started
        eta = "" if done == 0 else f", ETA {format_seconds(elapsed / done * left)}"
        self.say(f"start (elapsed {format_seconds(elapsed)}{eta})")

    def say(self, message: str) -> None:
        if not self.quiet:  # one write per line: the jobs of a parallel plan share the stream
            self.stream.write((f"{self.prefix}: {message}" if self.prefix else message) + "\n")
            self.stream.flush()
