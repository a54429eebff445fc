"""Tuning databases: the conv tile ``qbuild tune`` measured fastest, per conv workload, per machine.

One JSON file per machine at ``<tuning dir>/<machine-id>.json`` (the directory is
``$QBUILD_TUNING_DIR``, default ``tuning/`` in the project, where the databases for the machines
the published results come from are committed). The ``tuned`` kernel set compiles with the
database of the machine it runs on; a result records the database's digest and how many convs
took a tile from it. Reading needs no TVM; the file's format, and its reader for the report,
are ``qbuild.schema.tuning``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from qbuild.errors import QbuildError
from qbuild.kernels.tiles import ConvTile
from qbuild.schema.kinds import TUNING as SCHEMA
from qbuild.schema.tuning import DIR_VAR, directory, read_tuning, unreadable

__all__ = ["DIR_VAR", "SCHEMA", "Record", "TuningDatabase", "digest", "directory", "load", "machine_path", "save"]


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
    read = read_tuning(path)
    try:
        records = {
            key: Record(ConvTile(*w.tile), w.summary, w.default_ms, w.best_ms, w.candidates)
            for key, w in read.workloads.items()
        }
    except (ValueError, TypeError) as exc:  # a tile this qbuild cannot build
        raise unreadable(path, exc) from None
    return TuningDatabase(read.machine_id, read.rounds, records, read.environment)


def save(database: TuningDatabase, path: Path) -> Path:
    """Write atomically (a crash keeps the previous database)."""
    from qbuild.results import write_result

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_result(path, database.to_json())
    return path
