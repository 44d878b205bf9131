"""The model's label table travels with Segment's results (issue 40 item 4): ``dtc segment --jsonl`` sends it in
its ``start`` event, so Segment names its segments without a ``dtc info`` of its own."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import slicer

from DTCCore.data.labels import write_sidecar
from DTCCore.protocol import EXIT_USER_ERROR
from slicer_harness.fixtures import REPO, dtc_module, make_tiny_model, slicer_scene  # noqa: F401

# A label table no default gives: a name and colour of its own (the generic table says "Class 1").
TUMOUR = {"value": 1, "name": "Tumour", "color": [0.1, 0.2, 0.3], "terminology": ""}


@pytest.fixture
def tumour_model(tmp_path):
    """A tiny model whose label table (its sidecar) names one class "Tumour"."""
    model = make_tiny_model(tmp_path)
    write_sidecar(model, [TUMOUR])
    return model


def _events(*args) -> list[dict]:
    run = subprocess.run([sys.executable, "-m", "DTCCore", *map(str, args)], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


def test_segment_start_event_carries_the_label_table_dtc_info_gives(tumour_model, tmp_path):
    image = REPO / "DTCCore" / "sample" / "la_sample_image.nrrd"
    (info,) = _events("info", tumour_model)
    events = _events("segment", image, "-o", tmp_path / "out", "--model", tumour_model, "--device", "cpu",
                     "--whole-volume", "--jsonl")
    start = events[0]
    assert start["event"] == "start" and start["num_classes"] == 1
    assert start["labels"] == info["labels"]
    assert [(e["value"], e["name"], e["color"]) for e in start["labels"]] == [(1, "Tumour", [0.1, 0.2, 0.3])]


def test_logic_segment_names_the_segments_without_asking_dtc_info(slicer_scene, dtc_module, tumour_model,
                                                                  monkeypatch):
    def no_info(self, *args, **kwargs):
        raise AssertionError("Segment asked dtc info for the label table")

    monkeypatch.setattr(dtc_module.DTCSegmentationLogic, "modelInfo", no_info)
    monkeypatch.setattr(dtc_module.DTCSegmentationLogic, "startModelInfo", no_info)
    rng = np.random.default_rng(0)
    kji = rng.normal(100.0, 20.0, (16, 18, 20)).astype(np.float32)
    volume = slicer.util.addVolumeFromArray(kji, np.diag([0.9, 1.1, 1.6, 1.0]), "Scan")
    nodes = dtc_module.DTCSegmentationLogic().segment(volume, modelPath=str(tumour_model), device="cpu",
                                                      quality="fast")
    segment = nodes.segmentation.GetSegmentation().GetSegment(nodes.segment_id)
    assert segment.GetName() == "Tumour"
    assert np.allclose(segment.GetColor(), [0.1, 0.2, 0.3])


def test_a_segment_job_without_the_label_table_fails_naming_the_fix(tmp_path):
    from DTCSegmentationLib.jobs.segmentjob import SEG, SegmentJob

    job = SegmentJob(tmp_path, tmp_path / "input.nrrd")
    job.on_event({"event": "start", "device": "CPU"})  # an engine from before the label table was sent
    job.files = {SEG: str(tmp_path / "input_seg.nrrd")}
    with pytest.raises(RuntimeError, match="no label table.*reinstall the extension"):
        job.done_event()
    job.on_event({"event": "start", "device": "CPU", "labels": [TUMOUR]})
    assert job.labels == [TUMOUR]


def test_segment_jsonl_refuses_a_model_whose_label_table_does_not_fit(tmp_path):
    """Before any window runs: the results could not be named."""
    model = make_tiny_model(tmp_path)
    write_sidecar(model, [TUMOUR, {**TUMOUR, "value": 2, "name": "Oedema"}])  # two classes for a one-class model
    run = subprocess.run([sys.executable, "-m", "DTCCore", "segment", "--sample", "-o", tmp_path / "out",
                          "--model", model, "--device", "cpu", "--whole-volume", "--jsonl"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == EXIT_USER_ERROR
    assert "must list 1 class" in run.stderr.splitlines()[-1]


def test_a_finished_segment_reads_one_level_set_not_every_classs(slicer_scene, dtc_module, tmp_path, monkeypatch):
    """A C-class model writes C level sets (``levelset_<c>``); the panel shows the first class's only, so only
    that one is read on Slicer's GUI thread: the result has it, and the others are never opened."""
    import DTCCore.data.images as images
    from DTCCore.data.images import Geometry, write_image
    from DTCCore.protocol import EVENT_KEY, Event
    from DTCSegmentationLib.jobs.segmentjob import SegmentJob

    shape, geometry = (6, 5, 4), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    files = {"seg": tmp_path / "seg.nrrd", "disagreement": tmp_path / "dis.nrrd"}
    write_image(files["seg"], np.ones(shape, np.uint8), geometry)
    write_image(files["disagreement"], np.zeros(shape, np.float32), geometry)
    for c in (1, 2, 3):
        files[f"levelset_{c}"] = tmp_path / f"ls{c}.nrrd"
        write_image(files[f"levelset_{c}"], np.full(shape, -c / 10, np.float32), geometry)
    read = []
    real = images.read_image
    monkeypatch.setattr(images, "read_image", lambda path, *a, **k: read.append(str(path)) or real(path, *a, **k))
    job = SegmentJob(tmp_path, tmp_path / "scan.nrrd")
    job.on_event({EVENT_KEY: Event.START, "device": "cpu", "labels": [TUMOUR, TUMOUR, TUMOUR]})
    job.on_event({EVENT_KEY: Event.CASE_DONE, "files": {k: str(v) for k, v in files.items()}})
    job.done_event()
    assert sorted(read) == sorted(str(files[k]) for k in ("seg", "levelset_1", "disagreement"))
    assert len(job.result.levelsets) == 1 and np.allclose(job.result.levelsets[0], -0.1)
