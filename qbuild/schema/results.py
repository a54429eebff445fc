"""Experiment results files, read and validated: ``<root>/<machine-id>/<experiment-id>.json``.

A file that cannot be used becomes a ``ResultsFileError`` whose message is one line naming the
file and the fix; iterating a root yields it in the file's place, so one bad file never hides
the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from qbuild.schema.kinds import RESULTS

REQUIRED_KEYS = ("schema", "id", "experiment", "environment", "stages")
STAGE_STATUSES = ("ok", "error", "skipped")


class ResultsFileError(Exception):
    """A results file that cannot be used; the message is one line naming the file and the fix."""


@dataclass(frozen=True)
class ResultFile:
    """A valid results file and its record."""

    path: Path
    record: dict

    @property
    def machine_id(self) -> str:
        return self.record["environment"].get("machine_id", self.path.parent.name)


def validate(record: object, source: str) -> dict:
    """Check a parsed record against the schema; raise ResultsFileError naming ``source`` if off."""
    if not isinstance(record, dict):
        raise ResultsFileError(f"{source}: not a qbuild results object; delete it or re-run its experiment")
    if record.get("schema") != RESULTS:
        raise ResultsFileError(
            f"{source}: schema {record.get('schema')!r} is not {RESULTS!r}; "
            "re-run its experiment with this qbuild (qbuild run ... --force)"
        )
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ResultsFileError(f"{source}: missing {', '.join(missing)}; delete it or re-run its experiment")
    for name, stage in record["stages"].items():
        if not isinstance(stage, dict) or stage.get("status") not in STAGE_STATUSES:
            raise ResultsFileError(f"{source}: stage {name!r} has no valid status; re-run its experiment")
    return record


def load_result(path: Path) -> ResultFile:
    """Read and validate one results file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(
            f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno}); delete it or re-run its experiment"
        ) from None
    return ResultFile(path, validate(record, str(path)))


def iter_results(root: Path) -> Iterator[ResultFile | ResultsFileError]:
    """Every results file under ``root``: a ResultFile, or the ResultsFileError saying why not."""
    root = Path(root)
    if not root.is_dir():
        return
    for path in sorted(root.glob("*/*.json")):
        try:
            yield load_result(path)
        except ResultsFileError as exc:
            yield exc
