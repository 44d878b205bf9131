"""Issue 25 through the logic and the panel: jobs share the cores, and a whole-field scan is flagged.

Job command lines carry ``--threads`` (the panel's split, DTCSegmentationLib/cores.py); the bundled
sample padded to 3x its size along x makes ``dtc segment`` warn, the logic keep the warning on the job,
and the panel say it in the Segment status with its "Add ROI box" button.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from conftest import SAMPLE_IMAGE
from slicer_harness.fixtures import dtc_module, slicer_scene, tiny_model  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401
from test_slicer_training import _add_labeled_example
from test_slicer_widget import choose_model, make_volume, models_folder, panel, pump_until  # noqa: F401

# isort: split
from DTCSegmentationLib import cores, roihint, sceneio  # noqa: E402  (on sys.path once the fixtures are imported)
from DTCSegmentationLib.jobs.infojob import ModelInfoJob
from DTCSegmentationLib.jobs.rankjob import RankJob
from DTCSegmentationLib.jobs.segmentjob import SegmentJob  # noqa: E402

SAMPLE_SPACING = 0.625  # mm, the bundled LA sample (DTCCore/sample/README.md)


def threads_of(args: list) -> str | None:
    return args[args.index("--threads") + 1] if "--threads" in args else None


def test_the_split_of_the_cores():
    train = SimpleNamespace(threads=cores.train_threads(16))
    assert (cores.train_threads(16), cores.job_threads("segment", {"train": train}, 16)) == (12, 4)
    assert (cores.train_threads(2), cores.job_threads("segment", {"train": SimpleNamespace(threads=1)}, 2)) == (1, 1)
    assert cores.train_threads(1) == 1
    assert cores.job_threads("segment", {}, 16) is None  # alone: every core (the engine's default)
    assert cores.job_threads("rank", {"segment": SimpleNamespace(threads=None)}, 8) == 1  # at least one
    assert cores.job_threads("train", {"segment": SimpleNamespace(threads=None)}, 8) == 6  # always its share


def test_job_command_lines_carry_their_threads(slicer_scene, dtc_module, tiny_model, tmp_path, monkeypatch):
    for job_class in (SegmentJob, RankJob, ModelInfoJob):
        monkeypatch.setattr(job_class, "start", lambda self: None)  # the command line is what is checked here
    logic = dtc_module.DTCSegmentationLogic()
    volume, _ = make_volume("scan")
    assert threads_of(logic.startSegment(volume, threads=3).args) == "3"
    assert threads_of(logic.startSegment(volume).args) is None
    p = logic.getParameterNode()
    p.datasetFolder, p.modelsFolder, p.startFrom = tmp_path / "ds", tmp_path / "models", "scratch"
    p.patchX = p.patchY = p.patchZ = 16
    _add_labeled_example(slicer_scene, logic, p.datasetFolder)
    logic.addUnlabeledVolumes(p.datasetFolder, [volume])
    assert threads_of(logic.startRanking(p.datasetFolder, str(tiny_model), threads=2).args) == "2"
    request = logic.trainingRequest(p, threads=5)
    assert threads_of(request.args()) == "5" and threads_of(logic.trainingRequest(p).args()) is None
    assert threads_of(logic.startModelInfo([tiny_model], threads=1).command()) == "1"


def padded_sample_node(factor: int):
    """The bundled sample as a volume node, in the middle of a scan ``factor`` times as wide along x."""
    kji = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE_IMAGE)))
    x = kji.shape[2]
    padded = np.zeros(kji.shape[:2] + (factor * x,), np.float32)
    padded[:, :, (factor - 1) // 2 * x:(factor + 1) // 2 * x] = kji
    ijk_to_ras = np.diag([-SAMPLE_SPACING, -SAMPLE_SPACING, SAMPLE_SPACING, 1.0])  # LPS file -> RAS node
    return slicer.util.addVolumeFromArray(padded, ijk_to_ras, f"sample x{factor}")


def test_logic_segment_of_a_padded_scan_warns_and_the_roi_box_fixes_it(slicer_scene, dtc_module):
    logic = dtc_module.DTCSegmentationLogic()
    padded = padded_sample_node(3)
    job = logic.startSegment(padded, quality="fast", threads=1)  # the bundled model, whose card has the extent
    job.wait(600)
    assert job.state == "done", job.error
    assert job.extent is not None and job.extent["model_mm"] == [152.5, 100.0, 55.0]
    text = roihint.note(job)
    assert text.startswith(" Note: This scan (") and "along x" in text and "Add ROI box" in text

    roi = roihint.add_roi_box(padded, job.extent["model_mm"])
    region = sceneio.roi_to_slices(roi, padded)
    sizes = [s.stop - s.start for s in region]
    dims = padded.GetImageData().GetDimensions()
    assert abs(sizes[0] - 152.5 / SAMPLE_SPACING) <= 1 and sizes[1:] == list(dims[1:])  # cut to the scan in y, z
    assert abs((region[0].start + region[0].stop) / 2 - dims[0] / 2) <= 1  # at the scan's centre
    boxed = logic.startSegment(padded, roi=roi, quality="fast", threads=1)
    boxed.wait(600)
    assert boxed.state == "done" and boxed.extent is None and roihint.note(boxed) == ""

    plain = logic.startSegment(padded_sample_node(1), quality="fast", threads=1)
    plain.wait(600)
    assert plain.state == "done" and plain.extent is None


# The oldest supported tag (the widget flows in test_slicer_widget.py run v5.8.1 and v5.10.0, the mode line's
# tests v5.12.3): each tag costs 13 s of the CI's 15 minutes; the API each tag has is checked by
# test_slicer_api_versions.py.
@pytest.mark.parametrize("slicer_tag", ["v5.6.2"], indirect=True)
def test_panel_says_so_in_the_segment_status_and_offers_the_box(panel, models_folder):
    w = panel
    # the tiny model's card says it was trained on scans of at most 10 x 19 x 34 mm; the scan is 24 x 19 x 35
    (models_folder / "tiny" / "model.json").write_text(json.dumps({"training_extent_mm": [10.0, 19.0, 34.0]}))
    choose_model(w, models_folder)
    volume, _ = make_volume("Whole field")
    w.ui.inputVolumeSelector.setCurrentNode(volume)
    assert w.ui.roiButton.isHidden()
    w.ui.segmentButton.click()
    pump_until(lambda: "segment" not in w._jobs, what="Segment")
    status = w.ui.segmentStatusLabel.text
    assert status.startswith("Done in") and "Note: This scan" in status and "along x (2.4x)" in status, status
    assert not w.ui.roiButton.isHidden()

    w.ui.roiButton.click()
    roi = w._parameterNode.inputROI
    assert roi is not None and roi.IsA("vtkMRMLMarkupsROINode") and w.ui.roiSelector.currentNode() is roi
    assert w.ui.roiButton.isHidden() and "ROI box added" in w.ui.segmentStatusLabel.text
    w.ui.segmentButton.click()  # inside the box: no warning
    pump_until(lambda: "segment" not in w._jobs, what="Segment in the box")
    assert w.ui.segmentStatusLabel.text.startswith("Done in") and "Note" not in w.ui.segmentStatusLabel.text
    assert w.ui.roiButton.isHidden()
