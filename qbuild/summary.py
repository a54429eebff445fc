"""One row per results file: what ran, how far it got, how fast, how accurate.

Reads results files only (``qbuild.schema``): importing this module pulls in neither TVM nor torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from qbuild.schema.results import ResultFile, ResultsFileError, iter_results

COLUMNS = ("machine", "id", "model", "weights", "target", "label", "kernels", "stages", "median_ms", "top1", "top5")


def _stages_text(stages: dict) -> str:
    """'all ok', 'ok; skipped: accuracy', or the failed and skipped stages."""
    failed = [name for name, stage in stages.items() if stage["status"] == "error"]
    skipped = [name for name, stage in stages.items() if stage["status"] == "skipped"]
    if failed:
        return f"failed: {', '.join(failed)}" + (f"; skipped: {', '.join(skipped)}" if skipped else "")
    return "all ok" if not skipped else f"ok; skipped: {', '.join(skipped)}"


def row(result: ResultFile) -> dict:
    """The summary row of one result."""
    rec = result.record
    exp = rec["experiment"]
    weights = (exp.get("weights") or {}).get("kind", "?")
    target = exp.get("target", {})
    latency = (rec.get("latency") or {}).get("summary") or {}
    accuracy = rec.get("accuracy") or {}
    return {
        "id": rec["id"],
        "machine": result.machine_id,
        "model": exp.get("model"),
        "weights": weights,
        "target": f"{target.get('name', '?')} ({target.get('device', '?')})",
        "label": (exp.get("variant") or {}).get("label", "?"),
        "kernels": exp.get("kernels") or "-",
        "stages": _stages_text(rec["stages"]),
        "stage_status": {name: stage["status"] for name, stage in rec["stages"].items()},
        "median_ms": latency.get("median_ms"),
        "top1": accuracy.get("top1"),
        "top5": accuracy.get("top5"),
        "path": str(result.path),
    }


def collect(root: Path) -> tuple[list[dict], list[str]]:
    """Rows for the valid results under ``root``, and one-line problems for the others."""
    rows, problems = [], []
    for item in iter_results(root):
        if isinstance(item, ResultsFileError):
            problems.append(str(item))
        else:
            rows.append(row(item))
    return rows, problems


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if value < 1 else f"{value:.2f}"
    return str(value)


def render_table(rows: list[dict]) -> str:
    """A plain-text table of ``rows`` in COLUMNS order."""
    cells = [list(COLUMNS)] + [[_cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_json(rows: list[dict], problems: list[str]) -> str:
    """The rows and problems as JSON."""
    return json.dumps({"results": rows, "problems": problems}, indent=1)
