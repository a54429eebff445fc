"""Where a quantized build loses accuracy: each conv/dense layer's output against the float
model's, as a signal-to-quantization-noise ratio (SQNR, in dB), on a few held-out images.

The integer program and the float module it was made from (``QuantizedModule.layer_outputs``)
both return every layer's output, and both run on qbuild's builtin CPU kernels: every kernel set
computes the same integers (tested), so a tuned or CUDA build's layer errors are these. A layer's
error is cumulative (what the layers before it lost arrives with its input); its own share shows
as the drop from the layer that feeds it, and its weights' share alone is the quantization
record's ``weight_sqnr_db``. The error of the last layer is the logits'. Beside each quantized
layer stands the share of its input values (the float model's) beyond the range its input codes
reach: clipped, not rounded (relay's ``global_scale`` assumes every activation within +-8).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from qbuild.schema.layers import describe
from qbuild.verify import energy_db

LAYER_IMAGES = 8  # held-out images the layer errors are measured on
# Below this SQNR a layer's output carries noise of a tenth of its signal's energy or more.
FLOOR_DB = 10.0

Tensors = Callable[[np.ndarray], list[np.ndarray]]  # an input batch -> one tensor per layer


def measure(reference: Tensors, quantized: Tensors, images: Sequence[np.ndarray], layers: list[dict]) -> dict:
    """Each layer's output SQNR (``quantized`` against ``reference``; ``quantized`` returns one
    tensor per entry of ``layers``, the quantizer's layer records, and ``reference`` those and then
    each layer's input) over ``images`` (CHW each), and the share of each quantized layer's input
    values (the float model's) that lie beyond its input range and are clipped; with the floor
    (``FLOOR_DB``) they are judged by."""
    count = len(layers)
    signal, noise, clipped, seen = (np.zeros(count) for _ in range(4))
    limits = [_input_limits(layer) for layer in layers]
    for image in images:
        floats = reference(image[None])
        for i, (want, got) in enumerate(zip(floats[:count], quantized(image[None]), strict=True)):
            want = want.astype(np.float64)
            error = want - got
            signal[i] += np.sum(want * want)
            noise[i] += np.sum(error * error)
        for i, (data, limit) in enumerate(zip(floats[count:], limits, strict=True)):
            if limit is not None:
                clipped[i] += np.count_nonzero((data < limit[0]) | (data > limit[1]))
                seen[i] += data.size
    return {
        "images": len(images),
        "floor_db": FLOOR_DB,
        "layers": [
            {
                "index": layer["index"],
                "op": layer["op"],
                "name": layer["name"],
                "status": layer["status"],
                "sqnr_db": energy_db(s, n),
                "input_clipped": float(c / total) if total else None,
            }
            for layer, s, n, c, total in zip(layers, signal, noise, clipped, seen, strict=True)
        ],
    }


def _input_limits(layer: dict) -> tuple[float, float] | None:
    """The real values a quantized layer's input codes reach, to the rounding boundary beyond its
    lowest and highest code (values outside are clipped); None for a float layer."""
    encoding, scale = layer.get("input_encoding"), layer.get("input_scale")
    if layer["status"] != "quantized" or encoding is None or scale is None:
        return None
    bits = encoding["bits"]
    high = (1 << bits) - 1 if encoding["kind"] == "unsigned" else (1 << (bits - 1)) - 1
    low = 0 if encoding["kind"] == "unsigned" else -high
    return (low - 0.5) * scale, (high + 0.5) * scale


def render(measured: dict, layers: list[dict]) -> str:
    """The layer errors as a table, one row per layer (``measure``'s result and the quantizer's
    layer records), the first layer below ``FLOOR_DB`` marked."""
    lines = [f"{'layer':>5}  {'kind':<34} {'status':<9} {'weights dB':>10} {'input clipped':>13} {'output dB':>10}"]
    flagged = False
    for position, (error, layer) in enumerate(zip(measured["layers"], layers, strict=True)):
        weights, output, clipped = layer.get("weight_sqnr_db"), error["sqnr_db"], error.get("input_clipped")
        mark = ""
        if output is not None and output < FLOOR_DB and not flagged:
            flagged, mark = True, f"  <- first below {FLOOR_DB:.0f} dB"
        share = "-" if clipped is None else f"{100 * clipped:.2f}%"
        lines.append(
            f"{position:>5}  {describe(layer):<34} {layer['status']:<9} {_db(weights):>10} {share:>13} "
            f"{_db(output):>10}{mark}"
        )
    lines.append(
        f"(output: against the float model on {measured['images']} images, '-' where exact; weights: the "
        "layer's rounded weights alone; input clipped: the float model's input values beyond its range)"
    )
    return "\n".join(lines)


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
