"""Results files: the contract between the engine and everything that reads its output.

One JSON file per experiment at ``<root>/<machine-id>/<experiment-id>.json``, written
atomically (temporary file + rename), so a crash never leaves half a file and never destroys
the previous result. Readers (``qbuild summary``, the report) use only this module and the
standard library: no TVM, no torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from qbuild.errors import QbuildError

SCHEMA = "qbuild.results/1"
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


def result_path(root: Path, machine_id: str, experiment_id: str) -> Path:
    """Where the result of ``experiment_id`` measured on ``machine_id`` lives."""
    return Path(root) / machine_id / f"{experiment_id}.json"


def ensure_writable(directory: Path) -> None:
    """Fail early, before hours of work, if results cannot be written to ``directory``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as exc:
        raise QbuildError(
            f"results directory {directory} is not writable ({exc.strerror or type(exc).__name__})",
            "choose another with --results DIR, or fix its permissions",
        ) from None


def write_result(path: Path, record: dict) -> None:
    """Write ``record`` as JSON to ``path`` atomically."""
    path = Path(path)
    ensure_writable(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(record, out, indent=1, sort_keys=False)
            out.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validate(record: object, source: str) -> dict:
    """Check a parsed record against the schema; raise ResultsFileError naming ``source`` if off."""
    if not isinstance(record, dict):
        raise ResultsFileError(f"{source}: not a qbuild results object; delete it or re-run its experiment")
    if record.get("schema") != SCHEMA:
        raise ResultsFileError(
            f"{source}: schema {record.get('schema')!r} is not {SCHEMA!r}; "
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
