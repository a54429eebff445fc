"""Stages record ok / error / skipped, so a result says how far it got and why."""

from __future__ import annotations

import pytest

from qbuild.errors import QbuildError
from qbuild.progress import Progress
from qbuild.runner import StageLog


def failing():
    raise RuntimeError("Traceback (most recent call last):\n  File \"x.py\"\nunknown data type int-4\nmore detail")


def test_a_failing_stage_records_its_error_and_the_stages_that_need_it_are_skipped():
    log = StageLog(Progress(quiet=True))
    assert log.run("quantize", lambda: 42) == 42
    assert log.run("build", failing, needs=("quantize",)) is None
    assert log.run("run", lambda: 1, needs=("build",)) is None
    assert log.stages["quantize"]["status"] == "ok"
    error = log.stages["build"]["error"]
    assert log.stages["build"]["status"] == "error"
    assert (error["stage"], error["type"], error["message"]) == ("build", "RuntimeError", "unknown data type int-4")
    assert "more detail" in error["detail"]
    assert log.stages["run"] == {"status": "skipped", "seconds": 0.0, "reason": "needs build"}


def test_bad_input_inside_a_stage_stops_the_run_instead_of_being_recorded():
    log = StageLog(Progress(quiet=True))

    def bad_input():
        raise QbuildError("pretrained weights unavailable", "use --weights random")

    with pytest.raises(QbuildError):
        log.run("load", bad_input)
