"""The panel's Mode: auto by default; the line under it says which mode the next fine-tune trains and why, follows
Train for / Iterations, the dataset's labeled and unlabeled scans, the model's classes and dims (a fine-tune's
model's, read by ``dtc info``; from scratch the dataset's label table and the network planned from the scans) and
the mode chosen, and the request trains that mode (issue 38 item 4). The rule itself is
DTCCore.training.mode_choice's (Testing/test_mode_choice.py)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import slicer

from DTCCore.data.labels import generic_table
from DTCCore.training import mode_choice
from DTCCore.training.mode_choice import BudgetRule, pick_mode
from slicer_harness import pythonqt
from slicer_harness.fixtures import slicer_scene, tiny_model  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401
from test_slicer_widget import IJK_TO_RAS, make_volume, panel, pump_until  # noqa: F401

# The line is the module's own logic; every tag's wrapper binding of Mode (auto among its choices) is
# test_slicer_widget.py's test_every_choice_survives_leaving_and_entering_the_module.
ONE_TAG = pytest.mark.parametrize("slicer_tag", ["v5.12.3"], indirect=True)
# A rule set where the length and the unlabeled scans both change the pick (the shipped rules may not yet).
RULES = (BudgetRule(30.0, "seg", "evidence short"), BudgetRule(None, "copy-paste-teacher", "evidence long"))
# The teacher for binary 3-D networks only, at any length; labeled-only for every other model.
SCOPED = (BudgetRule(None, "copy-paste-teacher", "evidence binary 3-D", classes=1, dims=3),
          BudgetRule(None, "seg", "evidence other"))
THICK = np.diag([1.0, 1.0, 5.0, 1.0])  # slices 5x farther apart than the pixels: a new network is 2-D


def _shown(widget) -> str:
    pythonqt.process_events(0.05)
    return widget.ui.modeChoiceLabel.text


def _add_cases(widget, tmp_path, unlabeled: int, ijk_to_ras=None, name: str = "labeled") -> None:
    logic, p = widget.logic, widget._parameterNode
    volume, mask = make_volume(name, seed=0)
    if ijk_to_ras is not None:  # the same voxels on another grid
        volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    sid = seg.GetSegmentation().AddEmptySegment("", "Left atrium", [1, 0, 0])
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, volume)
    logic.addLabeledExample(p.datasetFolder, volume, seg)
    others = [make_volume(f"u{i}", seed=i + 1)[0] for i in range(unlabeled)]
    for other in others if ijk_to_ras is not None else ():
        other.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    logic.addUnlabeledVolumes(p.datasetFolder, others)
    widget.refreshDataset()  # what the panel's Add buttons do after writing


def _scoped_run(panel, tmp_path, start_from: str):
    """The panel set for a 120-minute run from ``start_from`` (a 16-voxel patch from scratch): (widget, parameters)."""
    p = panel._parameterNode
    p.datasetFolder, p.modelsFolder, p.startFrom = tmp_path / "ds", tmp_path / "models", start_from
    if start_from == "scratch":
        p.patchX = p.patchY = p.patchZ = 16
    p.timeLimitMinutes = 120
    return panel, p


@ONE_TAG
def test_the_line_under_mode_follows_the_length_the_dataset_and_the_choice(panel, tmp_path, monkeypatch):
    monkeypatch.setattr(mode_choice, "RULES", RULES)
    w = panel
    p = w._parameterNode
    assert p.mode == "auto"
    p.datasetFolder, p.timeLimitMinutes, p.startFrom = tmp_path / "ds", 10, "scratch"
    unknown = {"classes": None, "dims": None}  # no dataset yet: no label table, no scans, no unlabeled scans
    assert _shown(w) == "auto: " + pick_mode(10, 0, **unknown, rules=RULES)[1]
    p.timeLimitMinutes = 45
    assert _shown(w) == "auto: " + pick_mode(45, 0, **unknown, rules=RULES)[1]
    _add_cases(w, tmp_path, unlabeled=2)  # the line follows the dataset too (its table: one class)
    assert _shown(w) == "auto: copy-paste teacher for a 45-minute run of a binary network: evidence long"
    p.timeLimitMinutes = 0  # off: the iterations at the measured step cost
    p.iterations = 600
    assert _shown(w) == "auto: " + pick_mode(600 * mode_choice.STEP_SECONDS / 60, 2, classes=1, dims=None,
                                             rules=RULES)[1]  # the dims change no pick here: not planned
    p.mode = "dtc"
    assert _shown(w) == ""  # the user's own choice needs no reason


@ONE_TAG
@pytest.mark.parametrize(("minutes", "mode"), [(10, "seg"), (120, "copy-paste-teacher")])
def test_the_fine_tune_request_trains_the_picked_mode_and_says_why(panel, tmp_path, monkeypatch, minutes, mode):
    monkeypatch.setattr(mode_choice, "RULES", RULES)
    w = panel
    p = w._parameterNode
    p.datasetFolder, p.modelsFolder, p.startFrom = tmp_path / "ds", tmp_path / "models", "scratch"
    p.patchX = p.patchY = p.patchZ = 16
    p.timeLimitMinutes = minutes
    _add_cases(w, tmp_path, unlabeled=1)
    assert _shown(w) == "auto: " + pick_mode(minutes, 1, classes=1, dims=None, rules=RULES)[1]
    assert w.logic.trainingRequest(p).config["recipe"]["mode"] == mode
    p.mode = "seg+lsf"  # a chosen mode is trained as chosen
    assert w.logic.trainingRequest(p).config["recipe"]["mode"] == "seg+lsf"
    resumed = w.logic.trainingRequest(p, tmp_path / "models" / "some run")
    assert "mode" not in resumed.config["recipe"]  # a resume keeps its run's own mode


@ONE_TAG
def test_the_pick_counts_the_datasets_labeled_examples(panel, tmp_path, monkeypatch):
    """A rule for at most one labeled scan holds for the first labeled example and no longer for the second; the
    line says the count, and the request trains the mode the line shows."""
    rules = (BudgetRule(None, "copy-paste-teacher", "evidence few", classes=1, max_labeled=1), SCOPED[-1])
    monkeypatch.setattr(mode_choice, "RULES", rules)
    w, p = _scoped_run(panel, tmp_path, "scratch")
    _add_cases(w, tmp_path, unlabeled=1)
    assert _shown(w) == ("auto: copy-paste teacher for a 120-minute run of a binary network on 1 labeled scan: "
                         "evidence few")
    assert w.logic.trainingRequest(p).config["recipe"]["mode"] == "copy-paste-teacher"
    _add_cases(w, tmp_path, unlabeled=0, name="labeled 2")  # a second labeled example
    assert _shown(w) == "auto: labeled-only for a 120-minute run of a binary network: evidence other"
    assert w.logic.trainingRequest(p).config["recipe"]["mode"] == "seg"


def _set_table(widget, classes: int) -> None:
    """The dataset's label table with ``classes`` classes (as a dataset of ``classes``-class examples has)."""
    path = widget._parameterNode.datasetFolder / "labels.json"
    path.write_text(json.dumps({"labels": generic_table(classes)}), encoding="utf-8")
    widget._checkCanApply()  # what any change of the panel's settings does


@ONE_TAG
def test_from_scratch_the_pick_follows_the_datasets_classes_and_the_planned_dims(panel, tmp_path, monkeypatch):
    monkeypatch.setattr(mode_choice, "RULES", SCOPED)
    logic_module = sys.modules[type(panel.logic).__module__]
    plans = []  # the scans' headers are read (the network planned) only where the pick depends on the dims
    monkeypatch.setattr(logic_module, "manifest_geometry",
                        lambda path, read=logic_module.manifest_geometry: plans.append(path) or read(path))
    w, p = _scoped_run(panel, tmp_path, "scratch")
    assert _shown(w) == "auto: " + pick_mode(120, 0, classes=None, dims=None, rules=SCOPED)[1]  # nothing known
    _add_cases(w, tmp_path, unlabeled=1)  # one class, scans about 1 x 1 x 1.9 mm: a 3-D network
    assert _shown(w) == "auto: copy-paste teacher for a 120-minute run of a binary 3-D network: evidence binary 3-D"
    read = len(plans)
    assert read >= 1
    for minutes in (150, 200, 120):  # each change recomputes the line; the headers are read once per dataset
        p.timeLimitMinutes = minutes
        assert "binary 3-D network" in _shown(w)
    assert len(plans) == read
    w.logic.addUnlabeledVolumes(p.datasetFolder, [make_volume("another", seed=9)[0]])  # the manifest changed:
    w.refreshDataset()  # the scans are read again
    assert "binary 3-D network" in _shown(w)
    assert len(plans) == read + 1
    request = w.logic.trainingRequest(p)
    assert (request.config["network"]["dims"], request.config["network"]["num_classes"]) == (3, 1)
    assert request.config["recipe"]["mode"] == "copy-paste-teacher"
    plans.clear()
    _set_table(w, 3)
    assert _shown(w) == "auto: labeled-only for a 120-minute run of a 3-class network: evidence other"
    assert not plans  # a 3-class network gets labeled-only whatever its dims: the scans are not read for them
    request = w.logic.trainingRequest(p)
    assert (request.config["network"]["num_classes"], request.config["recipe"]["mode"]) == (3, "seg")


@ONE_TAG
def test_from_scratch_thick_slice_scans_plan_a_2d_network_and_its_pick(panel, tmp_path, monkeypatch):
    monkeypatch.setattr(mode_choice, "RULES", SCOPED)
    w, p = _scoped_run(panel, tmp_path, "scratch")
    _add_cases(w, tmp_path, unlabeled=1, ijk_to_ras=THICK)
    assert _shown(w) == "auto: labeled-only for a 120-minute run of a binary 2-D network: evidence other"
    request = w.logic.trainingRequest(p)
    assert (request.config["network"]["dims"], request.config["network"]["num_classes"]) == (2, 1)
    assert request.config["recipe"]["mode"] == "seg"


@ONE_TAG
def test_a_fine_tune_picks_for_its_models_classes_and_dims_once_read(panel, tmp_path, monkeypatch):
    monkeypatch.setattr(mode_choice, "RULES", SCOPED)
    w, p = _scoped_run(panel, tmp_path, "current model")
    _add_cases(w, tmp_path, unlabeled=1)
    pump_until(lambda: "info" not in w._jobs, what="dtc info of the bundled model")  # started by setup()
    key = str(w.logic.modelFile(p.modelPath))
    info = w._modelInfo[key]
    network = info["config"]["network"]
    assert (network["num_classes"], network["dims"]) == (1, 3)  # the bundled left-atrium model: binary, 3-D
    teacher = "auto: copy-paste teacher for a 120-minute run of a binary 3-D network: evidence binary 3-D"
    assert _shown(w) == teacher
    assert w.logic.trainingRequest(p, initInfo=info).config["recipe"]["mode"] == "copy-paste-teacher"
    del w._modelInfo[key]  # not read yet: as for any model
    w._checkCanApply()
    assert _shown(w) == "auto: labeled-only for a 120-minute run: evidence other"
    w._modelInfo[key] = info  # read: the line follows at once (the info job's end selects the model again)
    w.onModelSelected()
    assert _shown(w) == teacher
    for classes, dims in ((3, 3), (1, 2)):  # the same run on a model of another kind
        other = json.loads(json.dumps(info))
        other["config"]["network"].update({"num_classes": classes, "dims": dims})
        w._modelInfo[key] = other
        w.onModelSelected()
        kind = "binary" if classes == 1 else f"{classes}-class"
        assert _shown(w) == f"auto: labeled-only for a 120-minute run of a {kind} {dims}-D network: evidence other"
        assert w.logic.trainingRequest(p, initInfo=other).config["recipe"]["mode"] == "seg"
