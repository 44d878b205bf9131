"""The real DTCSegmentationWidget on the strict harness: clinician and annotator flows, clicked through.

The panel runs offscreen on PySide6 through the PythonQt layer (Testing/slicer_harness/pythonqt.py),
with Slicer v5.8.1's own parameterNodeWrapper; every engine job is a real ``python -m DTCCore``
subprocess polled by the panel's QTimer while the Qt event loop runs.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import slicer
import vtk

from DTCCore.labels import LEFT_ATRIUM, write_sidecar
from slicer_harness import pythonqt, scripted_module
from slicer_harness.fixtures import dtc_module, slicer_scene, tiny_model  # noqa: F401

SHAPE_KJI = (18, 20, 22)
IJK_TO_RAS = np.array([[0.0, -0.9, 0.3, 12.0], [1.1, 0.0, 0.0, -30.0], [0.0, 0.35, 1.9, 7.5], [0, 0, 0, 1]])


def make_volume(name, seed=0):
    rng = np.random.default_rng(seed)
    kji = rng.normal(100, 10, SHAPE_KJI).astype(np.float32)
    mask = np.zeros(SHAPE_KJI, np.uint8)
    mask[5:13, 6:14, 7:16] = 1
    return slicer.util.addVolumeFromArray(kji + 60 * mask, IJK_TO_RAS, name), mask


def pump_until(predicate, timeout=180.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pythonqt.process_events(0.05)
        if predicate():
            return
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def models_folder(tmp_path, tiny_model):
    """A models folder holding the tiny model as a trained model, with the LA label table."""
    folder = tmp_path / "models"
    (folder / "tiny").mkdir(parents=True)
    shutil.copyfile(tiny_model, folder / "tiny" / "model.pt")
    write_sidecar(folder / "tiny" / "model.pt", [LEFT_ATRIUM])
    return folder


@pytest.fixture
def panel(slicer_scene, dtc_module, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the panel's default folders
    parent = scripted_module.make_widget_parent()
    widget = dtc_module.DTCSegmentationWidget(parent)
    widget.setup()
    yield widget
    widget.cleanup()
    for job in list(widget._jobs.values()):
        job.runner.wait(60)


def choose_model(widget, models_folder, name="tiny"):
    widget.ui.modelsFolderButton.directory = str(models_folder)  # the slot lists the new folder (defect 6)
    pump_until(lambda: "info" not in widget._jobs, what="dtc info")
    combo = widget.ui.modelComboBox
    labels = [combo.itemText(i) for i in range(combo.count)]
    combo.currentIndex = labels.index(name)
    widget.ui.deviceComboBox.currentIndex = 2  # "cpu"
    pump_until(lambda: "info" not in widget._jobs, what="device check")


def segment_array(seg_node, segment_id, volume):
    return slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, segment_id, volume).copy()


def test_clinician_flow_segment_never_overwrites_edits(panel, models_folder):
    w = panel
    choose_model(w, models_folder)
    p = w._parameterNode
    assert p.modelPath == str(models_folder / "tiny" / "model.pt") and p.device == "cpu"
    info = w.ui.modelInfoLabel.text
    assert "classes: Left atrium" in info and "patch 16x16x16" in info, info
    assert w.ui.deviceInfoLabel.text.startswith("Device: CPU"), w.ui.deviceInfoLabel.text
    volume, _ = make_volume("Patient 7")
    w.ui.inputVolumeSelector.setCurrentNode(volume)
    assert p.inputVolume is volume

    w.ui.segmentButton.click()
    assert w.ui.segmentButton.text == "Cancel" and "segment" in w._jobs
    pump_until(lambda: "segment" not in w._jobs, what="Segment")
    assert w.ui.segmentButton.text == "Segment"
    assert w.ui.segmentStatusLabel.text.startswith("Done in"), w.ui.segmentStatusLabel.text
    assert w.ui.segmentProgressBar.value == w.ui.segmentProgressBar.maximum > 0
    first = p.segmentation
    assert first.GetName() == "Patient 7 DTC"
    segmentation = first.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment_id = segmentation.GetNthSegmentID(0)
    segment = segmentation.GetSegment(segment_id)
    entry = vtk.reference("")
    assert segment.GetName() == "Left atrium"
    assert segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
    assert "DICOM master list~SCT^123037004^Anatomical Structure~SCT^82471001^Left atrium" in str(entry)
    levelset = slicer.mrmlScene.GetFirstNodeByName("Patient 7 DTC level set")
    assert slicer.util.arrayFromVolume(levelset).shape == SHAPE_KJI
    assert np.allclose(slicer.util.arrayFromVTKMatrix(_m(levelset)), IJK_TO_RAS)

    # the annotator corrects the result; Segment again writes a NEW node and leaves the edit alone
    edited = segment_array(first, segment_id, volume)
    edited[0:3, 0:3, 0:3] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, first, segment_id, volume)
    w.ui.segmentButton.click()
    pump_until(lambda: "segment" not in w._jobs, what="second Segment")
    second = p.segmentation
    assert second is not first and second.GetName() == "Patient 7 DTC_1"
    assert np.array_equal(segment_array(first, segment_id, volume), edited)

    # writing into a chosen output asks first; declining starts nothing
    w.ui.outputSegmentationSelector.setCurrentNode(first)
    assert p.outputSegmentation is first
    asked = []
    original = slicer.util.confirmOkCancelDisplay
    slicer.util.confirmOkCancelDisplay = lambda text, *a, **k: asked.append(text) or False
    try:
        w.ui.segmentButton.click()
    finally:
        slicer.util.confirmOkCancelDisplay = original
    assert asked and "Patient 7 DTC" in asked[0] and "segment" not in w._jobs
    assert np.array_equal(segment_array(first, segment_id, volume), edited)


def _m(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def test_new_folder_shows_its_table_and_device_label_follows(panel, tmp_path):
    """Defect 6: the widget's slots run after the parameter node has the new value."""
    w = panel
    folder = tmp_path / "other_dataset"
    (folder / "images").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(
        {"labeled": [{"image": "images/a.nrrd", "label": "labels/a.nrrd"},
                     {"image": "images/b.nrrd", "label": "labels/b.nrrd"}],
         "unlabeled": ["images/c.nrrd"]}))
    w.ui.datasetFolderButton.directory = str(folder)
    assert w._parameterNode.datasetFolder == folder
    assert w.ui.labeledTable.rowCount == 2 and w.ui.unlabeledList.count == 1
    w.ui.deviceComboBox.currentIndex = 2
    assert w.ui.deviceInfoLabel.text == "Device: cpu (checking...)"


def test_annotator_flow_finetune_cancel_resume_rank(panel, models_folder, tmp_path):
    w = panel
    choose_model(w, models_folder)
    p = w._parameterNode
    w.ui.datasetFolderButton.directory = str(tmp_path / "dataset")
    volume, mask = make_volume("Case A")
    corrected = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Case A corrected")
    corrected.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    sid = corrected.GetSegmentation().AddEmptySegment("", "Left atrium", [0.9, 0.1, 0.1])
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, corrected, sid, volume)
    w.ui.inputVolumeSelector.setCurrentNode(volume)
    w.ui.segmentationSelector.setCurrentNode(corrected)
    w.ui.addLabeledButton.click()
    assert w.ui.labeledTable.rowCount == 1, w.ui.datasetStatusLabel.text
    other, _ = make_volume("Case B", seed=1)
    w.ui.unlabeledVolumesSelector.check(other)
    w.ui.addUnlabeledButton.click()
    assert w.ui.unlabeledList.count == 1, w.ui.datasetStatusLabel.text

    combo = w.ui.augmentComboBox  # items from the parameter node's choices, as in Slicer
    assert [combo.itemText(i) for i in range(combo.count)] == ["model's own", "mirror", "no-mirror", "reference",
                                                               "none"]
    combo.currentIndex = 2
    w.ui.nnunetAugmentCheckBox.checked = True
    assert (p.augment, p.nnunetAugment) == ("no-mirror", True)
    p.augment, p.nnunetAugment = "model's own", False
    p.patchZ = 4  # a thick-slice network's patch depth: the spin box takes it (range from the parameter node)
    assert w.ui.patchZSpinBox.value == 4 and w.ui.patchXSpinBox.minimum == 16
    p.patchX = p.patchY = p.patchZ = 16  # parameter node -> widgets through connectGui
    assert w.ui.patchXSpinBox.value == 16
    p.labeledBatch, p.unlabeledBatch, p.iterations = 1, 1, 100000
    assert w.ui.timeLimitSpinBox.value == 20  # "Train for: 20 min" by default
    w.ui.timeLimitSpinBox.value = 0  # off: the iterations count (widget -> parameter node)
    assert p.timeLimitMinutes == 0
    w.ui.trainButton.click()
    assert w.ui.trainButton.text == "Cancel" and "train" in w._jobs, w.ui.trainStatusLabel.text
    view = w.ui.lossPlotWidget.mrmlPlotViewNode()  # defect 1: the chart is shown through a plot view node
    assert view is not None and view.GetPlotChartNodeID() == w._curve.chart.GetID()
    pump_until(lambda: w._curve.rows() >= 2, what="training progress")
    assert "ETA" in w.ui.trainStatusLabel.text and w.ui.trainProgressBar.maximum == 100000

    # Segment and Next-case ranking while training: each keeps its own job; training is still polled after
    w.ui.segmentButton.click()
    w.ui.rankButton.click()
    assert {"segment", "rank", "train"} <= set(w._jobs)
    pump_until(lambda: "segment" not in w._jobs and "rank" not in w._jobs, what="Segment and ranking")
    assert w.ui.segmentStatusLabel.text.startswith("Done in") and w.ui.rankingTable.rowCount == 1
    assert w.ui.rankStatusLabel.text.startswith("Ranked 1 volumes")
    rows = w._curve.rows()
    pump_until(lambda: w._curve.rows() > rows, what="training progress after the other jobs ended")  # defect 5

    w.ui.trainButton.click()  # Cancel: the trainer saves a checkpoint
    pump_until(lambda: "train" not in w._jobs, what="cancel")
    assert w.ui.trainStatusLabel.text.startswith("Cancelled; checkpoint kept"), w.ui.trainStatusLabel.text
    assert w.ui.resumeButton.enabled and w.ui.trainButton.text == "Start fine-tuning"
    run_dir = w._lastCancelledRun
    checkpoints = sorted((run_dir / "checkpoints").glob("iter_*.pt"))
    assert checkpoints, "Cancel must leave a checkpoint"
    stopped = int(checkpoints[-1].stem.split("_")[1])

    p.iterations = stopped + 2
    w.ui.resumeButton.click()
    pump_until(lambda: "train" not in w._jobs, what="resumed training")
    model = run_dir / "model.pt"
    assert w.ui.trainStatusLabel.text.startswith("Done: new model"), w.ui.trainStatusLabel.text
    assert model.exists() and p.modelPath == str(model)
    combo = w.ui.modelComboBox
    assert combo.itemText(combo.currentIndex) == run_dir.name
    pump_until(lambda: "info" not in w._jobs, what="model info")
    assert "classes: Left atrium" in w.ui.modelInfoLabel.text  # names from the training segmentation
