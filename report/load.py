"""Read every results file under a root; files that cannot be used are reported, not fatal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qbuild.results import ResultFile, ResultsFileError, iter_results


@dataclass
class Results:
    """The usable results, and one line for each file that was skipped."""

    files: list[ResultFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def records(self) -> list[dict]:
        return [f.record for f in self.files]

    def machines(self) -> list[str]:
        return sorted({f.machine_id for f in self.files})


def load(root: Path) -> Results:
    """All results under ``root`` (``<root>/<machine>/<experiment>.json``)."""
    results = Results()
    for item in iter_results(Path(root)):
        if isinstance(item, ResultsFileError):
            results.problems.append(str(item))
        else:
            results.files.append(item)
    return results
