"""Installing PyTorch from the panel never freezes Slicer: a polled job with its output, progress and Cancel.

The real widget on the strict harness; the installer is a stand-in ``light_the_torch`` module (on the
child's PYTHONPATH only) that prints what pip prints and waits, or fails as pip fails without network.
Torch counts as missing through ``torch_too_old`` (the same path as a first install).
"""

from __future__ import annotations

import importlib
import time

import slicer

from slicer_harness.fixtures import slicer_scene, tiny_model  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401
from test_slicer_widget import make_volume, panel, pump_until  # noqa: F401

DOWNLOAD_LINE = "Downloading torch-2.5.1-cp39-cp39-manylinux1_x86_64.whl (906.4 MB)"
INSTALLER_WAIT_S = 15  # the stand-in's download: a blocking install holds the click this long
# pip 24 without network (no DNS), as printed to stderr
OFFLINE_OUTPUT = (
    "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection "
    "broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f3a>: Failed to "
    "establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/torch/\n"
    "ERROR: Could not find a version that satisfies the requirement torch<3,>=2.2 (from versions: none)\n"
    "ERROR: No matching distribution found for torch<3,>=2.2")


def _installer(tmp_path, monkeypatch, body: str) -> None:
    dependencies = importlib.import_module("DTCSegmentationLib.dependencies")  # the panel's, under its tag
    package = tmp_path / "installer" / dependencies.TORCH_INSTALLER_MODULE
    package.mkdir(parents=True)
    (package / "__main__.py").write_text("import sys, time\n" + body)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "installer"))
    monkeypatch.setattr(dependencies, "torch_too_old", lambda: True)  # torch "missing": an install is offered
    monkeypatch.setattr(dependencies, "_pip", lambda requirements: None)  # light-the-torch "installed"
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True)


def _click_segment(w) -> float:
    start = time.monotonic()
    w.ui.segmentButton.click()
    return time.monotonic() - start


def test_the_install_is_polled_with_its_output_and_cancel_stops_it(panel, tmp_path, monkeypatch):
    _installer(tmp_path, monkeypatch,
               "print('Collecting torch<3,>=2.2', flush=True)\n"
               f"print({DOWNLOAD_LINE!r}, flush=True)\n"
               f"time.sleep({INSTALLER_WAIT_S})\n")
    w = panel
    volume, _ = make_volume("Patient 7")
    w._parameterNode.inputVolume = volume
    held = _click_segment(w)
    assert held < 5.0, f"the click held the GUI {held:.1f} s while PyTorch installed"
    assert w.ui.segmentButton.text == "Cancel" and "install" in w._jobs and "segment" not in w._jobs
    pump_until(lambda: DOWNLOAD_LINE in w.ui.segmentStatusLabel.text, timeout=10, what="the installer's output")
    assert w.ui.segmentStatusLabel.text.startswith("Installing PyTorch (")
    # pip's phases: Collecting, Downloading, Installing collected packages, Successfully installed
    assert (w.ui.segmentProgressBar.value, w.ui.segmentProgressBar.maximum) == (2, 4)
    process = w._jobs["install"].runner.process
    start = time.monotonic()
    w.ui.segmentButton.click()  # Cancel
    pump_until(lambda: "install" not in w._jobs, timeout=10, what="the cancelled install's end")
    assert time.monotonic() - start < 10 and process.poll() is not None
    assert w.ui.segmentStatusLabel.text.startswith("PyTorch installation cancelled"), w.ui.segmentStatusLabel.text
    assert w.ui.segmentButton.text == "Segment" and not slicer.mrmlScene.GetNodesByClass(
        "vtkMRMLSegmentationNode").GetNumberOfItems()


def test_no_network_on_first_use_says_what_to_do(panel, tmp_path, monkeypatch):
    _installer(tmp_path, monkeypatch, f"print({OFFLINE_OUTPUT!r}, file=sys.stderr)\nsys.exit(1)\n")
    shown = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: shown.append(text))
    w = panel
    volume, _ = make_volume("Patient 7")
    w._parameterNode.inputVolume = volume
    _click_segment(w)
    pump_until(lambda: "install" not in w._jobs, timeout=30, what="the failed install's end")
    text = " ".join(shown) + " " + w.ui.segmentStatusLabel.text
    assert "cannot reach the Python package index" in text, text
    assert "Temporary failure in name resolution" in text  # what pip saw
    assert "HTTPS_PROXY" in text and "PyTorch extension" in text and "pip install <torch wheel file>" in text
    assert "click 'Segment' again" in text
    assert w.ui.segmentButton.text == "Segment" and "segment" not in w._jobs
