"""Shared fixtures: synthetic blob volumes, manifests and tiny configurations (no network, no ../shared)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGE = REPO / "DTCCore" / "sample" / "la_sample_image.nrrd"
SAMPLE_LABEL = REPO / "DTCCore" / "sample" / "la_sample_label.nrrd"


def bench_module(name: str) -> ModuleType:
    """Import the bench script or helper ``bench/<group>/<name>.py`` (whichever group folder holds it) as the
    scripts run: ``bench/lib`` (``common``, ``la_eval``...) and the script's own folder first on sys.path."""
    found = sorted((REPO / "bench").glob(f"*/{name}.py"))
    if len(found) != 1:
        raise LookupError(f"bench/*/{name}.py matches {[str(f) for f in found]}; name one bench script")
    folders = [str(REPO / "bench" / "lib"), str(found[0].parent)]
    sys.path[:0] = folders
    try:
        return importlib.import_module(name)
    finally:
        for folder in folders:
            sys.path.remove(folder)


BLOB_SHAPE = (40, 36, 24)  # small enough for CPU tests; not a multiple of the patch on purpose


def blob_volume(rng: np.random.Generator, shape=BLOB_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid on a noisy, slowly varying background. Returns (image float32, label uint8), (x, y, z)."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    centre = np.array([rng.uniform(0.35, 0.65) * s for s in shape], dtype=np.float32)
    radii = np.array([rng.uniform(0.15, 0.25) * s for s in shape], dtype=np.float32)
    d = sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    label = (d <= 1.0).astype(np.uint8)
    image = 100.0 + 60.0 * label + rng.normal(0, 12.0, shape) + 10.0 * np.sin(grid[0] / 7.0)
    return image.astype(np.float32), label


def write_volume(
    path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None
) -> Path:
    """Write an (x, y, z) array with SimpleITK (independent of DTCCore.data.images)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def make_blob_dataset(root: Path, n_labeled: int = 3, n_unlabeled: int = 2, seed: int = 0, shape=BLOB_SHAPE) -> Path:
    """Write blob cases and a manifest (relative paths); return the manifest path."""
    rng = np.random.default_rng(seed)
    labeled, unlabeled = [], []
    for i in range(n_labeled + n_unlabeled):
        image, label = blob_volume(rng, shape)
        write_volume(root / f"case{i}.nrrd", image)
        if i < n_labeled:
            write_volume(root / f"case{i}_label.nrrd", label)
            labeled.append({"image": f"case{i}.nrrd", "label": f"case{i}_label.nrrd"})
        else:
            unlabeled.append(f"case{i}.nrrd")
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"labeled": labeled, "unlabeled": unlabeled}, indent=1))
    return manifest


@pytest.fixture
def blob_manifest(tmp_path: Path) -> Path:
    return make_blob_dataset(tmp_path / "data")


def cancel_after(steps: int):
    """A training ``cancel`` callback that lets ``steps`` iterations run (it is polled before each), then cancels."""
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > steps

    return cancel


def tiny_config(iterations: int = 4, **train):
    """A configuration small enough to train in seconds on a CPU."""
    from DTCCore.config import DTCConfig

    config = DTCConfig()
    config.network.base_filters = 2
    config.train.patch = (32, 32, 16)
    config.train.iterations = iterations
    config.train.num_workers = 0
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.train.device = "cpu"
    config.train.deterministic = True
    config.recipe.ramp_unit = 1
    config.recipe.consistency_rampup = 4.0
    for k, v in train.items():
        setattr(config.train, k, v)
    config.validate()
    return config


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    """A randomly initialised tiny model saved as a checkpoint."""
    import torch

    from DTCCore.model.checkpoint import save_checkpoint
    from DTCCore.model.network import build_network

    config = tiny_config()
    torch.manual_seed(0)
    model = build_network(config.network)
    return save_checkpoint(tmp_path / "tiny.pt", model.eval(), None, 0, config, {"note": "random tiny test model"})
