"""Where a quantized build loses accuracy: each conv/dense layer's output against the float
model's, as a signal-to-quantization-noise ratio (SQNR, in dB), on a few held-out images.

The integer program and the float module it was made from (``QuantizedModule.layer_outputs``)
both return every layer's output, and both run on qbuild's builtin CPU kernels: every kernel set
computes the same integers (tested), so a tuned or CUDA build's layer errors are these. A layer's
error is cumulative (what the layers before it lost arrives with its input); its own share shows
as the drop from the layer that feeds it, and its weights' share alone is the quantization
record's ``weight_sqnr_db``. The error of the last layer is the logits'.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from qbuild.verify import energy_db

LAYER_IMAGES = 8  # held-out images the layer errors are measured on

Tensors = Callable[[np.ndarray], list[np.ndarray]]  # an input batch -> one tensor per layer


def measure(reference: Tensors, quantized: Tensors, images: Sequence[np.ndarray], layers: list[dict]) -> dict:
    """The SQNR of each layer's output (``quantized`` against ``reference``, both returning one
    tensor per entry of ``layers``, the quantizer's layer records) over ``images`` (CHW each)."""
    signal = np.zeros(len(layers))
    noise = np.zeros(len(layers))
    for image in images:
        for i, (want, got) in enumerate(zip(reference(image[None]), quantized(image[None]), strict=True)):
            want = want.astype(np.float64)
            error = want - got
            signal[i] += np.sum(want * want)
            noise[i] += np.sum(error * error)
    return {
        "images": len(images),
        "layers": [{"index": layer["index"], "op": layer["op"], "name": layer["name"], "status": layer["status"],
                    "sqnr_db": energy_db(s, n)} for layer, s, n in zip(layers, signal, noise, strict=True)],
    }
