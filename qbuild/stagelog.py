"""A stage log (``StageLog``): runs an experiment's stages in order and records each one's
status, duration and error, so a result always says how far it got and why.

A failing stage records the exception (type, first line, detail) and the stages that need it are
skipped. Bad input (a QbuildError) is not a stage failure: it propagates. In a parallel plan
(``qbuild.gate``) a stage's time excludes its wait at the gate and the time another job had this
one stopped.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Callable

from qbuild.errors import QbuildError, one_line
from qbuild.gate import TimingGate
from qbuild.progress import Progress, format_seconds

_DETAIL_LIMIT = 4000


class StageLog:
    """Runs stages in order, recording each one's status, duration and error."""

    def __init__(self, progress: Progress, gate: TimingGate | None = None) -> None:
        self.progress = progress
        self.gate = gate or TimingGate()
        self.stages: dict[str, dict] = {}

    def ok(self, name: str) -> bool:
        return self.stages.get(name, {}).get("status") == "ok"

    def skip(self, name: str, reason: str) -> None:
        """Record that stage ``name`` was not run, and why."""
        self.stages[name] = {"status": "skipped", "seconds": 0.0, "reason": reason}
        self.progress.say(f"{name} skipped ({reason})")

    def run(self, name: str, fn: Callable[..., Any], *args: Any, needs: tuple[str, ...] = ()) -> Any:
        """Run ``fn(*args)`` as stage ``name`` unless a stage it ``needs`` did not succeed."""
        missing = [need for need in needs if not self.ok(need)]
        if missing:
            self.skip(name, f"needs {', '.join(missing)}")
            return None
        self.progress.say(f"{name} ...")
        start = time.monotonic()
        try:
            with self.gate.stage(name):
                start = time.monotonic()  # the stage's own time, not its wait at the gate
                value = fn(*args)
        except (QbuildError, KeyboardInterrupt):
            raise
        except Exception as exc:
            seconds = self._seconds_since(start)
            detail = "".join(traceback.format_exception(exc))[-_DETAIL_LIMIT:]
            self.stages[name] = {
                "status": "error",
                "seconds": seconds,
                "error": {"stage": name, "type": type(exc).__name__, "message": one_line(exc), "detail": detail},
            }
            self.progress.say(f"{name} FAILED after {format_seconds(seconds)}: {type(exc).__name__}: {one_line(exc)}")
            return None
        seconds = self._seconds_since(start)
        self.stages[name] = {"status": "ok", "seconds": seconds}
        self.progress.say(f"{name} ok ({format_seconds(seconds)})")
        return value

    def _seconds_since(self, start: float) -> float:
        """The stage's seconds since ``start``, less those in which another job had this one stopped."""
        end = time.monotonic()
        return end - start - self.gate.stopped_seconds(start, end)
