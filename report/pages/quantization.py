"""The quantization page: the qconfig table and each quantized build's layers."""

from __future__ import annotations

from qbuild.schema.quantization import qconfig_defaults
from report.rows import Row, group_by


def qconfig_table(all_rows: list[Row]) -> dict:
    """The option table: relay's default and the value in each quantized variant that ran (the
    defaults as the first of them recorded them; ``qbuild.schema.quantization``)."""
    variants = []
    quantized = [r for r in all_rows if r.record.get("quantization") and not r.in_sweep]
    for variant, group in group_by(quantized, lambda r: r.variant):
        variants.append(
            {
                "name": variant,
                "label": group[0].label,
                "config": group[0].record["quantization"]["config"],
                "rank": group[0].description.rank(),
            }
        )
    variants.sort(key=lambda v: v["rank"])
    defaults = qconfig_defaults(min(quantized, key=Row.sort_key).record["quantization"] if quantized else None)
    table = [
        {"name": name, "default": default, "values": [v["config"].get(name) for v in variants]}
        for name, default in defaults.items()
    ]
    return {"variants": variants, "options": table, "defaults": defaults}


def quantized_layers(all_rows: list[Row]) -> list[dict]:
    """Per quantized experiment: how many layers were quantized, which were skipped and why."""
    out = []
    for r in all_rows:
        q = r.record.get("quantization")
        if not q:
            continue
        out.append(
            {
                "id": r.id,
                "model": r.model,
                "label": r.label,
                "quantized": q["layers_quantized"],
                "skipped": [layer for layer in q["layers"] if layer["status"] == "skipped"],
                "calibration": q["calibration"],
                "correctness": r.record.get("correctness"),
            }
        )
    return out
