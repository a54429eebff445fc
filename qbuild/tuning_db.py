"""Tuning databases: the conv tile ``qbuild tune`` measured fastest, per conv workload, per machine.

One JSON file per machine at ``<tuning dir>/<machine-id>.json`` (the directory is
``$QBUILD_TUNING_DIR``, default ``tuning/`` in the project, where the databases for the machines
the published results come from are committed). The ``tuned`` kernel set compiles with the
database of the machine it runs on; a result records the database's digest and how many convs
took a tile from it. Reading needs no TVM.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from qbuild.errors import QbuildError
from qbuild.kernels.tiles import ConvTile

SCHEMA = "qbuild.tuning/1"
DIR_VAR = "QBUILD_TUNING_DIR"
_DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tuning"
_FIX = "delete it and run `nox -s tune` again (or compile with --kernels builtin)"


@dataclass(frozen=True)
class Record:
    """One conv workload: the tile chosen, and the medians that chose it."""

    tile: ConvTile
    summary: str  # readable: operand types, output and reduction extents
    default_ms: float  # the default tile's median
    best_ms: float  # the chosen tile's median
    candidates: int  # tiles measured

    def to_json(self) -> dict:
        return {
            "tile": self.tile.to_json(),
            "summary": self.summary,
            "default_ms": self.default_ms,
            "best_ms": self.best_ms,
            "candidates": self.candidates,
        }


@dataclass
class TuningDatabase:
    """Tiles by workload key (``qbuild.kernels.schedule.conv_workload``), and how they were found."""

    machine_id: str
    rounds: int
    records: dict[str, Record] = field(default_factory=dict)
    environment: dict = field(default_factory=dict)

    @property
    def trials(self) -> int:
        """Tiles measured in all (each in ``rounds`` interleaved rounds)."""
        return sum(r.candidates for r in self.records.values())

    def summed_ms(self) -> tuple[float, float]:
        """Every workload run once: (with the default tiles, with the chosen ones), in ms."""
        return (sum(r.default_ms for r in self.records.values()), sum(r.best_ms for r in self.records.values()))

    def tiles(self) -> dict[str, ConvTile]:
        return {key: record.tile for key, record in self.records.items()}

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "machine_id": self.machine_id,
            "rounds": self.rounds,
            "trials": self.trials,
            "environment": self.environment,
            "workloads": {key: record.to_json() for key, record in sorted(self.records.items())},
        }


def directory() -> Path:
    """Where tuning databases live: ``$QBUILD_TUNING_DIR`` or the project's ``tuning/``."""
    return Path(os.environ.get(DIR_VAR) or _DEFAULT_DIR)


def path_for(machine_id: str) -> Path:
    return directory() / f"{machine_id}.json"


def machine_path() -> Path:
    """This machine's database (which may not exist)."""
    from qbuild.environment import machine_id

    return path_for(machine_id())


def digest(path: Path) -> str:
    """A short hash of a database file: results built with it name it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load(path: Path) -> TuningDatabase:
    """Read and validate a database; a missing or malformed one is a ``QbuildError`` naming the fix."""
    path = Path(path)
    if not path.exists():
        raise QbuildError(
            f"no tuning database for this machine at {path}",
            "run `nox -s tune` (or `qbuild tune`) on this machine, or use --kernels builtin",
        )
    try:
        document = json.loads(path.read_text())
        if document.get("schema") != SCHEMA:
            raise ValueError(f"schema {document.get('schema')!r}, expected {SCHEMA!r}")
        records = {
            key: Record(
                ConvTile(*entry["tile"]),
                str(entry["summary"]),
                float(entry["default_ms"]),
                float(entry["best_ms"]),
                int(entry["candidates"]),
            )
            for key, entry in document["workloads"].items()
        }
        return TuningDatabase(
            str(document["machine_id"]), int(document["rounds"]), records, dict(document.get("environment", {}))
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QbuildError(f"tuning database {path} is unreadable ({type(exc).__name__}: {exc})", _FIX) from None


def save(database: TuningDatabase, path: Path) -> Path:
    """Write atomically (a crash keeps the previous database)."""
    from qbuild.results import write_result

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_result(path, database.to_json())
    return path
