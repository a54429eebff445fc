"""Writing results files: where each lives, and how it is written.

One JSON file per experiment at ``<root>/<machine-id>/<experiment-id>.json`` (the side-by-side
documents and tuning databases likewise), written atomically (temporary file + rename), so a
crash never leaves half a file and never destroys the previous result. What the files hold, and
how readers (``qbuild summary``, the report) read them, is ``qbuild.schema``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from qbuild.errors import QbuildError


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
