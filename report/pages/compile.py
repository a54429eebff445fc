"""The compiling page: each build's compile time and its error against PyTorch."""

from __future__ import annotations

from report.rows import Row, group_by


def compiles(all_rows: list[Row]) -> list[dict]:
    """Per (machine, target): each experiment's compile time and its error against PyTorch."""
    out = []
    for (machine, target), group in group_by([r for r in all_rows if not r.is_peer], lambda r: (r.machine, r.target)):
        out.append(
            {
                "machine": machine,
                "target": target,
                "device": group[0].device,
                "reason": group[0].field("experiment", "target", "reason"),
                "spec": group[0].field("experiment", "target", "spec"),
                "rows": [
                    {
                        "id": r.id,
                        "model": r.model,
                        "label": r.label,
                        "status": r.stage("compile"),
                        "seconds": r.field("compile", "seconds"),
                        "correctness": r.record.get("correctness"),
                    }
                    for r in group
                ],
            }
        )
    return out
