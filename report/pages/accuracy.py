"""The accuracy page: top-1 per build, the study's accuracy claim re-tested, and each layer's
SQNR (where a build loses accuracy)."""

from __future__ import annotations

from qbuild.schema.layers import describe, floor_db
from report.rows import Row, group_by

# Families of the study's activation-dtype comparison: (name, variant per activation dtype).
ACTIVATION_FAMILIES = (
    ("relay defaults", {"int8": "int8-a8", "int16": "int8-a16", "int32": "int8-a32"}),
    ("calibrated", {"int8": "int8-a8-calibrated", "int16": "int8-a16-calibrated", "int32": "int8-a32-calibrated"}),
)
# A top-1 drop of more than this many points counts as losing accuracy.
ACCURACY_LOSS_POINTS = 1.0


def accuracy(all_rows: list[Row]) -> list[dict]:
    """Per model with measured accuracy: each variant's top-1/top-5, agreement and cat verdict."""
    out = []
    for (model, target, machine), group in group_by(all_rows, lambda r: (r.subject, r.target, r.machine)):
        measured = [r for r in group if r.record.get("accuracy") and not r.in_sweep]
        if not measured:
            continue
        base = next((r for r in measured if r.variant == "float"), None)
        base_top1 = base.record["accuracy"]["top1"] if base else None
        rows_out = []
        for r in measured:
            acc = r.record["accuracy"]
            rows_out.append(
                {
                    "label": r.label,
                    "variant": r.variant,
                    **acc["labelled"],
                    "delta_points": None if base_top1 is None else 100 * (acc["top1"] - base_top1),
                    "cat": acc.get("cat"),
                }
            )
        out.append(
            {"model": model, "target": target, "machine": machine, "weights": measured[0].weights, "rows": rows_out}
        )
    return out


def layer_errors(all_rows: list[Row]) -> list[dict]:
    """Per (model, machine): each quantized variant's output SQNR at every layer
    (``qbuild.layer_errors``), the layers described once, and where each variant's error first
    reaches the floor its result records (``qbuild.schema.layers.floor_db``)."""
    out = []
    for (model, machine), group in group_by(all_rows, lambda r: (r.subject, r.machine)):
        measured = [r for r in group if r.record.get("layer_errors") and r.record.get("quantization")]
        if not measured:
            continue
        first = measured[0].record["quantization"]["layers"]
        layers = [{"position": i, "kind": describe(layer)} for i, layer in enumerate(first)]
        out.append(
            {
                "model": model,
                "machine": machine,
                "layers": layers,
                "images": measured[0].record["layer_errors"]["images"],
                "variants": [_layer_profile(r) for r in measured],
            }
        )
    return out


def _noticeable(share: float | None) -> float | None:
    """A share of clipped values worth a sentence (0.1% or more), else None."""
    return share if share is not None and share >= 0.001 else None


def _layer_profile(row: Row) -> dict:
    """One variant's layer errors: the SQNR at each layer (None where exact), the logits', and the
    first layer below the floor with its weights' own SQNR and the share of its input clipped."""
    records = row.record["quantization"]["layers"]
    errors = row.record["layer_errors"]["layers"]
    floor = floor_db(row.record["layer_errors"])
    sqnr = [layer["sqnr_db"] for layer in errors]
    measured = [(i, db) for i, db in enumerate(sqnr) if db is not None]
    below = next(((i, db) for i, db in measured if db < floor), None)
    lowest = min(measured, key=lambda item: item[1]) if measured else None
    first_below = None
    if below is not None:
        position, db = below
        weights_db = records[position].get("weight_sqnr_db")
        first_below = {
            "position": position,
            "kind": describe(records[position]),
            "sqnr_db": db,
            "weight_sqnr_db": weights_db,
            "input_clipped": _noticeable(errors[position].get("input_clipped")),
            "from_input": weights_db is not None and weights_db >= db + floor,
        }
    return {
        "variant": row.variant,
        "label": row.label,
        "in_sweep": row.in_sweep,
        "floor_db": floor,
        "sqnr_db": sqnr,
        "logits_db": sqnr[-1] if sqnr else None,
        "first_below": first_below,
        "lowest": None if lowest is None else {"position": lowest[0], "sqnr_db": lowest[1]},
    }


def layer_floor(groups: list[dict]) -> float:
    """The floor the page's text names: the one the first variant's result records (every
    variant's own sentence names its own); schema 1's where none has layer errors."""
    return next((v["floor_db"] for g in groups for v in g["variants"]), floor_db())


def accuracy_findings(groups: list[dict]) -> list[dict]:
    """The study's accuracy claim (int8 activations lose accuracy, int16/int32 do not), re-tested
    for each family of variants that has all three activation dtypes and the unquantized model."""
    out = []
    for g in groups:
        by_variant = {r["variant"]: r for r in g["rows"]}
        for family, variants in ACTIVATION_FAMILIES:
            if "float" not in by_variant or not set(variants.values()) <= set(by_variant):
                continue
            drop = {dtype: -by_variant[v]["delta_points"] for dtype, v in variants.items()}
            out.append(
                {
                    "model": g["model"],
                    "target": g["target"],
                    "machine": g["machine"],
                    "family": family,
                    "drop_points": drop,
                    "int8_drops": drop["int8"] > ACCURACY_LOSS_POINTS,
                    "wider_hold": drop["int16"] <= ACCURACY_LOSS_POINTS and drop["int32"] <= ACCURACY_LOSS_POINTS,
                    "cats": {dtype: (by_variant[v]["cat"] or {}).get("is_cat") for dtype, v in variants.items()},
                }
            )
    return out
