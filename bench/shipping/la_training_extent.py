"""One-off: the physical extent of the bundled model's training scans (LA 2018 train.list), from headers.

The bundled ``DTCCore/models/default.pt`` predates the ``training_extent_mm`` metadata that ``dtc train``
now writes, and rewriting the 19 MB model file would add another copy to the repository; its card
``DTCCore/models/default.json`` carries the number instead (DTCCore/planning/extent.py reads it from there).
The model was trained on train.list's 80 cases (16 labeled + 64 unlabeled, see the card's ``data``).

    python bench/shipping/la_training_extent.py [--data FOLDER]   # prints the JSON to paste into the card
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
from DTCCore.planning.extent import EXTENT_KEY, training_extent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=common.Path, default=common.DEFAULT_DATA, help="LA 2018 folder (train.list)")
    args = p.parse_args()
    spacings, shapes = [], []
    for case in common.read_list(args.data, "train.list"):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(common.case_files(args.data, case)[0]))
        reader.ReadImageInformation()
        spacings.append(reader.GetSpacing())
        shapes.append(reader.GetSize())
    sizes = [[n * s for n, s in zip(shape, spacing)] for shape, spacing in zip(shapes, spacings)]
    median = [round(sorted(v)[len(v) // 2], 2) for v in zip(*sizes)]
    print(json.dumps({EXTENT_KEY: training_extent(spacings, shapes), "median_mm": median, "cases": len(shapes),
                      "source": "LA 2018 train.list image headers (bench/shipping/la_training_extent.py)"}))


if __name__ == "__main__":
    main()
