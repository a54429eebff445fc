"""The side-by-side benchmark: ratios to the best peer of the same precision, and the issue's goals."""

from __future__ import annotations

import pytest

from qbuild import compare
from qbuild.plan import build_plan


@pytest.fixture
def entries():
    plan = build_plan(
        ["resnet18"],
        ["float", "int8-a8", "int8-a8-calibrated", "torch-fp32", "ort-fp32", "ort-int8-qoperator"],
        ["cpu"],
        "quick",
        "random",
        kernels=["builtin"],
    )
    timings = {
        "float": [10.0, 12.0, 11.0],
        "int8-a8": [6.0],
        "int8-a8-calibrated": [3.0],
        "torch-fp32": [8.0],
        "ort-fp32": [5.0],
        "ort-int8-qoperator": [4.0],
    }
    made = [compare.Entry(e) for e in plan]
    for entry in made:
        entry.samples_ms = timings[entry.name]
    return made


def test_each_build_is_compared_with_the_fastest_peer_of_its_precision(entries):
    rows = {r["name"]: r for r in compare.ratios(entries)}
    assert rows["float"]["median_ms"] == 11.0
    assert rows["float"]["best_peer"] == "ort-fp32" and rows["float"]["ratio_to_best_peer"] == pytest.approx(2.2)
    assert rows["int8-a8"]["best_peer"] == "ort-int8-qoperator" and rows["int8-a8"]["ratio_to_best_peer"] == 1.5
    assert rows["torch-fp32"]["precision"] == "fp32" and rows["ort-int8-qoperator"]["precision"] == "int8"


def test_the_goals_are_judged_against_the_fastest_peer_of_the_same_precision(entries):
    goals = {(g["numerator"], g["denominator"]): g for g in compare.targets(entries)}
    assert (
        goals[("int8-a8", "ort-int8-qoperator")]["ratio"] == 1.5 and not goals[("int8-a8", "ort-int8-qoperator")]["met"]
    )
    assert goals[("int8-a8", "float")]["ratio"] == pytest.approx(6 / 11)
    assert goals[("float", "ort-fp32")]["goal_at_most"] == 1.0  # ort-fp32 (5 ms) is faster than torch-fp32 (8)
    calibrated = goals[("int8-a8-calibrated", "ort-int8-qoperator")]  # the build of like accuracy is judged too
    assert calibrated["ratio"] == 0.75 and calibrated["met"]


def test_a_build_that_failed_is_listed_not_timed(entries):
    entries[0].samples_ms, entries[0].error = [], "compile failed: boom"
    text = compare.render(compare.ratios(entries), compare.targets(entries), {"float": "compile failed: boom"})
    assert "float: not timed: compile failed: boom" in text
    assert all(r["name"] != "float" for r in compare.ratios(entries))


def test_the_comparison_is_saved_where_the_report_looks(entries, tmp_path):
    document = compare.record("resnet18", entries, 1, 3, {"machine_id": "m"})
    path = compare.save(tmp_path, "m", document)
    assert path == tmp_path / "m" / "side-by-side" / "resnet18.json"
    assert document["schema"] == compare.SCHEMA and len(document["builds"]) == 6


def test_on_the_gpu_float_and_int8_are_held_against_the_gpu_goals(tmp_path):
    import dataclasses

    from qbuild import targets
    from qbuild.plan import VARIANTS

    gpu = targets.cuda_target("sm_90", "NVIDIA H200 (sm_90)")
    cpu_plan = build_plan(
        ["resnet18"], ["float", "int8-a8", "torch-fp32"], ["cpu"], "quick", "random", kernels=["builtin"]
    )
    made = [compare.Entry(dataclasses.replace(e, target=gpu)) for e in cpu_plan]
    made.append(
        compare.Entry(dataclasses.replace(cpu_plan[2], target=gpu, variant=VARIANTS["torch-compile-fp16-graphs"]))
    )
    for entry, ms in zip(made, (1.0, 0.9, 3.0, 0.6)):
        entry.samples_ms = [ms]
    goals = {(g["numerator"], g["denominator"]): g for g in compare.targets(made)}
    assert set(goals) == {("float", "torch-fp32"), ("int8-a8", "torch-compile-fp16-graphs")}
    assert goals[("float", "torch-fp32")]["met"] and not goals[("int8-a8", "torch-compile-fp16-graphs")]["met"]
    assert {r["name"]: r["precision"] for r in compare.ratios(made)}["torch-compile-fp16-graphs"] == "fp16"
    document = compare.record("resnet18", made, 1, 1, {"machine_id": "g"})
    assert compare.save(tmp_path, "g", document) == tmp_path / "g" / "side-by-side" / "resnet18-cuda.json"


class _SteadyBuild:
    """Stands in for a worker: each run takes ``ms`` (reported, not slept)."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def time(self, batch, executions: int) -> list[float]:
        return [self.ms] * executions


def test_each_builds_turn_is_followed_by_an_idle_spell_in_proportion_to_it(entries):
    for entry, ms in zip(entries[:2], (3.0, 5.0)):
        entry.model, entry.samples_ms = _SteadyBuild(ms), []
    idles: list[float] = []
    compare.measure(
        entries[:2], (1, 3, 8, 8), rounds=3, executions=4, say=lambda line: None, idle=2.0, sleep=idles.append
    )
    assert len(idles) == 6 and all(spell >= 0 for spell in idles)
    assert [e.samples_ms for e in entries[:2]] == [[3.0] * 12, [5.0] * 12]
    back_to_back: list[float] = []
    compare.measure(entries[:2], (1, 3, 8, 8), rounds=1, executions=1, say=lambda line: None, sleep=back_to_back.append)
    assert back_to_back == []
    assert compare.record("resnet18", entries, 3, 4, {}, idle=2.0)["idle"] == 2.0
