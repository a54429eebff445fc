"""The quantization page: the qconfig table and each quantized build's layers."""

from __future__ import annotations

from qbuild.quantize.config import DEFAULTS, options
from report.rows import VARIANT_ORDER, Row, group_by


def qconfig_table(all_rows: list[Row]) -> dict:
    """The option table: relay's default and the value in each quantized variant that ran."""
    variants = []
    for variant, group in group_by(
        [r for r in all_rows if r.record.get("quantization") and not r.in_sweep], lambda r: r.variant
    ):
        variants.append({"name": variant, "label": group[0].label, "config": group[0].record["quantization"]["config"]})
    variants.sort(key=lambda v: VARIANT_ORDER.index(v["name"]) if v["name"] in VARIANT_ORDER else 99)
    table = [
        {"name": o["name"], "default": o["default"], "values": [v["config"].get(o["name"]) for v in variants]}
        for o in options()
    ]
    return {"variants": variants, "options": table, "defaults": DEFAULTS.to_json()}


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
