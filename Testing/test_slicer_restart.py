"""A stopped fine-tune survives a restart of Slicer (Resume finds it on disk), and the loss chart's plot
view node is owned by the panel, so Slicer's layout manager builds no second, hidden plot widget for it."""

from __future__ import annotations

import os
import shutil

import pytest
import vtk

from slicer_harness import scripted_module
from slicer_harness.fixtures import dtc_module, slicer_scene, tiny_model  # noqa: F401

# isort: split
# DTCSegmentationLib is importable once slicer_harness.fixtures has put the module folder on sys.path
from DTCSegmentationLib import models  # noqa: E402
from DTCSegmentationLib.curves import LossCurve  # noqa: E402


def _stopped_run(folder, name, iterations, model=False, mtime=None):
    run = folder / f"{models.RUN_PREFIX}-{name}"
    (run / models.CHECKPOINT_DIR).mkdir(parents=True)
    for it in iterations:
        path = run / models.CHECKPOINT_DIR / f"iter_{it:06d}.pt"
        path.write_bytes(b"checkpoint")
        if mtime is not None:
            os.utime(path, (mtime + it, mtime + it))
    if model:
        (run / "model.pt").write_bytes(b"model")
    return run


def test_the_checkpoint_names_are_the_trainers():
    from DTCCore.model import checkpoint

    assert models.CHECKPOINT_DIR == checkpoint.CHECKPOINT_DIR
    assert models.CHECKPOINT_PATTERN.pattern == checkpoint.CHECKPOINT_PATTERN.pattern
    assert models.CHECKPOINT_PATTERN.match(checkpoint.checkpoint_path("r", 12).name)


def test_resumable_run_is_the_newest_stopped_run(tmp_path):
    assert models.resumable_run(None) is None and models.resumable_run(tmp_path / "absent") is None
    assert models.resumable_run(tmp_path) is None
    _stopped_run(tmp_path, "20261201-100000", [5, 10], mtime=1_000_000)
    newest = _stopped_run(tmp_path, "20261202-100000", [3], mtime=2_000_000)
    _stopped_run(tmp_path, "20261203-100000", [20], model=True, mtime=3_000_000)  # finished: not resumable
    (newest / models.CHECKPOINT_DIR / "iter_000099.pt.tmp").write_bytes(b"half-written")  # not a checkpoint
    (tmp_path / "other-run" / models.CHECKPOINT_DIR).mkdir(parents=True)  # not the panel's run folder
    (tmp_path / "other-run" / models.CHECKPOINT_DIR / "iter_000050.pt").write_bytes(b"x")
    assert models.resumable_run(tmp_path) == (newest, 3)


@pytest.fixture
def fresh_panel(slicer_scene, dtc_module, tmp_path, monkeypatch):
    """The widget as a new Slicer session builds it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    widget = dtc_module.DTCSegmentationWidget(scripted_module.make_widget_parent())
    widget.setup()
    yield widget
    widget.cleanup()


def test_resume_after_a_restart_finds_the_run_on_disk(fresh_panel, tmp_path, tiny_model):
    w = fresh_panel
    assert not w.ui.resumeButton.enabled  # an empty models folder: nothing to resume
    folder = tmp_path / "models"
    run = _stopped_run(folder, "20261203-090000", [])
    shutil.copyfile(tiny_model, run / models.CHECKPOINT_DIR / "iter_000007.pt")  # cancelled in the last session
    w.ui.modelsFolderButton.directory = str(folder)
    assert w.ui.resumeButton.enabled
    assert w._lastCancelledRun == run and "iteration 7" in w.ui.resumeButton.toolTip  # what Resume continues
    (run / "model.pt").write_bytes(b"finished elsewhere")
    w.refreshModels()
    assert not w.ui.resumeButton.enabled and w._lastCancelledRun is None


def test_the_loss_plot_view_has_a_parent_layout_node_before_it_joins_the_scene(fresh_panel, slicer_scene):
    parents = []

    def added(caller, event, node):
        if node.IsA("vtkMRMLPlotViewNode"):
            parents.append(node.GetParentLayoutNode())  # what qMRMLLayoutViewFactory reads at this moment

    added.CallDataType = vtk.VTK_OBJECT
    tag = slicer_scene.AddObserver(slicer_scene.NodeAddedEvent, added)
    try:
        fresh_panel._showCurve(LossCurve())
        fresh_panel._showCurve(LossCurve())  # a second fine-tune reuses the view node
    finally:
        slicer_scene.RemoveObserver(tag)
    assert len(parents) == 1 and parents[0] is not None
    assert parents[0].GetID() == fresh_panel._parameterNode.parameterNode.GetID()
    assert fresh_panel.ui.lossPlotWidget.mrmlPlotViewNode().GetParentLayoutNode() is parents[0]
