"""Shared fixtures: one quick end-to-end run reused by the tests that read its result."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbuild.plan import build_plan
from qbuild.progress import Progress
from qbuild.runner import run_plan


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory):
    """resnet18 float on the CPU under the quick profile (64x64 input, 2x3 timed runs)."""
    root = tmp_path_factory.mktemp("results")
    plan = build_plan(models=["resnet18"], variants=["float"], targets=["cpu"], profile="quick", weights="random")
    (outcome,) = run_plan(plan, root, progress=Progress(quiet=True))
    return root, outcome


@pytest.fixture
def results_root(tmp_path: Path) -> Path:
    return tmp_path / "results"
