"""The bit-width sweep page: each precision's stages, latency, accuracy, weight bytes and kernels."""

from __future__ import annotations

from report.rows import Row, group_by

SWEEP_STAGES = ("quantize", "compile", "kernel_check", "bench", "accuracy")
# The options a sweep precision sets for itself (its bits, or the budget each layer's bits are chosen
# under), and those its settings table shows beside the ones the sweep sets for all (as its variants
# recorded them).
SWEPT = ("nbit_weight", "nbit_input", "bit_budget")
UNSWEPT_SETTINGS = ("skip_conv_layers", "nbit_edge", "subbyte_kernel")
W4A8_ACCURACY_POINTS = 1.0  # the goal (issue 29): W4A8 top-1 within this many points of float


def _stage(row: Row, name: str) -> dict:
    stage = row.field("stages", name, default={"status": "absent"})
    note = (stage.get("error") or {}).get("message") or stage.get("reason")
    return {"status": stage["status"], "note": note}


def _settings(swept: list[Row]) -> list[str]:
    """The qconfig options a sweep group's settings table shows: those its variants set (as they
    recorded them), less the swept bit widths, then ``UNSWEPT_SETTINGS``."""
    chosen = [r.field("experiment", "variant", "qconfig", default={}) for r in swept]
    options = dict.fromkeys(name for qconfig in chosen for name in qconfig if name not in SWEPT)
    return [*options, *(name for name in UNSWEPT_SETTINGS if name not in options)]


def sweep(all_rows: list[Row]) -> list[dict]:
    """Per (model, target, machine): each sweep precision's stages, latency, accuracy, weight
    bytes and kernels, against the float build of the same model."""
    out = []
    for (model, target, machine), group in group_by(all_rows, lambda r: (r.subject, r.target, r.machine)):
        swept = sorted((r for r in group if r.in_sweep), key=lambda r: r.description.rank())
        if not swept:
            continue
        settings = _settings(swept)
        base = next((r for r in group if r.variant == "float"), None)
        float_top1 = base.field("accuracy", "top1") if base else None
        parameters = next((r.field("model", "parameters") for r in group if r.field("model", "parameters")), None)
        float_bytes = 4 * parameters if parameters else None
        configs = [r.field("quantization", "config", default={}) for r in swept]
        rows_out = []
        for r, config in zip(swept, configs):
            layers = [
                layer for layer in r.field("quantization", "layers", default=[]) if layer["status"] == "quantized"
            ]
            top1, weight_bytes = r.field("accuracy", "top1"), r.field("compile", "weight_bytes")
            rows_out.append(
                {
                    "variant": r.variant,
                    "label": r.label,
                    "id": r.id,
                    "commit": r.commit,
                    "weight_bits": config.get("nbit_weight"),
                    "input_bits": config.get("nbit_input"),
                    # under a bit budget: the MAC-weighted mean (W + A) / 2 its chosen layers ran at
                    "mean_bits": r.field("quantization", "mixed_precision", "mean_bits"),
                    "stages": {name: _stage(r, name) for name in SWEEP_STAGES},
                    "median_ms": r.median_ms,
                    "top1": top1,
                    "top5": r.field("accuracy", "top5"),
                    "delta_points": None if top1 is None or float_top1 is None else 100 * (top1 - float_top1),
                    "weight_bytes": weight_bytes,
                    "bytes_vs_float": weight_bytes / float_bytes if weight_bytes and float_bytes else None,
                    "bitserial_layers": sum(layer.get("kernel") == "bitserial" for layer in layers),
                    "int8_layers": sum(layer.get("kernel") == "int8" for layer in layers),
                    "int16_sum_convs": r.field("compile", "kernels", "int16_sum_convs"),
                    "kernel_check": r.record.get("kernel_check"),
                }
            )
        w4a8 = next((row for row in rows_out if row["variant"] == "w4a8"), None)
        shared = [name for name in settings if len({repr(c.get(name)) for c in configs}) == 1]
        out.append(
            {
                "model": model,
                "target": target,
                "machine": machine,
                "weights": swept[0].weights,
                "settings": [{"name": name, "value": configs[0].get(name)} for name in shared],
                "differing": [name for name in settings if name not in shared],
                "float_ms": base.median_ms if base else None,
                "float_top1": float_top1,
                "float_bytes": float_bytes,
                "float_commit": base.commit if base else None,
                "rows": rows_out,
                # the rule "auto" chose sub-byte kernels by (absent in results written before it was recorded)
                "auto_pairs": sorted(
                    {pairs for r in swept if (pairs := r.field("quantization", "auto_bitserial_pairs")) is not None}
                ),
                "failed": [
                    (row["label"], name, stage["note"])
                    for row in rows_out
                    for name, stage in row["stages"].items()
                    if stage["status"] == "error"
                ],
                "w4a8_target": None
                if w4a8 is None or w4a8["delta_points"] is None
                else {
                    "drop_points": -w4a8["delta_points"],
                    "met": -w4a8["delta_points"] <= W4A8_ACCURACY_POINTS,
                    "goal_points": W4A8_ACCURACY_POINTS,
                },
            }
        )
    return out
