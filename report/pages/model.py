"""Item 1 and 2 of the study (model and trace page): each model's summary and weights."""

from __future__ import annotations

from report.rows import Row, group_by


def models(all_rows: list[Row]) -> list[dict]:
    """Per model: its summary and weights provenance (from its first result)."""
    out = []
    for model, group in group_by(all_rows, lambda r: r.model):
        summary = next((r.record["model"] for r in group if r.record.get("model")), None)
        out.append(
            {
                "name": model,
                "summary": summary,
                "weights": group[0].weights,
                "input_shape": summary["input_shape"] if summary else None,
            }
        )
    return out
