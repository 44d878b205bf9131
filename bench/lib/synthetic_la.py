"""A synthetic LA2018-like data folder (noisy ellipsoids) for the --tiny and --smoke runs of the bench scripts."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_data(folder: Path, n_train: int = 3, n_test: int = 2, shape=(40, 36, 24), seed: int = 0) -> Path:
    """An LA2018-like folder of noisy ellipsoids: train.list, test.list, <case>/image.nrrd + label.nrrd."""
    from DTCCore.data.images import Geometry, write_image

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    names = [f"case{i:02d}" for i in range(n_train + n_test)]
    for name in names:
        centre = np.array([rng.uniform(0.4, 0.6) * s for s in shape], np.float32)
        radii = np.array([rng.uniform(0.2, 0.3) * s for s in shape], np.float32)
        label = (sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1).astype(np.uint8)
        image = 100 + 60 * label + rng.normal(0, 10, shape)
        geometry = Geometry(spacing=(0.625, 0.625, 0.625))
        write_image(folder / name / "image.nrrd", image.astype(np.float32), geometry)
        write_image(folder / name / "label.nrrd", label, geometry)
    (folder / "train.list").write_text("\n".join(names[:n_train]) + "\n")
    (folder / "test.list").write_text("\n".join(names[n_train:]) + "\n")
    return folder
