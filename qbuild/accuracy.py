"""How often is the compiled model right: top-1/top-5 on labelled images, agreement with the
float PyTorch model on the same images, and the study's cat-image check."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Iterable

import numpy as np

# ImageNet classes 281..285: tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat.
CAT_CLASSES = frozenset(range(281, 286))

Logits = Callable[[np.ndarray], np.ndarray]


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names in torchvision's order (shipped in torchvision's code)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _top(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits.reshape(-1))[:k]


def labelled(
    run: Logits,
    reference: Logits,
    samples: Iterable[tuple[np.ndarray, int]],
    dataset_id: str,
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    """Top-1/top-5 of ``run`` on (image, label) samples, and its top-1 agreement with ``reference``."""
    top1 = top5 = agree = reference_top1 = n = 0
    for image, label in samples:
        batch = image[None]
        predicted = _top(run(batch), 5)
        expected = int(_top(reference(batch), 1)[0])
        top1 += int(predicted[0] == label)
        top5 += int(label in predicted)
        agree += int(predicted[0] == expected)
        reference_top1 += int(expected == label)
        n += 1
        if on_progress is not None and n % 100 == 0:
            on_progress(n)
    if n == 0:
        raise ValueError("no evaluation images")
    return {"dataset": dataset_id, "n": n, "top1": top1 / n, "top5": top5 / n,
            "agreement_with_float": agree / n, "float_top1": reference_top1 / n}


def cat(run: Logits, image: np.ndarray) -> dict:
    """The five best classes for the cat image, with softmax probabilities; is the best a cat?"""
    logits = run(image[None]).reshape(-1).astype(np.float64)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    names = imagenet_categories()
    best = _top(logits, 5)
    return {
        "image": "scikit-image data.chelsea (public domain)",
        "top5": [{"class_index": int(i), "name": names[i], "probability": float(probabilities[i])} for i in best],
        "is_cat": int(best[0]) in CAT_CLASSES,
    }


def torch_logits(module) -> Logits:
    """A NumPy-in, NumPy-out view of a float PyTorch module (the accuracy reference)."""
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    return run
