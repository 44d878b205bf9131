"""The panel's Mode: auto by default; the line under it says which mode the next fine-tune trains and why, follows
Train for / Iterations, the dataset's unlabeled scans and the mode chosen, and the request trains that mode
(issue 38 item 4). The rule itself is DTCCore.training.mode_choice's (Testing/test_mode_choice.py)."""

from __future__ import annotations

import pytest
import slicer

from DTCCore.training import mode_choice
from DTCCore.training.mode_choice import BudgetRule, pick_mode
from slicer_harness import pythonqt
from slicer_harness.fixtures import slicer_scene, tiny_model  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401
from test_slicer_widget import make_volume, panel  # noqa: F401

# The line is the module's own logic; every tag's wrapper binding of Mode (auto among its choices) is
# test_slicer_widget.py's test_every_choice_survives_leaving_and_entering_the_module.
ONE_TAG = pytest.mark.parametrize("slicer_tag", ["v5.12.3"], indirect=True)
# A rule set where the length and the unlabeled scans both change the pick (the shipped rules may not yet).
RULES = (BudgetRule(30.0, "seg", "evidence short"), BudgetRule(None, "copy-paste-teacher", "evidence long"))


def _shown(widget) -> str:
    pythonqt.process_events(0.05)
    return widget.ui.modeChoiceLabel.text


def _add_cases(widget, tmp_path, unlabeled: int) -> None:
    logic, p = widget.logic, widget._parameterNode
    volume, mask = make_volume("labeled", seed=0)
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    sid = seg.GetSegmentation().AddEmptySegment("", "Left atrium", [1, 0, 0])
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, volume)
    logic.addLabeledExample(p.datasetFolder, volume, seg)
    logic.addUnlabeledVolumes(p.datasetFolder, [make_volume(f"u{i}", seed=i + 1)[0] for i in range(unlabeled)])
    widget.refreshDataset()  # what the panel's Add buttons do after writing


@ONE_TAG
def test_the_line_under_mode_follows_the_length_the_dataset_and_the_choice(panel, tmp_path, monkeypatch):
    monkeypatch.setattr(mode_choice, "RULES", RULES)
    w = panel
    p = w._parameterNode
    assert p.mode == "auto"
    p.datasetFolder, p.timeLimitMinutes = tmp_path / "ds", 10
    assert _shown(w) == "auto: " + pick_mode(10, 0, RULES)[1]  # no dataset yet: no unlabeled scans
    p.timeLimitMinutes = 45
    assert _shown(w) == "auto: " + pick_mode(45, 0, RULES)[1]
    _add_cases(w, tmp_path, unlabeled=2)  # the line follows the dataset too
    assert _shown(w) == "auto: copy-paste teacher for a 45-minute run: evidence long"
    p.timeLimitMinutes = 0  # off: the iterations at the measured step cost
    p.iterations = 600
    assert _shown(w) == "auto: " + pick_mode(600 * mode_choice.STEP_SECONDS / 60, 2, RULES)[1]
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
    assert _shown(w) == "auto: " + pick_mode(minutes, 1, RULES)[1]
    assert w.logic.trainingRequest(p).config["recipe"]["mode"] == mode
    p.mode = "seg+lsf"  # a chosen mode is trained as chosen
    assert w.logic.trainingRequest(p).config["recipe"]["mode"] == "seg+lsf"
    resumed = w.logic.trainingRequest(p, tmp_path / "models" / "some run")
    assert "mode" not in resumed.config["recipe"]  # a resume keeps its run's own mode
