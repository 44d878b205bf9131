"""The real DTCSegmentationWidget on the strict harness: clinician and annotator flows, clicked through.

The panel runs offscreen on PySide6 through the PythonQt layer (Testing/slicer_harness/pythonqt.py),
with Slicer's own parameterNodeWrapper at each supported tag (vendored, ``slicer_harness.wrapper_versions``):
the flows under v5.8.1 and v5.10.0 (before and after Slicer #7547's fix), leaving and re-entering the
module under all four. Every engine job is a real ``python -m DTCCore`` subprocess polled by the panel's
QTimer while the Qt event loop runs.
"""

from __future__ import annotations

import inspect
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk

from DTCCore.data.labels import LEFT_ATRIUM, write_sidecar
from slicer_harness import api_versions, pythonqt, scripted_module
from slicer_harness.fixtures import slicer_scene, tiny_model  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401

SHAPE_KJI = (18, 20, 22)
IJK_TO_RAS = np.array([[0.0, -0.9, 0.3, 12.0], [1.1, 0.0, 0.0, -30.0], [0.0, 0.35, 1.9, 7.5], [0, 0, 0, 1]])
# The long flows run under these two wrappers: connectGui returns None before v5.10.0 (Slicer #7547, PR #8667).
FLOW_TAGS = ("v5.8.1", "v5.10.0")


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
def panel(slicer_scene, dtc_module_at, tmp_path, monkeypatch):
    """The module's widget after setup(), built on ``slicer_tag``'s parameterNodeWrapper."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the panel's default folders
    parent = scripted_module.make_widget_parent()
    widget = dtc_module_at.DTCSegmentationWidget(parent)
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


def with_model_and_dataset(widget, models_folder, dataset_folder):
    """The tiny model chosen on the CPU and a new dataset folder; returns the parameter node."""
    choose_model(widget, models_folder)
    widget.ui.datasetFolderButton.directory = str(dataset_folder)
    return widget._parameterNode


def segment_array(seg_node, segment_id, volume):
    return slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, segment_id, volume).copy()


@pytest.mark.parametrize("slicer_tag", FLOW_TAGS, indirect=True)
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


@pytest.mark.parametrize("slicer_tag", FLOW_TAGS, indirect=True)
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


@pytest.mark.parametrize("slicer_tag", FLOW_TAGS, indirect=True)
def test_annotator_flow_finetune_cancel_resume_rank(panel, models_folder, tmp_path):
    w, p = panel, with_model_and_dataset(panel, models_folder, tmp_path / "dataset")
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
    p.mode = "dtc"  # the paper's recipe on 1 labeled + 1 unlabeled crop (auto would pick a mode by length)
    assert w.ui.timeLimitSpinBox.value == 10  # "Train for: 10 min" by default
    w.ui.timeLimitSpinBox.value = 0  # off: the iterations count (widget -> parameter node)
    assert p.timeLimitMinutes == 0
    w.ui.trainButton.click()
    assert w.ui.trainButton.text == "Cancel" and "train" in w._jobs, w.ui.trainStatusLabel.text
    view = w.ui.lossPlotWidget.mrmlPlotViewNode()  # defect 1: the chart is shown through a plot view node
    assert view is not None and view.GetPlotChartNodeID() == w._curve.chart.GetID()
    pump_until(lambda: w._curve.rows() >= 2 or "train" not in w._jobs, what="training progress")
    assert w._curve.rows() >= 2, w.ui.trainStatusLabel.text  # a failed start says why at once
    assert "ETA" in w.ui.trainStatusLabel.text and w.ui.trainProgressBar.maximum == 100000

    # Segment and Next-case ranking while training: each keeps its own job; training is still polled after
    w.ui.segmentButton.click()
    w.ui.rankButton.click()
    assert {"segment", "rank", "train"} <= set(w._jobs)
    # the cores are shared (DTCSegmentationLib/cores.py): the fine-tune keeps its share, the others the rest
    from DTCCore.runtime.threads import available_cores
    from DTCSegmentationLib.cores import train_threads

    cores, threads = available_cores(), {k: w._jobs[k].args for k in ("train", "segment", "rank")}
    trained = train_threads(cores)
    assert threads["train"][threads["train"].index("--threads") + 1] == str(trained)
    assert threads["segment"][threads["segment"].index("--threads") + 1] == str(max(1, cores - trained))
    assert "--threads" in threads["rank"]
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


# ---- leaving and re-entering the module (issue 25, defect 1) ----

def bound_widgets(widget) -> dict:
    """{parameter name: widget} for every widget of the panel bound to the parameter node (as connectGui finds them)."""
    return {w.property("SlicerParameterName"): w for w in widget.ui.__dict__.values()
            if w.property("SlicerParameterName")}


def widget_value(w):
    """What a bound widget shows, in the parameter's type."""
    kind = type(w).__name__
    if kind == "QComboBox":
        return w.currentText
    if kind == "QCheckBox":
        return w.checked
    if kind in ("QSpinBox", "QDoubleSpinBox"):
        return w.value
    if kind == "ctkDirectoryButton":
        return Path(w.directory)
    if kind == "qMRMLNodeComboBox":
        return w.currentNode()
    raise AssertionError(f"the test does not know how to read a {kind}")


def choose(w, value) -> None:
    """Set a bound widget as the user does (its own signal then reaches the parameter node)."""
    kind = type(w).__name__
    if kind == "QComboBox":
        w.currentIndex = [w.itemText(i) for i in range(w.count)].index(value)
    elif kind == "QCheckBox":
        w.checked = value
    elif kind in ("QSpinBox", "QDoubleSpinBox"):
        w.value = value
    elif kind == "ctkDirectoryButton":
        w.directory = str(value)
    elif kind == "qMRMLNodeComboBox":
        w.setCurrentNode(value)
    else:
        raise AssertionError(f"the test does not know how to set a {kind}")


def user_choices(tmp_path, round_):
    """A value other than the default for every bound parameter (new nodes and folders each round)."""
    make_volume(f"first {round_}")
    volume, _ = make_volume(f"chosen {round_}", seed=1)
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"ROI {round_}")
    output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"output {round_}")
    corrected = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"corrected {round_}")
    folders = {name: tmp_path / f"{name} {round_}" for name in ("models", "dataset")}
    for folder in folders.values():
        folder.mkdir()
    return {"inputVolume": volume, "inputROI": roi, "outputSegmentation": output, "segmentation": corrected,
            "modelsFolder": folders["models"], "datasetFolder": folders["dataset"],
            "device": "cpu", "quality": "best", "largestComponent": True,  # defaults: auto, balanced, False
            "startFrom": "scratch", "mode": "seg+lsf", "augment": "reference", "nnunetAugment": True,
            "timeLimitMinutes": 35, "iterations": 2500, "learningRate": 0.002, "labeledBatch": 3,
            "unlabeledBatch": 0, "patchX": 64, "patchY": 48, "patchZ": 8, "beta": 0.5, "k": 1000.0,
            "consistencyRampup": 25.0}


def enter_module(widget) -> None:
    """What Slicer does when the user opens the module: qSlicerScriptedLoadableModuleWidget::enter()
    marks it entered, then calls the Python widget's enter()."""
    widget.parent.enter()
    widget.enter()


def exit_module(widget) -> None:
    """qSlicerScriptedLoadableModuleWidget::exit(): unmarks it, then calls exit() if the Python widget has one
    (PythonCppAPI calls a method only where the class defines it)."""
    widget.parent.exit()
    if hasattr(widget, "exit"):
        widget.exit()


def assert_shown(widget, expected: dict, when: str) -> None:
    p = widget._parameterNode
    widgets = bound_widgets(widget)
    stored = {name: getattr(p, name) for name in expected}
    shown = {name: widget_value(widgets[name]) for name in expected}
    lost = {name: (value, stored[name], shown[name]) for name, value in expected.items()
            if not (stored[name] == value and shown[name] == value)}
    assert not lost, f"{when}: parameter -> (chosen, in the parameter node, in the widget): {lost}"


def test_every_choice_survives_leaving_and_entering_the_module(panel, tmp_path, slicer_tag):
    """Defect 1: before v5.10, a second connectGui on enter() reset the choice combo boxes (quality balanced ->
    fast, mode dtc -> seg: a fine-tune then ran labeled-only). Under every tag's own wrapper, every choice
    survives the first enter(), exit() + enter() (twice), and a scene close while the module is shown."""
    w = panel
    p = w._parameterNode
    defaults = {name: getattr(p, name) for name in bound_widgets(w)}
    assert (defaults["quality"], defaults["mode"]) == ("balanced", "auto")
    enter_module(w)
    assert_shown(w, defaults, f"{slicer_tag}, first enter()")

    chosen = user_choices(tmp_path, 1)
    assert set(chosen) == set(bound_widgets(w)), "every bound widget must get a choice in this test"
    for name, value in chosen.items():
        choose(bound_widgets(w)[name], value)
    assert_shown(w, chosen, f"{slicer_tag}, chosen")
    for visit in (1, 2):
        exit_module(w)
        enter_module(w)
        assert_shown(w, chosen, f"{slicer_tag}, exit() + enter() #{visit}")

    slicer.mrmlScene.Clear(0)  # File / Close scene while the module is shown: a reset parameter node, reconnected
    p = w._parameterNode
    assert (p.quality, p.mode, bound_widgets(w)["quality"].currentText) == ("balanced", "auto", "balanced")
    chosen = user_choices(tmp_path, 2)
    for name, value in chosen.items():
        choose(bound_widgets(w)[name], value)
    exit_module(w)
    enter_module(w)
    assert_shown(w, chosen, f"{slicer_tag}, after a scene close, exit() + enter()")


@pytest.mark.parametrize("slicer_tag", ("v5.6.2", "v5.12.3"), indirect=True)
def test_buttons_follow_the_selection_but_not_while_the_module_is_left(panel, dtc_module_at):
    """Slicer's template conventions: _checkCanApply on every parameter node change (a disabled button's
    tooltip says what is missing), no observation between exit() and enter(), which checks again."""
    from DTCSegmentationLib import panel as panel_module

    w, p = panel, panel._parameterNode
    segment, add = w.ui.segmentButton, w.ui.addLabeledButton
    own = {b: w._tips[b] for b in (segment, add)}
    assert p.inputVolume is None  # an empty scene
    assert (segment.enabled, segment.toolTip) == (False, panel_module.NEEDS_VOLUME)
    assert (add.enabled, add.toolTip) == (False, panel_module.NEEDS_VOLUME_AND_SEGMENTATION)
    p.inputVolume, _ = make_volume("scan")
    assert (segment.enabled, segment.toolTip) == (True, own[segment])
    assert not add.enabled
    p.segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "corrected")
    assert (add.enabled, add.toolTip) == (True, own[add])
    enter_module(w)
    exit_module(w)
    corrected, p.segmentation = p.segmentation, None
    assert add.enabled  # left: not observed
    enter_module(w)
    assert (add.enabled, add.toolTip) == (False, panel_module.NEEDS_VOLUME_AND_SEGMENTATION)
    p.segmentation = corrected
    assert add.enabled  # observed again


# ---- Next case: "Load the top-ranked volume" (issue 25) ----

def test_load_volume_has_each_supported_signature():
    """The harness's slicer.util.loadVolume is slicer-core's real one (it reads files through the harness's
    slicer.app.coreIOManager()); its signature, and loadNodeFromFile's, is the one of every supported tag."""
    def shape(signature):  # the API records keep which parameters have a default, not the value
        return [(q.name, q.kind, q.default is inspect.Parameter.empty) for q in signature.parameters.values()]

    for name in ("loadVolume", "loadNodeFromFile"):
        real = shape(inspect.signature(getattr(slicer.util, name)))
        for tag in api_versions.SUPPORTED_TAGS:
            record = api_versions.module_member(tag, "slicer.util", [name])
            assert record is not None and shape(api_versions.member_signature(record)) == real, (name, tag)


def write_nrrd(path, ijk_to_ras, seed):
    """An NRRD written by MRML's volume storage node; the node is removed again. Returns its voxels (K, J, I)."""
    kji = np.random.default_rng(seed).normal(100, 10, SHAPE_KJI).astype(np.float32)
    node = slicer.util.addVolumeFromArray(kji, ijk_to_ras, "to write")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    slicer.mrmlScene.RemoveNode(node)
    return kji


@pytest.mark.parametrize("slicer_tag", FLOW_TAGS, indirect=True)
def test_rank_then_load_the_top_ranked_volume(panel, models_folder, tmp_path):
    w, p = panel, with_model_and_dataset(panel, models_folder, tmp_path / "dataset")
    files = {}  # path -> (IJK-to-RAS, voxels)
    for seed, shift in ((3, 0.0), (4, 25.0)):
        matrix = IJK_TO_RAS.copy()
        matrix[:3, 3] += shift
        path = tmp_path / f"Case {seed}.seq.nrrd"
        files[path] = (matrix, write_nrrd(path, matrix, seed))
    w.ui.loadTopButton.click()  # nothing ranked yet: refused with a message, no node
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0
    pythonqt.FILE_DIALOG_ANSWERS.append([str(path) for path in files])
    w.ui.addUnlabeledFilesButton.click()
    assert w.ui.unlabeledList.count == 2, w.ui.datasetStatusLabel.text

    w.ui.rankButton.click()
    pump_until(lambda: "rank" not in w._jobs, what="ranking")
    assert w.ui.rankingTable.rowCount == 2, w.ui.rankStatusLabel.text
    top = Path(w._ranking[0][0])
    assert top.resolve() in {path.resolve() for path in files}
    matrix, kji = files[next(path for path in files if path.resolve() == top.resolve())]
    # The disagreement score beside each scan (3 significant digits, highest first), why each is there in the
    # tooltips, and the status names the next case with its score (issue 24).
    table = w.ui.rankingTable
    shown = [(table.item(row, 0).text(), float(table.item(row, 1).text())) for row in range(2)]
    assert shown == [(Path(path).name, float(f"{score:.3g}")) for path, score in w._ranking]
    assert shown[0][1] >= shown[1][1]
    header = table.horizontalHeaderItem(1)
    assert header.text() == "Mean disagreement" and "level-set" in header.toolTip()
    assert table.item(0, 1).toolTip() == header.toolTip() and table.item(0, 0).toolTip() == str(top)
    top_score = table.item(0, 1).text()
    assert f"Next case: {top.name}, mean disagreement {top_score} (median of the 2: " in w.ui.rankStatusLabel.text
    assert w.ui.rankStatusLabel.text.endswith(" Correct the top 2, add each as a labeled example, then fine-tune "
                                              "and rank again.")

    w.ui.loadTopButton.click()
    loaded = w.ui.rankStatusLabel.text
    assert loaded.startswith(f"Loaded {top.name}: mean disagreement {top_score}, the highest of the 2"), loaded
    node = p.inputVolume
    assert node is not None and node.GetScene() is slicer.mrmlScene
    assert w.ui.inputVolumeSelector.currentNode() is node
    assert node.GetName() == top.name.split(".")[0]  # Slicer names it by the file's base name
    assert Path(node.GetStorageNode().GetFileName()).resolve() == top.resolve()
    assert np.allclose(slicer.util.arrayFromVTKMatrix(_m(node)), matrix, atol=1e-6)
    assert np.array_equal(slicer.util.arrayFromVolume(node), kji)

    # Corrected and added as labeled: the scan leaves the unlabeled list and the ranking, the next one moves up
    corrected = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "corrected")
    corrected.SetReferenceImageGeometryParameterFromVolumeNode(node)
    sid = corrected.GetSegmentation().AddEmptySegment("", "Left atrium", [0.9, 0.1, 0.1])
    mask = np.zeros(SHAPE_KJI, np.uint8)
    mask[5:13, 6:14, 7:16] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, corrected, sid, node)
    w.ui.segmentationSelector.setCurrentNode(corrected)
    second = w._ranking[1]
    w.ui.addLabeledButton.click()
    assert w.ui.labeledTable.rowCount == 1 and w.ui.unlabeledList.count == 1, w.ui.datasetStatusLabel.text
    assert w._ranking == [second] and w.ui.rankingTable.rowCount == 1
    assert w.ui.rankingTable.item(0, 0).text() == Path(second[0]).name
    assert w.ui.rankStatusLabel.text == (f"1 ranked scan labeled since the ranking. Next case: {Path(second[0]).name}, "
                                         f"mean disagreement {float(second[1]):.3g}.")
    manifest = json.loads((Path(p.datasetFolder) / "manifest.json").read_text())
    assert [Path(u).resolve() for u in manifest["unlabeled"]] == [Path(second[0]).resolve()]
    assert top.is_file()  # the annotator's file outside the dataset is left alone
    w.ui.loadTopButton.click()
    assert Path(p.inputVolume.GetStorageNode().GetFileName()).resolve() == Path(second[0]).resolve()

