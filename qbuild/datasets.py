"""Labelled images for calibration and accuracy, read from where the user keeps them.

A dataset is a folder with a ``labels.csv`` (columns ``filename`` and ``class_index``, the
0..999 index in torchvision's ImageNet order) or an ImageNet-style folder whose subfolders are
named by class index. Images are never copied into the project. The default is the shared
``imagenet-val-1300`` folder beside the project, where it exists; ``QBUILD_DATASET`` or
``--dataset`` point elsewhere.

Calibration and evaluation never share an image: a seeded permutation gives the first
``calibration`` images to calibration and the rest to evaluation.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from qbuild.errors import QbuildError

ENV_VAR = "QBUILD_DATASET"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOCATIONS = (_PROJECT_ROOT.parent / "shared" / "data" / "imagenet-val-1300",)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
SPLIT_SEED = 0


@dataclass(frozen=True)
class LabelledSet:
    """Images with their ImageNet class index."""

    root: Path
    items: tuple[tuple[Path, int], ...]

    @property
    def id(self) -> str:
        """Folder name and a hash of the file list and labels: results name the exact set."""
        digest = hashlib.sha256("".join(f"{p.name}:{c};" for p, c in self.items).encode()).hexdigest()[:10]
        return f"{self.root.name}@{digest}"

    def split(self, calibration: int) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
        """(calibration items, evaluation items): disjoint, from a seeded permutation."""
        order = np.random.default_rng(SPLIT_SEED).permutation(len(self.items))
        shuffled = [self.items[i] for i in order]
        return shuffled[:calibration], shuffled[calibration:]


def default_path() -> Path | None:
    """``$QBUILD_DATASET``, else the shared imagenet-val-1300 folder if it exists, else None."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return next((p for p in DEFAULT_LOCATIONS if p.is_dir()), None)


def load(path: Path | str) -> LabelledSet:
    """Read a labelled set; a missing or malformed one is a QbuildError that says what to fix."""
    path = Path(path)
    root = path.parent if path.name == "labels.csv" else path
    if not root.is_dir():
        raise QbuildError(
            f"dataset {path} does not exist",
            f"point --dataset (or ${ENV_VAR}) at a folder with labels.csv or class-index subfolders",
        )
    csv_path = root / "labels.csv"
    items = _from_csv(root, csv_path) if csv_path.exists() else _from_folders(root)
    if not items:
        raise QbuildError(
            f"dataset {root} holds no labelled images",
            "add labels.csv (filename,class_index) or subfolders named by class index",
        )
    return LabelledSet(root, tuple(items))


def _from_csv(root: Path, csv_path: Path) -> list[tuple[Path, int]]:
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"filename", "class_index"} - set(reader.fieldnames or ())
        if missing:
            raise QbuildError(
                f"{csv_path} lacks the column(s) {', '.join(sorted(missing))}",
                "give labels.csv the columns filename and class_index",
            )
        items = []
        for row in reader:
            image = root / row["filename"]
            if not image.exists():
                raise QbuildError(
                    f"{csv_path} names {row['filename']}, which is not in {root}", "fix labels.csv or restore the image"
                )
            items.append((image, int(row["class_index"])))
    return sorted(items)


def _from_folders(root: Path) -> list[tuple[Path, int]]:
    items: list = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        items.extend(
            (image, int(folder.name)) for image in sorted(folder.iterdir()) if image.suffix.lower() in IMAGE_SUFFIXES
        )
    return items


def images(items: list[tuple[Path, int]], preprocess: Callable) -> Iterator[tuple[np.ndarray, int]]:
    """(preprocessed CHW float32 image, class index) for each item, read lazily."""
    from PIL import Image

    for path, label in items:
        with Image.open(path) as image:
            yield preprocess(image), label


def cat_image():
    """A cat photograph for the study's 'does it still see the cat' check: scikit-image's
    ``chelsea`` (public domain), or None when scikit-image is not installed."""
    try:
        from skimage import data
    except ImportError:
        return None
    from PIL import Image

    return Image.fromarray(data.chelsea())
