"""File > Close scene with the panel in use (real MRML, the real widget on the strict harness).

- Next case: the node ID of the loaded top-ranked scan is reused by the next scene (``vtkMRMLScene::Clear``
  resets the ID counters), so an unrelated volume of the new scene must not take its place in the dataset.
- Jobs that end after the close, while another module is shown: a fine-tune registers and selects its model,
  ``dtc info`` fills in the device line, a Segment of the closed scene is dropped with a status line and
  writes nothing into the new scene.

The jobs here are scripted stand-ins for the engine jobs (``poll`` / ``cancel``, the same end events), so
that each ends exactly after the close; the scene, the parameter node and the widget are the real ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import slicer

from DTCCore.data.labels import LEFT_ATRIUM, write_sidecar
from DTCCore.protocol import EVENT_KEY, JobEvent
from slicer_harness import pythonqt
from slicer_harness.fixtures import slicer_scene, tiny_model  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401
from test_slicer_widget import (  # noqa: F401
    IJK_TO_RAS,
    SHAPE_KJI,
    enter_module,
    exit_module,
    make_volume,
    panel,
    pump_until,
    write_nrrd,
)


class ScriptedJob:
    """Ends with ``event`` at the first poll after :meth:`finish`; carries the attributes the panel reads."""

    def __init__(self, **attributes):
        self.error, self.elapsed_s, self.device = None, 1.0, None
        self.__dict__.update(attributes)
        self._end = None
        self.cancelled = False

    def finish(self, event: str, **fields) -> None:
        self._end = {EVENT_KEY: event, **fields}

    def poll(self) -> list:
        end, self._end = self._end, None
        return [end] if end else []

    def cancel(self) -> None:
        self.cancelled = True


def close_scene() -> None:
    """File > Close scene: what qSlicerCoreApplication does (``vtkMRMLScene::Clear(false)``)."""
    slicer.mrmlScene.Clear(False)


def test_next_case_after_a_scene_close_keeps_the_unlabeled_scans(panel, tmp_path):
    w = panel
    enter_module(w)
    dataset = tmp_path / "dataset"
    w.ui.datasetFolderButton.directory = str(dataset)
    files = [tmp_path / "Case 3.nrrd", tmp_path / "Case 4.nrrd"]
    for seed, path in enumerate(files):
        write_nrrd(path, IJK_TO_RAS, seed)
    pythonqt.FILE_DIALOG_ANSWERS.append([str(f) for f in files])
    w.ui.addUnlabeledFilesButton.click()
    assert w.ui.unlabeledList.count == 2, w.ui.datasetStatusLabel.text
    w._ranking, w._rankedCount = [(str(files[0]), 0.4), (str(files[1]), 0.3)], 2  # as a finished ranking leaves it
    w.ui.loadTopButton.click()
    loaded_id = w._parameterNode.inputVolume.GetID()

    close_scene()
    w.ui.datasetFolderButton.directory = str(dataset)
    p = w._parameterNode
    p.startFrom = "scratch"  # the segments define the label table: no model is read
    other, mask = make_volume("Unrelated scan")
    assert other.GetID() == loaded_id  # the premise: the new scene reuses the ID
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "corrected")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(other)
    sid = seg.GetSegmentation().AddEmptySegment("", "Left atrium", [0.9, 0.1, 0.1])
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, other)
    p.inputVolume, p.segmentation = other, seg
    w.ui.addLabeledButton.click()
    assert w.ui.labeledTable.rowCount == 1, w.ui.datasetStatusLabel.text
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert sorted(Path(u).resolve() for u in manifest["unlabeled"]) == sorted(f.resolve() for f in files)
    assert w._ranking and Path(w._ranking[0][0]) == files[0]  # still the next case


def test_jobs_ending_after_a_scene_close_while_another_module_is_shown(panel, tmp_path, tiny_model):
    from DTCSegmentationLib.jobs.segmentjob import SegmentResult

    w = panel
    enter_module(w)
    models = tmp_path / "models"
    models.mkdir()
    w.ui.modelsFolderButton.directory = str(models)
    pump_until(lambda: "info" not in w._jobs, what="dtc info of the bundled model")
    volume, mask = make_volume("Patient 7")
    w._parameterNode.inputVolume = volume
    train, info, segment = ScriptedJob(), ScriptedJob(models={}), ScriptedJob(device="cpu")
    w._startJob("train", train, w.ui.trainButton, onEnd=w._endTrain)
    w._startJob("info", info, onEnd=w._endInfo)
    w._startJob("segment", segment, w.ui.segmentButton,
                onEnd=lambda job, event: w._endSegment(volume, None, job, event))
    exit_module(w)  # another module is shown
    close_scene()
    assert w._jobs.keys() == {"train", "info", "segment"}  # a scene close stops none of them

    run = models / "run-1"  # what the trainer writes
    run.mkdir()
    shutil.copyfile(tiny_model, run / "model.pt")
    write_sidecar(run / "model.pt", [LEFT_ATRIUM])
    train.finish(JobEvent.DONE, model=str(run / "model.pt"))
    info.device = {"description": "CPU (scripted)"}
    info.finish(JobEvent.DONE)
    label = np.zeros(SHAPE_KJI[::-1], np.uint8)
    label[7:16, 6:14, 5:13] = 1
    segment.result = SegmentResult(label, [np.where(label > 0, -0.5, 0.5).astype(np.float32)],
                                   np.zeros(label.shape, np.float32))
    segment.labels = [LEFT_ATRIUM]
    segment.finish(JobEvent.DONE)
    pump_until(lambda: not w._jobs, timeout=120, what="the three jobs' ends (and dtc info of the new model)")

    p = w._parameterNode
    assert p is not None and p.modelsFolder == models  # the user's folders survive the close
    assert p.modelPath == str(run / "model.pt"), p.modelPath
    assert w.ui.trainStatusLabel.text == f"Done: new model {run / 'model.pt'} is selected."
    assert str(run / "model.pt") in w._modelInfo  # the info job's end read the new model (a real dtc info)
    assert w.ui.deviceInfoLabel.text.startswith("Device: CPU"), w.ui.deviceInfoLabel.text
    assert "closed" in w.ui.segmentStatusLabel.text, w.ui.segmentStatusLabel.text
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0
    assert w.ui.segmentButton.text == "Segment" and w.ui.trainButton.text == "Start fine-tuning"
    enter_module(w)
    assert w._parameterNode.modelPath == str(run / "model.pt")
