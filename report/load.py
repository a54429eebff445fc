"""Read every results file under a root; files that cannot be used are reported, not fatal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qbuild.errors import QbuildError
from qbuild.schema.documents import DocumentError, iter_documents
from qbuild.schema.kinds import SIDE_BY_SIDE, SUBBYTE_KERNELS
from qbuild.schema.results import ResultFile, ResultsFileError, iter_results
from qbuild.schema.tuning import TuningFile, directory, read_tuning


@dataclass
class Results:
    """The usable results, and one line for each file that was skipped."""

    files: list[ResultFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    side_by_side: list[dict] = field(default_factory=list)  # qbuild compare documents
    subbyte_kernels: list[dict] = field(default_factory=list)  # qbuild subbyte-kernels documents
    tuning: list[TuningFile] = field(default_factory=list)  # qbuild tune databases

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
    for path in sorted(Path(tuning_dir or directory()).glob("*.json")):
        try:
            results.tuning.append(read_tuning(path))
        except QbuildError as exc:
            results.problems.append(str(exc))
    for item in iter_results(Path(root)):
        if isinstance(item, ResultsFileError):
            results.problems.append(str(item))
        else:
            results.files.append(item)
    kinds = {SIDE_BY_SIDE: results.side_by_side, SUBBYTE_KERNELS: results.subbyte_kernels}
    for document in iter_documents(Path(root)):
        if isinstance(document, DocumentError):
            results.problems.append(str(document))
        else:
            kinds[document["schema"]].append(document)
    return results
