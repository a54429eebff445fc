"""Shared fixtures: one quick plan (resnet18: float, int8 and the sweep's W1A1; 64x64) reused by every test that
reads results; every test sees an empty tuning directory unless it writes a database itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbuild.plan import build_plan
from qbuild.progress import Progress
from qbuild.scheduler import run_plan


@pytest.fixture(autouse=True, scope="session")
def no_shipped_tuning_database(tmp_path_factory: pytest.TempPathFactory):
    """Tests must not depend on the database committed for this machine (tuning/)."""
    from qbuild import tuning_db

    patch = pytest.MonkeyPatch()
    patch.setenv(tuning_db.DIR_VAR, str(tmp_path_factory.mktemp("tuning")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def quick_results(tmp_path_factory: pytest.TempPathFactory):
    """resnet18 unquantized, int8-a8 and w1a1 on the CPU under the quick profile: (root, {variant: outcome})."""
    root = tmp_path_factory.mktemp("results")
    plan = build_plan(
        models=["resnet18"],
        variants=["float", "int8-a8", "w1a1"],
        targets=["cpu"],
        profile="quick",
        weights="random",
        kernels=["builtin"],
    )
    outcomes = run_plan(plan, root, progress=Progress(quiet=True))
    return root, {o.record["experiment"]["variant"]["name"]: o for o in outcomes}


@pytest.fixture(scope="session")
def quick_run(quick_results):
    """The unquantized quick result: (root, outcome)."""
    root, outcomes = quick_results
    return root, outcomes["float"]


@pytest.fixture
def results_root(tmp_path: Path) -> Path:
    return tmp_path / "results"
