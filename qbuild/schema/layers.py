"""A quantized result's layers: each layer record in words, and the floor its layer errors are
judged by.

A result's ``layer_errors`` block records each layer's output SQNR and (since it is recorded)
``floor_db``, the SQNR below which a layer's output counts as lost; a block written before that
was judged by ``SCHEMA_1_FLOOR_DB`` (frozen).
"""

from __future__ import annotations

SCHEMA_1_FLOOR_DB = 10.0


def describe(layer: dict) -> str:
    """A layer record of the quantizer in words: "depthwise 5x5 conv, 672 channels", "1x1 conv 16 -> 96"."""
    shape = layer["weight_shape"]
    if layer["op"] == "nn.dense":
        return f"dense {shape[0]} -> {shape[1]}"
    out_channels, per_group, kh, kw = shape
    groups = layer.get("groups", 1)
    if groups > 1 and groups == out_channels and per_group == 1:
        return f"depthwise {kh}x{kw} conv, {out_channels} channels"
    return f"{kh}x{kw} conv {per_group * groups} -> {out_channels}"


def floor_db(layer_errors: dict | None = None) -> float:
    """The SQNR (dB) below which a layer's output counts as lost, as a ``layer_errors`` block
    records it; ``SCHEMA_1_FLOOR_DB`` for a block that does not (or for no block)."""
    return float((layer_errors or {}).get("floor_db", SCHEMA_1_FLOOR_DB))
