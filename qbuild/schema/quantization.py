"""The qconfig options of a quantized result, with the defaults they were judged against.

A quantized result's ``quantization`` block records the config it ran with (``config``) and,
since they are recorded, every option's default (``defaults``, in QConfig's order). For a block
written before that, ``SCHEMA_1_DEFAULTS`` holds them: relay.quantize's names and defaults and
qbuild's additions as QConfig had them when they began to be recorded (frozen).

Under a ``bit_budget`` the block also records ``mixed_precision`` (the budget, the layers whose
bits it chose, the realised MAC-weighted mean bits over them and over every quantized layer), and
each chosen layer's record its ``sensitivity`` and every quantized layer's its ``macs``; a block
without a budget, or written before, has ``mixed_precision`` null or absent: every layer then ran
at the config's bits (``nbit_weight`` / ``nbit_input``, ``nbit_edge`` for edge layers).
"""

from __future__ import annotations

SCHEMA_1_DEFAULTS: dict[str, object] = {
    "nbit_input": 8,
    "nbit_weight": 8,
    "nbit_activation": 32,
    "dtype_input": "int8",
    "dtype_weight": "int8",
    "dtype_activation": "int32",
    "calibrate_mode": "global_scale",
    "global_scale": 8.0,
    "weight_scale": "power2",
    "skip_dense_layer": True,
    "skip_conv_layers": [0],
    "do_simulation": False,
    "round_for_shift": True,
    "debug_enabled_ops": None,
    "rounding": "UPWARD",
    "calibrate_chunk_by": -1,
    "partition_conversions": "disabled",
    "per_channel_weights": False,
    "calibrate_percentile": 99.99,
    "calibrate_samples": 32,
    "nbit_edge": 8,
    "edge_layers": ["first_conv", "dense"],
    "bias_correction": False,
    "weight_rounding": "nearest",
    "subbyte_kernel": "auto",
}


def qconfig_defaults(quantization: dict | None = None) -> dict[str, object]:
    """Every qconfig option and its default, as the ``quantization`` block of a result records
    them; ``SCHEMA_1_DEFAULTS`` for a block that does not (or for no block)."""
    recorded = (quantization or {}).get("defaults")
    return dict(recorded) if recorded is not None else dict(SCHEMA_1_DEFAULTS)
