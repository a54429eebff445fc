"""Tuning databases as a reader sees them: per conv workload, the register tile ``qbuild tune``
chose and the medians that chose it; one file per machine at ``<tuning dir>/<machine-id>.json``.

The directory is ``$QBUILD_TUNING_DIR``, default the project's ``tuning/``. A tile is recorded
as ``[pixels, blocks]``, then the chunk (input channel blocks per pass) if it has one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from qbuild.errors import QbuildError
from qbuild.schema.kinds import TUNING

DIR_VAR = "QBUILD_TUNING_DIR"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "tuning"
FIX = "delete it and run `nox -s tune` again (or compile with --kernels builtin)"


def directory() -> Path:
    """Where tuning databases live: ``$QBUILD_TUNING_DIR`` or the project's ``tuning/``."""
    return Path(os.environ.get(DIR_VAR) or DEFAULT_DIR)


def tile_label(tile: Sequence[int]) -> str:
    """A recorded tile in words: "4x2", or "4x2/4" for 4 input channel blocks per pass."""
    pixels, blocks, *chunk = tile
    return f"{pixels}x{blocks}" + (f"/{chunk[0]}" if chunk and chunk[0] else "")


@dataclass(frozen=True)
class TunedWorkload:
    """One conv workload: the tile chosen (as recorded), and the medians that chose it."""

    tile: tuple[int, ...]
    summary: str  # readable: operand types, output and reduction extents
    default_ms: float  # the default tile's median
    best_ms: float  # the chosen tile's median
    candidates: int  # tiles measured


@dataclass(frozen=True)
class TuningFile:
    """A tuning database: its workloads by key, and how they were found."""

    machine_id: str
    rounds: int
    workloads: dict[str, TunedWorkload] = field(default_factory=dict)
    environment: dict = field(default_factory=dict)


def read_tuning(path: Path) -> TuningFile:
    """Read and check a tuning database; one that cannot be used is a ``QbuildError`` naming the
    file and the fix."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
        if document.get("schema") != TUNING:
            raise ValueError(f"schema {document.get('schema')!r}, expected {TUNING!r}")
        workloads = {
            key: TunedWorkload(
                tuple(int(n) for n in entry["tile"]),
                str(entry["summary"]),
                float(entry["default_ms"]),
                float(entry["best_ms"]),
                int(entry["candidates"]),
            )
            for key, entry in document["workloads"].items()
        }
        for key, workload in workloads.items():
            if len(workload.tile) not in (2, 3) or min(workload.tile) < 0:
                raise ValueError(f"workload {key}: tile {list(workload.tile)} is not [pixels, blocks(, chunk)]")
        return TuningFile(
            str(document["machine_id"]), int(document["rounds"]), workloads, dict(document.get("environment", {}))
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise unreadable(path, exc) from None


def unreadable(path: Path, exc: Exception) -> QbuildError:
    """The error for a tuning database at ``path`` that ``exc`` made unusable."""
    return QbuildError(f"tuning database {path} is unreadable ({type(exc).__name__}: {exc})", FIX)
