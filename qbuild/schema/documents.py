"""The side-by-side documents: ``qbuild compare``'s runs (``kinds.SIDE_BY_SIDE``, at
``<root>/<machine-id>/side-by-side/<model>[-<target>].json``) and ``qbuild subbyte-kernels``'
(``kinds.SUBBYTE_KERNELS``, ``.../side-by-side/subbyte-kernels.json``).

A compare document records the goals it was judged against (``goals``: numerator, denominator,
at most); one written before they were recorded was judged against ``SCHEMA_1_GOALS``. A
sub-byte kernels document records the most plane pairs that ``subbyte_kernel="auto"`` then ran
bit-serially (``max_auto_pairs``); before that was recorded it was ``SCHEMA_2_MAX_AUTO_PAIRS``.
Both are frozen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from qbuild.schema.kinds import SIDE_BY_SIDE, SUBBYTE_KERNELS

# Per target: (numerator, denominator, at most); a denominator "fastest <precision> peer" is the
# fastest peer of that precision timed in the same run.
SCHEMA_1_GOALS: dict[str, tuple[tuple[str, str, float], ...]] = {
    "cpu": (
        ("int8-a8-calibrated", "fastest int8 peer", 0.9),
        ("int8-a8", "fastest int8 peer", 0.9),
        ("float", "fastest fp32 peer", 1.0),
        ("int8-a8", "float", 0.5),
    ),
    "cuda": (("float", "torch-fp32", 1.0), ("int8-a8", "torch-compile-fp16-graphs", 1.0)),
}
SCHEMA_2_MAX_AUTO_PAIRS = 2
KINDS = (SIDE_BY_SIDE, SUBBYTE_KERNELS)


class DocumentError(Exception):
    """A side-by-side document that cannot be used; the message is one line naming the file and the fix."""


@dataclass(frozen=True)
class Goal:
    """A ratio of two builds' medians that should be at most ``at_most``."""

    numerator: str
    denominator: str
    at_most: float

    def to_json(self) -> dict:
        return {"numerator": self.numerator, "denominator": self.denominator, "goal_at_most": self.at_most}


def goals(document: dict | None, target: str) -> list[Goal]:
    """The goals a compare ``document`` of ``target`` was judged against: those it records, or
    ``SCHEMA_1_GOALS`` for its target (also for no document)."""
    recorded = (document or {}).get("goals")
    if recorded is not None:
        return [Goal(g["numerator"], g["denominator"], float(g["goal_at_most"])) for g in recorded]
    return [Goal(*goal) for goal in SCHEMA_1_GOALS.get(target, ())]


def max_auto_pairs(document: dict) -> int:
    """The most plane pairs ``subbyte_kernel="auto"`` ran bit-serially when a sub-byte kernels
    ``document`` was written."""
    return int(document.get("max_auto_pairs", SCHEMA_2_MAX_AUTO_PAIRS))


def iter_documents(root: Path) -> Iterator[dict | DocumentError]:
    """Every side-by-side document under ``root``, with ``machine`` (its machine id) added, or the
    DocumentError saying why not."""
    for path in sorted(Path(root).glob("*/side-by-side/*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            yield DocumentError(f"{path}: not readable JSON ({exc}); re-run qbuild compare")
            continue
        schema = document.get("schema") if isinstance(document, dict) else None
        if schema not in KINDS:
            yield DocumentError(f"{path}: schema {schema!r}, expected one of {', '.join(KINDS)}")
            continue
        yield {**document, "machine": path.parent.parent.name}
