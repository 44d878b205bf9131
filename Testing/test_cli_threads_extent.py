"""``--threads N`` on every command, and the whole-scan warning of ``dtc segment`` (issue 25)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, SAMPLE_IMAGE, make_blob_dataset, tiny_config
from DTCCore.cli import build_parser
from DTCCore.planning.extent import OVERSIZE_FACTOR, model_training_extent, oversize_axes, training_extent

PAD_FACTOR = 3  # the sample padded to 3x its size along x (issue 25's test)


def dtc(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "DTCCore", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_every_command_takes_threads_and_torch_gets_them():
    parser = build_parser()
    minimal = {"train": ["m.json", "-o", "r"], "segment": ["-o", "o"], "evaluate": ["p", "l"], "info": [],
               "rank": ["a.nrrd"]}
    for command, rest in minimal.items():
        assert parser.parse_args([command, *rest, "--threads", "3"]).threads == 3
        assert parser.parse_args([command, *rest]).threads is None
    run = dtc("info", "--threads", "1")
    assert run.returncode == 0, run.stderr
    first = run.stderr.splitlines()[0]
    assert first.startswith("threads: 1 (torch intra-op 1, inter-op 1;"), run.stderr  # read back from torch
    assert dtc("info", "--threads", "2").stderr.startswith("threads: 2 (torch intra-op 2, inter-op 2;")
    bad = dtc("info", "--threads", "0")
    assert bad.returncode == 2 and "--threads" in bad.stderr and "1 or more" in bad.stderr


def test_train_records_threads_and_the_training_extent(tmp_path):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=1)  # 40 x 36 x 24 voxels at 1 mm
    config = tmp_path / "cfg.json"
    tiny_config(iterations=2).save(config)
    run = dtc("train", manifest, "-o", tmp_path / "run", "--config", config, "--jsonl", "--threads", "1")
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith("threads: 1 (torch intra-op 1")
    start = next(e for e in events(run.stdout) if e["event"] == "start")
    assert start["threads"] == 1
    info = events(dtc("info", tmp_path / "run" / "model.pt").stdout)[0]
    sizes = []
    for path in [*(tmp_path / "data").rglob("*.nrrd")]:
        if "label" not in path.name:
            image = sitk.ReadImage(str(path))
            sizes.append(np.array(image.GetSize()) * np.array(image.GetSpacing()))
    assert info["training_extent_mm"] == pytest.approx(list(np.max(sizes, axis=0)))


def test_extent_rule_and_where_a_model_records_it(tmp_path):
    assert training_extent([(0.5, 0.5, 2.0), (1.0, 1.0, 1.0)], [(100, 80, 10), (40, 40, 30)]) == [50.0, 40.0, 30.0]
    model = [100.0, 100.0, 50.0]
    assert oversize_axes([OVERSIZE_FACTOR * 100, 100, 50], model) == []  # exactly 2x: not "over 2x"
    assert [a for a, _ in oversize_axes([201, 90, 120], model)] == ["x", "z"]
    assert oversize_axes([1000, 1000, 1000], None) == []  # a model that records nothing: no warning
    path = tmp_path / "m.pt"
    (tmp_path / "m.json").write_text(json.dumps({"training_extent_mm": [10, 20, 30]}))
    assert model_training_extent(path, {}) == [10.0, 20.0, 30.0]  # the card, for a model file without the key
    assert model_training_extent(path, {"training_extent_mm": [1, 2, 3]}) == [1.0, 2.0, 3.0]  # checkpoint first
    assert model_training_extent(tmp_path / "other.pt", {}) is None


def padded_sample(path: Path) -> tuple[Path, int]:
    """The bundled sample in the middle third of a scan 3x as wide along x (zeros around); its x size."""
    image = sitk.ReadImage(str(SAMPLE_IMAGE))
    kji = sitk.GetArrayFromImage(image)
    x = kji.shape[2]
    padded = np.zeros(kji.shape[:2] + (PAD_FACTOR * x,), kji.dtype)
    padded[:, :, x:2 * x] = kji
    out = sitk.GetImageFromArray(padded)
    out.SetSpacing(image.GetSpacing())
    out.SetOrigin(image.GetOrigin())
    out.SetDirection(image.GetDirection())
    sitk.WriteImage(out, str(path))
    return path, x


def test_segment_warns_once_on_a_padded_scan_and_roi_crops_it(tmp_path):
    bundled = events(dtc("info").stdout)[0]
    assert bundled["training_extent_mm"] == [152.5, 100.0, 55.0]  # DTCCore/models/default.json's card
    padded, x = padded_sample(tmp_path / "padded.nrrd")
    fast = ["--device", "cpu", "--no-mirror", "--threads", "1", "--jsonl"]
    run = dtc("segment", padded, "-o", tmp_path / "o1", *fast)
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "along x" in warnings[0] and "--roi" in warnings[0], run.stderr
    found = [e for e in events(run.stdout) if e["event"] == "extent-warning"]
    assert len(found) == 1 and found[0]["model_mm"] == [152.5, 100.0, 55.0]
    assert found[0]["scan_mm"][0] == pytest.approx(PAD_FACTOR * x * 0.625, abs=0.1)

    plain = dtc("segment", SAMPLE_IMAGE, "-o", tmp_path / "o2", *fast)
    assert plain.returncode == 0, plain.stderr
    assert "warning:" not in plain.stderr and not [e for e in events(plain.stdout) if e["event"] == "extent-warning"]

    # --roi on the original third: no warning, nothing segmented outside the box, the sample's result inside
    cropped = dtc("segment", padded, "-o", tmp_path / "o3", "--roi", x, 0, 0, 2 * x, 132, 88, *fast)
    assert cropped.returncode == 0, cropped.stderr
    assert "warning:" not in cropped.stderr
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o3" / "padded_seg.nrrd")))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o2" / "la_sample_image_seg.nrrd")))
    assert not seg[:, :, :x].any() and not seg[:, :, 2 * x:].any()
    assert np.array_equal(seg[:, :, x:2 * x], reference)
    bad = dtc("segment", padded, "-o", tmp_path / "o4", "--roi", 10, 0, 0, 5, 10, 10)
    assert bad.returncode == 2 and "--roi" in bad.stderr.splitlines()[-1]
