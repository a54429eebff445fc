"""What one quantization computed that the next one of the same model can take as it is.

A plan quantizes a model several times (the bit-width sweep: six precisions; the calibrated
variants: three activation dtypes), each time from the same weights and calibration images. The
pure NumPy steps keyed by what they read (``digest`` of the arrays) run once: calibration's
statistics (``calibrate.collect``), a histogram's clipping thresholds (``Histogram``), a layer's
rounded weights per precision (``Rewriter.quantized_weights``). A ``Memory`` holds what one
model's quantizations share.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")


def digest(*arrays: np.ndarray | None) -> str:
    """A hash of the arrays' dtypes, shapes and bytes (None counts as itself)."""
    hashed = hashlib.sha256()
    for array in arrays:
        hashed.update(b"none" if array is None else f"{array.dtype}{array.shape}".encode())
        if array is not None:
            hashed.update(np.ascontiguousarray(array).tobytes())
    return hashed.hexdigest()


def remembered(store: dict, key, make: Callable[[], T], keep: int | None = None) -> T:
    """``store[key]``, made by ``make()`` the first time; ``store`` keeps the latest ``keep`` keys
    (None: all)."""
    if key not in store:
        while keep is not None and len(store) >= keep:
            del store[next(iter(store))]  # the oldest
        store[key] = make()
    return store[key]


# Rounded weights kept per ``Memory`` (a model's layers at each of its precisions fit many times over).
CODES_KEPT = 1024


@dataclass
class Memory:
    """What the quantizations of one model share: the latest calibration's statistics
    (``calibrate.collect``) and each layer's rounded weights per precision
    (``Rewriter.quantized_weights``). Pass the same one to each ``quantize`` of a model; a new one
    reuses nothing. ``measurements`` and ``roundings`` count the calibrations and weight roundings
    computed rather than reused."""

    statistics: dict = field(default_factory=dict)
    codes: dict = field(default_factory=dict)
    measurements: int = 0
    roundings: int = 0

    def clear(self) -> None:
        """Forget everything kept (the counts stay)."""
        self.statistics.clear()
        self.codes.clear()
