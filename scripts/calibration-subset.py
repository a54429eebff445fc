"""Copy a labelled set's held-out calibration images (and their labels.csv rows) to DEST.

A lent GPU machine has no dataset and a device call carries 64 MiB: the bit-width sweep needs
only the images it calibrates on. The copy is a labelled set of its own (its split gives all its
images to calibration), so it calibrates on the same images as the full set, in another order.
Keep DEST outside the repository's tracked files (README, "GPU results": .gpu/calib).

    python scripts/calibration-subset.py DEST [--dataset DIR]
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from qbuild import datasets
from qbuild.plan import get_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--dataset", type=Path, default=datasets.default_path())
    args = parser.parse_args()
    labelled = datasets.load(args.dataset)
    held_out, _ = labelled.split(get_profile("default").calibration_images)
    args.dest.mkdir(parents=True, exist_ok=True)
    with open(args.dest / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "class_index"])
        for path, label in held_out:
            shutil.copy2(path, args.dest / path.name)
            writer.writerow([path.name, label])
    print(f"{len(held_out)} calibration images of {labelled.id} -> {args.dest}")


if __name__ == "__main__":
    main()
