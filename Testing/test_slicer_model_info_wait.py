"""The panel never runs ``dtc info`` on the GUI thread (real widget on the strict harness, real ``dtc info``)."""

from __future__ import annotations

import pytest
import slicer

from DTCCore.errors import DTCError
from slicer_harness.fixtures import slicer_scene, tiny_model  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401
from test_slicer_widget import make_volume, panel, pump_until  # noqa: F401


def test_a_model_not_read_yet_never_blocks_the_gui(panel, tmp_path):
    """Add as labeled example (and Fine-tune) need the model's ``dtc info``; before the background read has
    ended, the click returns at once, starts the read and asks to click again, instead of running ``dtc
    info`` on the GUI thread (a child process importing torch: seconds)."""
    from DTCSegmentationLib.jobs.infojob import ModelInfoJob

    w = panel
    pump_until(lambda: "info" not in w._jobs, what="the first dtc info")
    w._modelInfo.clear()  # as right after start-up, before dtc info has answered
    w.ui.datasetFolderButton.directory = str(tmp_path / "dataset")
    volume, mask = make_volume("Scan")
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "corrected")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    sid = seg.GetSegmentation().AddEmptySegment("", "Left atrium", [0.9, 0.1, 0.1])
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, volume)
    p = w._parameterNode
    p.inputVolume, p.segmentation, p.startFrom = volume, seg, "current model"
    with pytest.raises(DTCError, match="still being read.*click again"):  # testing mode: re-raised, no dialog
        w.onAddLabeled()  # the button's slot
    assert isinstance(w._jobs.get("info"), ModelInfoJob), "the model was read on the GUI thread"
    assert w.ui.labeledTable.rowCount == 0
    pump_until(lambda: "info" not in w._jobs, what="dtc info")
    w.onAddLabeled()  # read now: the example is added with the model's table
    assert w.ui.labeledTable.rowCount == 1, w.ui.datasetStatusLabel.text
