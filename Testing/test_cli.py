"""The ``dtc`` command line: geometry round trip, evaluation against MedPy, one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from medpy.metric import binary as medpy_binary

from conftest import REPO, blob_volume, make_blob_dataset, tiny_config, write_volume
from DTCCore.cli import main

_C, _S = math.cos(0.3), math.sin(0.3)
OBLIQUE = (_C, -_S, 0.0, _S * _C, _C * _C, -_S, _S * _S, _S * _C, _C)  # rotations about z then x (orthonormal)
SPACING, ORIGIN = (0.7, 0.9, 1.3), (-12.5, 30.0, 7.25)


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "DTCCore", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _assert_one_line_error(stderr: str, fragment: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert lines and lines[-1].startswith("error: ") and fragment in lines[-1], stderr


def test_help_is_available_for_every_command(capsys):
    for argv in (["--help"], ["train", "--help"], ["segment", "--help"], ["evaluate", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "dtc segment" in out and "MANIFEST" in out and "95HD" in out


def test_segment_keeps_geometry_and_equals_the_api(tmp_path, tiny_model_file):
    from DTCCore.inference.predict import predict_volume
    from DTCCore.model.checkpoint import load_model

    image, _ = blob_volume(np.random.default_rng(5))
    src = write_volume(tmp_path / "scan one.nrrd", image, SPACING, ORIGIN, OBLIQUE)
    out = tmp_path / "out dir"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_file), "--device", "cpu",
                 "--preview"]) == 0
    ref = sitk.ReadImage(str(src))
    for kind in ("seg", "levelset", "disagreement"):
        result = sitk.ReadImage(str(out / f"scan one_{kind}.nrrd"))
        assert result.GetSize() == ref.GetSize()
        assert np.allclose(result.GetSpacing(), SPACING) and np.allclose(result.GetOrigin(), ORIGIN)
        assert np.allclose(result.GetDirection(), ref.GetDirection())
    assert (out / "scan one_preview.png").read_bytes()[:4] == b"\x89PNG"
    model, config = load_model(tiny_model_file)
    expected = predict_volume(model, image, config).label
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "scan one_seg.nrrd"))).transpose(2, 1, 0)
    assert np.array_equal(got, expected)
    # a second run refuses to overwrite, --overwrite replaces
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_file)]) == 2
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_file), "--overwrite",
                 "--format", "nii.gz"]) == 0
    assert (out / "scan one_seg.nii.gz").exists()


def test_segment_errors_are_one_line_and_leave_nothing(tmp_path, tiny_model_file):
    bogus = tmp_path / "notes.nrrd"
    bogus.write_text("this is not an image")
    out = tmp_path / "out"
    r = _run("segment", str(bogus), "-o", str(out), "--model", str(tiny_model_file))
    assert r.returncode == 2
    _assert_one_line_error(r.stderr, "notes.nrrd")
    assert not out.exists() or not list(out.iterdir()), "no partial output"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = _run("segment", "--sample", "-o", str(blocker / "sub"), "--model", str(tiny_model_file))
    assert r.returncode == 2
    _assert_one_line_error(r.stderr, "output folder")
    r = _run("segment", "--sample", "-o", str(out), "--model", str(tmp_path / "missing.pt"))
    assert r.returncode == 2
    _assert_one_line_error(r.stderr, "missing.pt")


def test_segment_without_bundled_model_says_so(tmp_path, monkeypatch, capsys):
    import DTCCore.model.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "DEFAULT_MODEL", tmp_path / "none.pt")
    assert main(["segment", "--sample", "-o", str(tmp_path / "o")]) == 2
    assert "no default model is bundled" in capsys.readouterr().err


def test_evaluate_matches_medpy_and_writes_reports(tmp_path, capsys):
    rng = np.random.default_rng(8)
    preds, labels = tmp_path / "pred", tmp_path / "labels"
    truth_arrays = {}
    for case in ("a", "b"):
        _, truth = blob_volume(rng)
        pred = np.roll(truth, 2, axis=0)
        write_volume(preds / f"{case}_seg.nrrd", pred, SPACING)
        write_volume(labels / case / "label.nrrd", truth, SPACING)
        truth_arrays[case] = (pred, truth)
    csv_path, json_path = tmp_path / "r.csv", tmp_path / "r.json"
    assert main(["evaluate", str(preds), str(labels), "--csv", str(csv_path), "--json", str(json_path)]) == 0
    table = capsys.readouterr().out
    assert "Dice%" in table and "mean of 2" in table
    report = json.loads(json_path.read_text())
    for row in report["cases"]:
        pred, truth = truth_arrays[row["case"]]
        assert row["dice"] == pytest.approx(medpy_binary.dc(pred, truth))
        assert row["hd95_vox"] == pytest.approx(medpy_binary.hd95(pred, truth))
        assert row["asd_mm"] == pytest.approx(medpy_binary.asd(pred, truth, voxelspacing=SPACING))
    assert csv_path.read_text().splitlines()[0].startswith("case,")
    assert main(["evaluate", str(preds / "a_seg.nrrd"), str(labels / "a" / "label.nrrd")]) == 0
    assert main(["evaluate", str(preds), str(tmp_path / "nowhere")]) == 2


def test_train_command_jsonl_and_errors(tmp_path, capsys):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=1)
    cfg_file = tmp_path / "cfg.json"
    tiny_config(iterations=2).save(cfg_file)
    assert main(["train", str(manifest), "-o", str(tmp_path / "run"), "--config", str(cfg_file), "--jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert events[0] == {"event": "message", "text": f"classes: 1 (--config {cfg_file})"}
    assert events[1]["event"] == "start" and events[-1]["event"] == "done"
    assert Path(events[-1]["model"]).exists()
    r = _run("train", str(tmp_path / "missing.json"), "-o", str(tmp_path / "r2"))
    assert r.returncode == 2
    _assert_one_line_error(r.stderr, "missing.json")
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text('{"train": {"itertions": 5}}')
    r = _run("train", str(manifest), "-o", str(tmp_path / "r3"), "--config", str(bad_cfg))
    assert r.returncode == 2
    _assert_one_line_error(r.stderr, "itertions")


def test_segment_multiclass_writes_one_level_set_per_class(tmp_path):
    import torch

    from DTCCore.model.checkpoint import save_checkpoint
    from DTCCore.model.network import build_network

    cfg = tiny_config()
    cfg.network.num_classes = 2
    torch.manual_seed(0)
    model_file = save_checkpoint(tmp_path / "mc.pt", build_network(cfg.network).eval(), None, 0, cfg)
    image, _ = blob_volume(np.random.default_rng(2))
    src = write_volume(tmp_path / "mc.nrrd", image, SPACING, ORIGIN, OBLIQUE)
    assert main(["segment", str(src), "-o", str(tmp_path / "o"), "--model", str(model_file)]) == 0
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["mc_disagreement.nrrd", "mc_levelset_1.nrrd", "mc_levelset_2.nrrd", "mc_seg.nrrd"]
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o" / "mc_seg.nrrd")))
    assert seg.shape == image.shape[::-1] and set(np.unique(seg)) <= {0, 1, 2}


def test_bundled_default_model_segments_the_bundled_sample(tmp_path, capsys):
    """The README's main job: the bundled model on the bundled case, checked against the bundled label."""
    from conftest import SAMPLE_LABEL
    from DTCCore.model.checkpoint import DEFAULT_MODEL, read_model_info

    info = read_model_info(DEFAULT_MODEL)
    assert info["config"]["network"]["num_classes"] == 1
    assert main(["segment", "--sample", "-o", str(tmp_path), "--device", "cpu"]) == 0
    assert "bundled default model" in capsys.readouterr().err
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "la_sample_image_seg.nrrd")))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE_LABEL)))
    # floor below the model card's value for this case (it is a test.list case), far above a broken pipeline
    assert medpy_binary.dc(seg, truth) > 0.80


def test_a_resume_without_a_checkpoint_settles_its_classes_as_a_fresh_start(tmp_path):
    """--resume into a run folder whose checkpoints/ holds no checkpoint yet (a crash before the first) starts fresh,
    as the trainer does: the classes come from the labels (here 1 and 2: 2 classes, the largest label value), as without
    --resume; with a checkpoint there, they are left to it."""
    import argparse

    from DTCCore.cli.train import set_num_classes
    from DTCCore.config import DTCConfig
    from DTCCore.data.images import read_image
    from DTCCore.model.checkpoint import CHECKPOINT_DIR

    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=0)
    for pair in json.loads(manifest.read_text())["labeled"]:
        label = Path(pair["label"]) if Path(pair["label"]).is_absolute() else manifest.parent / pair["label"]
        array, _ = read_image(label)
        two = (array > 0).astype(np.uint8)
        two[: two.shape[0] // 2] *= 2  # the blob's first half class 2, the rest class 1
        write_volume(label, two, SPACING)
    run = tmp_path / "run"
    (run / CHECKPOINT_DIR).mkdir(parents=True)
    args = argparse.Namespace(resume=True, output=str(run), num_classes=None, init_from=None, config=None)
    config = DTCConfig()
    assert set_num_classes(config, args, manifest) is not None and config.network.num_classes == 2
    (run / CHECKPOINT_DIR / "iter_000001.pt").write_bytes(b"")
    config = DTCConfig()
    assert set_num_classes(config, args, manifest) is None and config.network.num_classes == 1  # the checkpoint's
