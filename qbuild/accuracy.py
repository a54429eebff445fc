"""How often is the compiled model right: top-1/top-5 on labelled images, agreement with the
float PyTorch model on the same images, and the study's cat-image check."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Evaluation:
    """Labelled images, preprocessed, with the float reference's top-1 on each: what every build
    of a model is scored on (made once, ``evaluation``, then shared by the builds)."""

    dataset_id: str
    images: tuple[np.ndarray, ...]
    labels: tuple[int, ...]
    reference_top1: tuple[int, ...]


def evaluation(reference: Logits, samples: Iterable[tuple[np.ndarray, int]], dataset_id: str) -> Evaluation:
    """(image, label) samples read once, each with ``reference``'s top-1 class."""
    images, labels, expected = [], [], []
    for image, label in samples:
        images.append(image)
        labels.append(int(label))
        expected.append(int(_top(reference(image[None]), 1)[0]))
    if not images:
        raise ValueError("no evaluation images")
    return Evaluation(dataset_id, tuple(images), tuple(labels), tuple(expected))


def labelled(run: Logits, scored: Evaluation, on_progress: Callable[[int], None] | None = None) -> dict:
    """Top-1/top-5 of ``run`` on the evaluation's images, and its top-1 agreement with the reference."""
    top1 = top5 = agree = 0
    for n, (image, label, expected) in enumerate(zip(scored.images, scored.labels, scored.reference_top1), start=1):
        predicted = _top(run(image[None]), 5)
        top1 += int(predicted[0] == label)
        top5 += int(label in predicted)
        agree += int(predicted[0] == expected)
        if on_progress is not None and n % 100 == 0:
            on_progress(n)
    n = len(scored.labels)
    reference_top1 = sum(e == label for e, label in zip(scored.reference_top1, scored.labels))
    return {
        "dataset": scored.dataset_id,
        "n": n,
        "top1": top1 / n,
        "top5": top5 / n,
        "agreement_with_float": agree / n,
        "float_top1": reference_top1 / n,
    }


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
