"""The spare engine process in the panel's flow (real panel, real MRML, real engine processes): entering the
module starts it, Segment runs in it and the next one starts when that job ends; a spare that died gives a
cold start with the same result; scene close, Reload and quit (the widget's cleanup) leave no process."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import slicer

from slicer_harness.fixtures import dtc_module, slicer_scene, tiny_model  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401
from test_engine_spare import gone, wait_gone
from test_slicer_widget import (  # noqa: F401  (panel and models_folder are fixtures)
    choose_model,
    enter_module,
    make_volume,
    models_folder,
    panel,
    pump_until,
)

READY_S = 180.0  # a spare's imports on a loaded 2-core machine
TAG = ["v5.10.0"]  # the spare is the Logic's: one wrapper tag is enough


def _segment(widget):
    """Click Segment; (the job, the level set array of its result)."""
    widget.ui.segmentButton.click()
    job = widget._jobs["segment"]
    pump_until(lambda: "segment" not in widget._jobs, what="Segment")
    assert widget.ui.segmentStatusLabel.text.startswith("Done in"), widget.ui.segmentStatusLabel.text
    return job, job.result.levelsets[0].copy()


@pytest.mark.parametrize("slicer_tag", TAG, indirect=True)
def test_segment_runs_in_the_spare_then_cold_when_the_spare_died(panel, models_folder):
    w = panel
    choose_model(w, models_folder)
    spare = w.logic.spare
    assert spare.process is None  # not entered yet: no spare
    enter_module(w)
    assert spare.wait_ready(READY_S), "the spare did not get ready"
    first = spare.process.pid
    volume, _ = make_volume("Patient 7")
    w.ui.inputVolumeSelector.setCurrentNode(volume)

    w.ui.segmentButton.click()
    job = w._jobs["segment"]
    assert job.runner.warm and job.runner.process.pid == first  # the command went to the waiting process
    assert spare.process is None  # taken: the next one starts when this job ends
    pump_until(lambda: "segment" not in w._jobs, what="warm Segment")
    assert w.ui.segmentStatusLabel.text.startswith("Done in"), w.ui.segmentStatusLabel.text
    warm = job.result.levelsets[0].copy()
    assert spare.process is not None and spare.process.pid != first and spare.process.poll() is None
    assert wait_gone(first, 30)  # one process per job: the used spare exited
    assert (spare.handed, spare.cold) == (1, 0)

    died = spare.process.pid
    os.killpg(died, signal.SIGKILL)  # the spare dies while it waits (killed, out of memory)
    spare.process.wait()
    cold_job, cold = _segment(w)
    assert not cold_job.runner.warm and (spare.handed, spare.cold) == (1, 1)
    assert np.array_equal(warm, cold)  # the same engine run, warm or cold
    assert spare.process is not None and spare.process.pid != died  # a new spare after the cold job
    assert w._parameterNode.segmentation.GetSegmentation().GetNumberOfSegments() == 1


@pytest.mark.parametrize("slicer_tag", TAG, indirect=True)
def test_scene_close_and_the_widgets_cleanup_end_the_spare(panel):
    w = panel
    enter_module(w)
    spare = w.logic.spare
    assert spare.wait_ready(READY_S)
    before = spare.process.pid
    slicer.mrmlScene.Clear(0)  # File / Close scene while the module is shown
    assert gone(before)  # stopped before the close returns
    after = spare.process.pid  # the module is still shown: a new spare for the next click
    assert after != before and not gone(after)
    w.cleanup()  # what Slicer calls on quit and on Reload
    assert gone(after) and spare.process is None and not spare.enabled
    w.logic.spare.stop()  # a second stop (the fixture's cleanup) is harmless


def test_model_information_runs_in_the_spare_and_its_ready_line_is_not_a_job_event(slicer_scene, dtc_module,
                                                                                   tiny_model):
    from DTCSegmentationLib.jobs.spare import engine_argv

    assert engine_argv(["py", "-X", "utf8", "-m", "DTCCore", "info", "m.pt"]) == ["info", "m.pt"]
    with pytest.raises(ValueError, match="not a 'python -m DTCCore' command line"):
        engine_argv(["py", "-m", "other", "info"])
    logic = dtc_module.DTCSegmentationLogic()
    try:
        logic.spare.start(tiny_model)
        assert logic.spare.wait_ready(READY_S)
        job = logic.startModelInfo([str(tiny_model)], "cpu")
        events = job.wait(READY_S)
        assert job.runner.warm and job.state == "done"
        assert [e["event"] for e in events] == ["model", "device", "job-done"]  # no spare-ready among them
        assert job.models[str(tiny_model)]["num_classes"] == 1 and job.device["resolved"] == "cpu"
        assert logic.spare.process is not None and logic.spare.model == str(tiny_model)  # the next one
    finally:
        logic.spare.stop()
