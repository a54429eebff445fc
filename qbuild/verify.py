"""Does the compiled model compute what the PyTorch model computes?"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch

# Inputs of the comparison are drawn from N(0, 1) with this seed, like the study's torch.randn.
VERIFY_SEED = 1234


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Error of ``candidate`` logits against ``reference`` logits (same shape, batch first)."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    got = candidate.reshape(candidate.shape[0], -1).astype(np.float64)
    diff = np.abs(ref - got)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    # Two all-zero rows agree (a randomly initialised ViT's zeroed head gives such logits); one zero row does not.
    both_zero = ~ref.any(axis=1) & ~got.any(axis=1)
    cosine = np.where(both_zero, 1.0, np.sum(ref * got, axis=1) / (norms + 1e-30))
    return {
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "max_abs_reference": float(np.abs(ref).max()),
        "cosine_similarity": float(cosine.min()),
        "top1_agreement": float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1))),
    }


def energy_db(signal: float, noise: float) -> float | None:
    """``10 log10(signal / noise)``: a signal-to-noise ratio in dB from two energies (sums of
    squares); None where either is zero (an exact result, or nothing to measure against)."""
    if noise == 0 or signal == 0:
        return None
    return float(10.0 * np.log10(signal / noise))


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio of ``approximation`` against ``reference``, in dB (``energy_db``)."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = ref - np.asarray(approximation, dtype=np.float64)
    return energy_db(float(np.sum(ref * ref)), float(np.sum(noise * noise)))


def against_torch(
    run: Callable[[np.ndarray], np.ndarray],
    module: "torch.nn.Module",
    input_shape: tuple[int, ...],
    seed: int = VERIFY_SEED,
) -> dict:
    """Run ``run`` and the PyTorch ``module`` on one seeded random batch and compare their logits."""
    import torch

    batch = np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    with torch.no_grad():
        reference = module(torch.from_numpy(batch)).numpy()
    report = compare_logits(reference, run(batch))
    report["input"] = f"N(0,1) batch of shape {list(input_shape)}, seed {seed}"
    return report
