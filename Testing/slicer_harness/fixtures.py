"""pytest fixtures of the harness; import them into a test module (``from slicer_harness.fixtures import *``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sys

from .scene import import_module_file, install, new_scene

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "DTCSegmentation" / "DTCSegmentation.py"

# As in Slicer: the module's folder is on sys.path (DTCSegmentationLib imports), and so is DTCCore's.
install()
for _folder in (str(MODULE_FILE.parent), str(REPO)):
    if _folder not in sys.path:
        sys.path.append(_folder)


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, dtc_module) -> Path:
    """The self-test's tiny model (DTCSegmentationTest.makeTinyModel): base_filters=2, patch 16^3, CPU."""
    return dtc_module.DTCSegmentationTest.makeTinyModel(tmp_path_factory.mktemp("model"))
