"""Best per-class Dice a model working on a coarser grid could reach on ACDC (labels only, no network).

    python bench/studies/acdc_grid_bound.py --data ../shared/data/acdc --list val.list
        --spacing 2 2 1 --spacing 1.5 1.5 1

Each label map goes to the coarse grid through its per-class signed distances (DTCCore.data.resample, as
training does), back to the original grid linearly as one-hot channels, and takes the arg-max; the Dice
with the original labels is the ceiling that grid puts on any model. Units are the headers' (ACDC's
real spacing is unknown; every header says 1 x 1 x 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
from train_acdc import CLASSES as ACDC_CLASSES

CLASSES = len(ACDC_CLASSES)  # ACDC label values 1..3 (train_acdc.CLASSES, from the data's README)


def bound(label: np.ndarray, spacing: tuple[float, float, float]) -> list[float]:
    from DTCCore.data.resample import resample_label, resize_linear, target_shape

    low = resample_label(label, (1.0, 1.0, 1.0), target_shape(label.shape, (1.0, 1.0, 1.0), spacing), CLASSES)
    onehot = np.stack([(low == k).astype(np.float32) for k in range(CLASSES + 1)])
    back = resize_linear(onehot, label.shape).argmax(0)
    return [2 * float(((back == k) & (label == k)).sum()) / float((back == k).sum() + (label == k).sum())
            for k in range(1, CLASSES + 1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--list", default="val.list")
    p.add_argument("--spacing", type=float, nargs=3, action="append", required=True)
    args = p.parse_args()
    from DTCCore.data.images import read_image, read_label

    cases = common.read_list(args.data, args.list)
    for spacing in args.spacing:
        rows = []
        for case in cases:
            image, geometry = read_image(args.data / case / "image.nrrd")
            rows.append(bound(read_label(args.data / case / "label.nrrd", geometry, image.shape, CLASSES),
                              tuple(spacing)))
        per_class = np.mean(rows, axis=0)
        print(f"spacing {spacing}: Dice % per class " + " / ".join(f"{100 * d:.1f}" for d in per_class)
              + f", mean {100 * per_class.mean():.1f} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
