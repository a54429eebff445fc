"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_own_model_example_runs_and_its_int8_build_tracks_pytorch():
    section = README.read_text().split("## Your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md: Your own model", "exec"), scope)
    assert scope["logits"].shape == (1, 10)
    report = scope["against_torch"](scope["compiled"], scope["model"], scope["shape"])
    assert report["cosine_similarity"] > 0.99
