"""Calibration: the real-valued range each quantized activation is given.

Modes (``QConfig.calibrate_mode``):

- ``global_scale``: relay's default; every activation spans [-global_scale, global_scale],
  no data needed.
- ``max``: the largest magnitude seen on the calibration images.
- ``percentile``: the ``calibrate_percentile``-th percentile of magnitudes (clips outliers).
- ``kl_divergence``: the clipping threshold whose quantized distribution is closest (KL
  divergence) to the observed one, as in TensorRT's entropy calibration.
- ``mse``: the clipping threshold with the least expected squared quantization error (the
  one that suits 2- and 4-bit tensors).
- ``kl_mse``: KL divergence for 8-bit tensors, MSE for narrower ones: a mixed precision's
  8-bit activations keep the entropy threshold (EfficientNet-Lite0 W4A8 on the 500 evaluation
  images: 81.4% top-1 against MSE's 80.6%; on all 1236 held-out images the gain was smaller,
  within that set's noise), while its 2- and 4-bit conv inputs get
  the MSE range that KL's merge of 2048 bins into 3 or 15 levels cannot find.

Clipping (percentile, KL, MSE) is applied to tensors of at most 8 bits only: a 16- or 32-bit
tensor has the resolution to keep its outliers, so it gets the ``max`` range instead.

Statistics come from running the float model itself: a copy of ``main`` that also returns
the requested intermediate tensors is compiled for the host CPU and run on each image.
Magnitudes go into a 2048-bin histogram whose range doubles when a larger value arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from qbuild.quantize import memo
from qbuild.quantize.config import QConfig

HISTOGRAM_BINS = 2048
# Tensors wider than this many bits are never clipped by calibration.
CLIPPING_MAX_BITS = 8


@dataclass
class Histogram:
    """Histogram of non-zero magnitudes over [0, upper) in ``HISTOGRAM_BINS`` bins (the range
    doubles as needed), and the mean of each channel (axis 1) for bias correction."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, dtype=np.int64))
    upper: float = 0.0
    max_abs: float = 0.0
    channel_sums: np.ndarray | None = None
    channel_samples: int = 0
    gram: np.ndarray | None = None  # sum of x x^T over positions (channels x channels), when asked for
    keep_gram: bool = False
    # {(search, levels): threshold}: the searches below, made once per histogram (the sweep's six
    # precisions share their statistics; KL over ResNet-50's 89 tensors: ~17 s).
    _thresholds: dict = field(default_factory=dict, repr=False, compare=False)

    def channel_means(self) -> np.ndarray | None:
        """Each channel's mean over the images and positions seen (None before any 2-D+ tensor)."""
        return None if self.channel_sums is None else self.channel_sums / self.channel_samples

    def add(self, values: np.ndarray) -> None:
        self._thresholds.clear()
        if values.ndim >= 2:
            axes = tuple(i for i in range(values.ndim) if i != 1)
            sums = values.sum(axis=axes, dtype=np.float64)
            self.channel_sums = sums if self.channel_sums is None else self.channel_sums + sums
            self.channel_samples += values.size // values.shape[1]
            if self.keep_gram:
                # One image's product in float32 (relative error ~1e-7; on ResNet-50's 1x1 conv
                # inputs 2-5x faster than float64 and its copies), summed over images in float64.
                columns = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1).astype(np.float32, copy=False)
                product = (columns @ columns.T).astype(np.float64)
                self.gram = product if self.gram is None else self.gram + product
        magnitudes = np.abs(values.astype(np.float32, copy=False)).ravel()
        top = float(magnitudes.max(initial=0.0))
        self.max_abs = max(self.max_abs, top)
        if top == 0.0:
            return
        if self.upper == 0.0:
            self.upper = top * (1 + 1e-6)
        while top >= self.upper:
            merged = self.counts[0::2] + self.counts[1::2]
            self.counts = np.concatenate([merged, np.zeros_like(merged)])
            self.upper *= 2
        counts = np.histogram(magnitudes, bins=HISTOGRAM_BINS, range=(0.0, self.upper))[0]
        # Exact zeros (half of every ReLU output) are representable at any scale: leaving them
        # out (of the first bin, where they fell) keeps their spike from pulling the KL threshold down.
        counts[0] -= magnitudes.size - np.count_nonzero(magnitudes)
        self.counts += counts

    @property
    def bin_width(self) -> float:
        return self.upper / HISTOGRAM_BINS

    def percentile(self, q: float) -> float:
        """The magnitude below which ``q`` percent of values lie (upper edge of that bin)."""
        cumulative = np.cumsum(self.counts)
        if cumulative[-1] == 0:
            return 0.0
        index = int(np.searchsorted(cumulative, cumulative[-1] * q / 100.0))
        return min(self.max_abs, (index + 1) * self.bin_width)

    def kl_threshold(self, levels: int) -> float:
        """The clipping threshold minimising KL(observed || quantized to ``levels`` magnitudes)."""
        return memo.remembered(self._thresholds, ("kl", levels), lambda: self._search_kl(levels))

    def _search_kl(self, levels: int) -> float:
        counts = self.counts.astype(np.float64)
        last = int(np.nonzero(counts)[0].max(initial=0)) + 1
        if last <= levels:
            return min(self.max_abs, last * self.bin_width)
        best, best_kl = last, np.inf
        for stop in range(levels, last + 1):
            reference = counts[:stop].copy()
            reference[-1] += counts[stop:].sum()  # outliers clip onto the last level
            candidate = _requantized(counts[:stop], levels)
            kl = _kl(reference, candidate)
            if kl < best_kl:
                best, best_kl = stop, kl
        return min(self.max_abs, best * self.bin_width)

    def mse_threshold(self, levels: int) -> float:
        """The clipping threshold minimising the expected squared error of quantizing these
        magnitudes to ``levels`` steps: clipped values lose their excess, the rest a uniform
        rounding error of step**2 / 12. The range that low-bit tensors need (a percentile
        keeps outliers that leave 2-bit codes almost all zero)."""
        return memo.remembered(self._thresholds, ("mse", levels), lambda: self._search_mse(levels))

    def _search_mse(self, levels: int) -> float:
        centres = (np.arange(HISTOGRAM_BINS) + 0.5) * self.bin_width
        candidates = np.linspace(self.max_abs / 64, self.max_abs, 256)
        errors = [
            np.sum(self.counts * np.where(centres > t, (centres - t) ** 2, (t / levels) ** 2 / 12)) for t in candidates
        ]
        return float(candidates[int(np.argmin(errors))])


def _requantized(counts: np.ndarray, levels: int) -> np.ndarray:
    """Merge ``counts`` into ``levels`` groups and spread each group's mass over its non-empty bins."""
    group = (np.arange(counts.size) * levels) // counts.size
    nonzero = counts > 0
    mass = np.bincount(group, weights=counts, minlength=levels)
    members = np.bincount(group, weights=nonzero, minlength=levels)
    return np.where(nonzero, mass[group] / np.maximum(members[group], 1), 0.0)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q_sum = q.sum()
    if q_sum == 0:
        return np.inf
    q = q / q_sum
    mask = p > 0
    if np.any(q[mask] == 0):
        return np.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def threshold(config: QConfig, stats: Histogram | None, levels: int) -> float:
    """The range bound T of a tensor with ``levels`` positive codes (127 for int8, 15 for
    unsigned 4-bit); its scale is T / levels."""
    if config.calibrate_mode == "global_scale" or stats is None:
        return config.global_scale
    if stats.max_abs == 0.0:
        return 1.0  # an all-zero tensor: any scale represents it exactly
    if config.calibrate_mode == "max" or levels > QConfig.qmax(CLIPPING_MAX_BITS):
        return stats.max_abs
    if config.calibrate_mode == "percentile":
        return max(stats.percentile(config.calibrate_percentile), stats.bin_width)
    if config.calibrate_mode == "mse" or (config.calibrate_mode == "kl_mse" and levels < QConfig.qmax(8)):
        return max(stats.mse_threshold(levels), stats.bin_width)
    return max(stats.kl_threshold(levels + 1), stats.bin_width)


def collect(
    mod,
    tensors: list,
    images: Iterable[np.ndarray],
    chunk_by: int = -1,
    grams: set | None = None,
    memory: memo.Memory | None = None,
) -> dict:
    """Histogram of each tensor (a Relax var of ``mod['main']``) over the images (CHW float32 each),
    and for the tensors in ``grams`` the channels' Gram matrix too (``weight_rounding="gptq"``).

    ``chunk_by`` > 0 computes that many tensors per pass over the images (less memory, more passes).
    The float model runs on qbuild's builtin CPU kernels (TVM's untuned ones take seconds per image).

    The statistics depend on nothing but the module, the tensors and the images, so the latest
    ones are kept in ``memory`` (``memo.Memory``; None: a new one) and handed back, read-only, when
    the same module (structurally, weights included), tensors and images come again and they hold
    every Gram matrix asked for (one more is ignored): the bit-width sweep calibrates its
    precisions on one measurement.
    """
    memory = memory if memory is not None else memo.Memory()
    latest = memory.statistics  # the latest calibration's key and statistics (in the order of its tensors)
    images = [np.asarray(image, dtype=np.float32) for image in images]
    key, gram_positions = _statistics_key(mod, tensors, images, grams or set())
    if latest.get("key") != key or not gram_positions <= latest["grams"]:
        latest.clear()
        stats = _measure(mod, tensors, images, chunk_by, grams or set())
        memory.measurements += 1
        latest.update(key=key, grams=gram_positions, stats=[stats[var] for var in tensors])
    return dict(zip(tensors, latest["stats"]))


def _statistics_key(mod, tensors: list, images: list[np.ndarray], grams: set) -> tuple[tuple, frozenset]:
    """What a calibration's statistics depend on: the module's structure and constants, which of
    its bindings are measured (by position: the vars themselves differ between rewrites of one
    module) and the images' bytes; and the positions of the tensors that need a Gram matrix."""
    import tvm_ffi

    position = {var: index for index, var in enumerate(_bound_vars(mod["main"]))}
    key = (tvm_ffi.structural_hash(mod), tuple(position[var] for var in tensors), memo.digest(*images))
    return key, frozenset(position[var] for var in grams if var in position)


def _bound_vars(func) -> list:
    """``func``'s parameters and bound vars, in program order."""
    bound = list(func.params)
    for block in func.body.blocks:
        bound.extend(binding.var for binding in block.bindings)
    return bound


def _measure(mod, tensors: list, images: list[np.ndarray], chunk_by: int, grams: set) -> dict:
    from qbuild.compile import host_tensors
    from qbuild.relax.graph import with_outputs

    stats = {var: Histogram(keep_gram=var in grams) for var in tensors}
    size = len(tensors) if chunk_by < 0 else chunk_by
    for start in range(0, len(tensors), max(size, 1)):
        chunk = tensors[start : start + size]
        run = host_tensors(with_outputs(mod, chunk))
        for image in images:
            for var, value in zip(chunk, run(image[None])):
                stats[var].add(value)
    return stats
