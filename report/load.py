"""Read every results file under a root; files that cannot be used are reported, not fatal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from qbuild import tuning_db
from qbuild.compare import SCHEMA as SIDE_BY_SIDE_SCHEMA
from qbuild.errors import QbuildError
from qbuild.results import ResultFile, ResultsFileError, iter_results
from qbuild.subbyte import SCHEMA as SUBBYTE_SCHEMA
from qbuild.tuning_db import TuningDatabase


@dataclass
class Results:
    """The usable results, and one line for each file that was skipped."""

    files: list[ResultFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    side_by_side: list[dict] = field(default_factory=list)  # qbuild compare documents
    subbyte_kernels: list[dict] = field(default_factory=list)  # qbuild subbyte-kernels documents
    tuning: list[TuningDatabase] = field(default_factory=list)  # qbuild tune databases

    @property
    def records(self) -> list[dict]:
        return [f.record for f in self.files]

    def machines(self) -> list[str]:
        return sorted({f.machine_id for f in self.files})


def load(root: Path, tuning_dir: Path | None = None) -> Results:
    """All results under ``root`` (``<root>/<machine>/<experiment>.json``), the side-by-side
    comparisons (``<root>/<machine>/side-by-side/<model>.json``, and ``subbyte-kernels.json``)
    and the tuning databases in ``tuning_dir`` (``<machine>.json``; default: qbuild's)."""
    results = Results()
    for path in sorted(Path(tuning_dir or tuning_db.directory()).glob("*.json")):
        try:
            results.tuning.append(tuning_db.load(path))
        except QbuildError as exc:
            results.problems.append(str(exc))
    for item in iter_results(Path(root)):
        if isinstance(item, ResultsFileError):
            results.problems.append(str(item))
        else:
            results.files.append(item)
    for path in sorted(Path(root).glob("*/side-by-side/*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            results.problems.append(f"{path}: not readable JSON ({exc}); re-run qbuild compare")
            continue
        kinds = {SIDE_BY_SIDE_SCHEMA: results.side_by_side, SUBBYTE_SCHEMA: results.subbyte_kernels}
        if document.get("schema") not in kinds:
            results.problems.append(f"{path}: schema {document.get('schema')!r}, expected one of {', '.join(kinds)}")
            continue
        kinds[document["schema"]].append({**document, "machine": path.parent.parent.name})
    return results
