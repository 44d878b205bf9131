"""The engine commands the Slicer panel runs as subprocesses: info, rank, segment/train --jsonl --cancel-file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_IMAGE, make_blob_dataset, tiny_config
from DTCCore.data import labels
from DTCCore.errors import EXIT_CANCELLED


def dtc(*args, timeout=180, **kwargs):
    return subprocess.run([sys.executable, "-m", "DTCCore", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_info_describes_models_labels_and_device(tiny_model_file, tmp_path):
    bad = tmp_path / "not_a_model.pt"
    bad.write_bytes(b"nope")
    run = dtc("info", tiny_model_file, bad, "--device", "cpu")
    assert run.returncode == 0, run.stderr
    tiny, error, device = jsonl(run.stdout)
    assert tiny["event"] == "model" and tiny["num_classes"] == 1 and tiny["plan"]["patch"] == [32, 32, 16]
    assert tiny["plan"]["pools"] == [4, 4, 4]
    assert tiny["labels"] == labels.generic_table(1)
    assert error["event"] == "model-error" and "not a DTCSegmentation checkpoint" in error["error"]
    assert device == {**device, "event": "device", "resolved": "cpu"} and device["description"].startswith("CPU")


def test_bundled_model_names_the_left_atrium_in_the_dicom_master_list():
    run = dtc("info")
    assert run.returncode == 0, run.stderr
    (model,) = jsonl(run.stdout)
    (entry,) = model["labels"]
    assert entry["name"] == "Left atrium"
    context, category, kind = entry["terminology"].split("~")[:3]
    assert context == "Segmentation category and type - DICOM master list"
    assert kind == "SCT^82471001^Left atrium" and category == "SCT^123037004^Anatomical Structure"
    # the plan reported is the checkpoint's own (read here without dtc info)
    from DTCCore.model.checkpoint import DEFAULT_MODEL, load_checkpoint

    config = load_checkpoint(DEFAULT_MODEL)["config"]
    assert "validation_dice" in model and model["plan"]["patch"] == list(config.train.patch)
    assert model["plan"]["spacing"] == list(config.plan.spacing) == [2.0, 2.0, 2.0]


def test_label_table_sidecar_and_validation(tiny_model_file):
    table = [{"value": 1, "name": "Tumour", "color": [0.1, 0.2, 0.3], "terminology": ""}]
    labels.write_sidecar(tiny_model_file, table)
    assert labels.read_table(tiny_model_file, {}, 1) == table
    from_checkpoint = labels.read_table(tiny_model_file, {"labels": [{"name": "From checkpoint"}]}, 1)
    assert from_checkpoint[0]["name"] == "From checkpoint"
    with pytest.raises(labels.DTCError, match="must list 2"):
        labels.read_table(tiny_model_file, {}, 2)


def test_segment_jsonl_and_cancel_file(tiny_model_file, tmp_path):
    run = dtc("segment", SAMPLE_IMAGE, "-o", tmp_path / "out", "--model", tiny_model_file, "--device", "cpu",
              "--jsonl", "--whole-volume")
    assert run.returncode == 0, run.stderr
    events = jsonl(run.stdout)
    assert events[0]["event"] == "start" and events[-1]["event"] == "case-done"
    assert all(Path(p).exists() for p in events[-1]["files"].values())
    cancel = tmp_path / "cancel"
    cancel.touch()
    run = dtc("segment", SAMPLE_IMAGE, "-o", tmp_path / "out2", "--model", tiny_model_file, "--device", "cpu",
              "--jsonl", "--cancel-file", cancel)
    assert run.returncode == EXIT_CANCELLED and "cancelled" in run.stderr
    assert not any((tmp_path / "out2").glob("*_seg.nrrd"))


def test_rank_orders_by_disagreement(tiny_model_file, tmp_path):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=0, n_unlabeled=2)
    images = sorted(manifest.parent.glob("case*.nrrd"))
    run = dtc("rank", *images, "--model", tiny_model_file, "--device", "cpu", "--jsonl")
    assert run.returncode == 0, run.stderr
    events = jsonl(run.stdout)
    assert [e["event"] for e in events] == ["start", "progress", "progress", "ranked"]
    ranking = events[-1]["ranking"]
    assert sorted(p for p, _ in ranking) == [str(p) for p in images]
    assert ranking[0][1] >= ranking[1][1]


def test_train_cancel_file_saves_a_checkpoint(blob_manifest, tmp_path):
    config = tiny_config(iterations=100_000)
    config_file = tmp_path / "config.json"
    config.save(config_file)
    cancel = tmp_path / "cancel"
    process = subprocess.Popen([sys.executable, "-m", "DTCCore", "train", str(blob_manifest),
                                "-o", str(tmp_path / "run"),
                                "--config", str(config_file), "--jsonl", "--cancel-file", str(cancel)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.monotonic() + 120
    for line in process.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "progress":
            cancel.touch()
        if time.monotonic() > deadline:
            break
    assert process.wait(60) == EXIT_CANCELLED, process.stderr.read()
    cancelled = [e for e in seen if e["event"] == "cancelled"]
    assert cancelled and Path(cancelled[0]["checkpoint"]).exists()
