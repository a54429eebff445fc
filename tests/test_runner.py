"""Stages record ok / error / skipped, so a result says how far it got and why."""

from __future__ import annotations

import pytest

from qbuild.errors import QbuildError
from qbuild.progress import Progress
from qbuild.stagelog import StageLog


def failing():
    raise RuntimeError('Traceback (most recent call last):\n  File "x.py"\nunknown data type int-4\nmore detail')


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


def test_the_builds_of_one_model_share_its_trace_and_the_next_model_replaces_it(monkeypatch):
    from types import SimpleNamespace

    import qbuild.trace
    from qbuild.session import ModelSession

    traced = []
    monkeypatch.setattr(
        qbuild.trace, "trace", lambda module, shape: traced.append(module) or SimpleNamespace(of=module)
    )
    session = ModelSession()

    def build_of(model):
        weights = SimpleNamespace(to_json=lambda: {"kind": "random", "seed": 0})
        return SimpleNamespace(model=model), SimpleNamespace(module=model, weights=weights, input_shape=(1, 3, 8, 8))

    first = [session.traced(*build_of("a")).of for _ in range(3)]
    assert traced == ["a"] and first == ["a"] * 3
    assert session.traced(*build_of("b")).of == "b" and traced == ["a", "b"]
    assert session.held() == ["traced"], "one model's trace is held at a time"


def test_a_model_qbuild_was_not_written_for_runs_every_stage(tmp_path):
    """MobileNetV3 (hard-swish, squeeze-and-excite gates): taken by its torchvision name, traced,
    quantized, compiled and checked against PyTorch like the study's models."""
    from qbuild.plan import build_plan
    from qbuild.scheduler import run_plan

    plan = build_plan(
        models=["mobilenet_v3_small"],
        variants=["float", "int8-a8"],
        targets=["cpu"],
        profile="quick",
        weights="random",
        kernels=["builtin"],
    )
    outcomes = {
        o.record["experiment"]["variant"]["name"]: o.record
        for o in run_plan(plan, tmp_path, progress=Progress(quiet=True))
    }
    for variant, record in outcomes.items():
        ran = {name: stage["status"] for name, stage in record["stages"].items() if stage["status"] != "skipped"}
        assert set(ran.values()) == {"ok"}, ran
        assert {"trace", "compile", "verify", "analyse", "bench"} <= set(ran)
        assert ("quantize" in ran) == (variant == "int8-a8")
    assert outcomes["float"]["correctness"]["cosine_similarity"] > 0.9999
    assert outcomes["int8-a8"]["latency"]["summary"]["median_ms"] > 0
