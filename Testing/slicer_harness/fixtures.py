"""pytest fixtures of the harness; import them into a test module (``from slicer_harness.fixtures import *``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .paths import MODULE_FILE, REPO
from .scene import import_module_file, install, new_scene

# As in Slicer: the module's folder is on sys.path (DTCSegmentationLib imports), and so is DTCCore's.
install()
sys.path.extend(folder for folder in (str(MODULE_FILE.parent), str(REPO)) if folder not in sys.path)


@pytest.fixture
def slicer_scene():
    """A fresh real MRML scene (slicer.mrmlScene) with Colors/Volumes/Segmentations/SH/Markups/Plots logics."""
    scene = new_scene()
    yield scene
    scene.Clear(True)


@pytest.fixture(scope="session")
def dtc_module():
    """The imported DTCSegmentation.py module (Module, Widget, Logic, Test classes)."""
    return import_module_file(MODULE_FILE)


def make_tiny_model(folder: Path) -> Path:
    """An untrained DualTaskVNet(base_filters=2), patch 16^3, its segmentation bias centred so that about
    half of a z-scored input is foreground (a fixed-seed model that predicts something, not all or nothing).
    Built here, in the test process: the module never imports torch."""
    import torch

    from DTCCore.config import DTCConfig
    from DTCCore.model import checkpoint, network

    torch.manual_seed(0)
    config = DTCConfig.from_dict({"network": {"base_filters": 2}, "train": {"patch": [16, 16, 16]}})
    model = network.DualTaskVNet(base_filters=2).eval()
    with torch.no_grad():
        seg, _ = model(torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)))
        model.out_conv.bias -= seg.median()
    path = Path(folder) / "tiny.pt"
    checkpoint.save_checkpoint(path, model, None, 0, config, {})
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny model (:func:`make_tiny_model`): base_filters=2, patch 16^3, CPU; generic label table."""
    return make_tiny_model(tmp_path_factory.mktemp("model"))
