"""``dtc evaluate`` on multi-class label maps without flags: classes from the labels, per-class means.
MedPy is the oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from medpy.metric import binary
from scipy import ndimage

from conftest import write_volume
from DTCCore.cli import main
from DTCCore.evaluation.metrics import label_classes, summarize_by_class

SHAPE = (24, 20, 14)
SPACING = (0.8, 1.2, 3.0)


def _three_classes(seed: int) -> np.ndarray:
    """Nested blobs: class 3 inside class 2 inside class 1, like the ACDC cavities and myocardium."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random(SHAPE), sigma=2.5)
    label = np.zeros(SHAPE, np.uint8)
    for c, q in ((1, 0.5), (2, 0.7), (3, 0.85)):
        label[noise > np.quantile(noise, q)] = c
    return label


def _dataset(tmp_path):
    preds, labels, arrays = tmp_path / "pred", tmp_path / "labels", {}
    for i, case in enumerate(("p1", "p2", "p3")):
        truth = _three_classes(i)
        pred = np.roll(truth, 1 + i % 2, axis=0)
        if case == "p3":
            pred[pred == 2] = 1  # class 2 missed entirely in one case
        write_volume(preds / f"{case}_seg.nrrd", pred, SPACING)
        write_volume(labels / f"{case}_label.nrrd", truth, SPACING)
        arrays[case] = (pred, truth)
    return preds, labels, arrays


def test_multiclass_without_flags_matches_medpy_per_class(tmp_path, capsys):
    preds, labels, arrays = _dataset(tmp_path)
    report_path = tmp_path / "r.json"
    assert main(["evaluate", str(preds), str(labels), "--json", str(report_path)]) == 0
    out = capsys.readouterr()
    assert "model" not in out.err
    report = json.loads(report_path.read_text())
    rows = report["cases"]
    assert sorted((r["case"], r["class"]) for r in rows) == [(c, k) for c in ("p1", "p2", "p3") for k in (1, 2, 3)]
    expected: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for r in rows:
        pred, truth = (a == r["class"] for a in arrays[r["case"]])
        if not pred.any():
            assert r["dice"] == 0.0 and r["hd95_vox"] is None  # missed class: defined Dice, undefined distance
        else:
            assert r["dice"] == pytest.approx(binary.dc(pred, truth))
            assert r["jaccard"] == pytest.approx(binary.jc(pred, truth))
            assert r["asd_vox"] == pytest.approx(binary.asd(pred, truth))
            assert r["hd95_mm"] == pytest.approx(binary.hd95(pred, truth, voxelspacing=SPACING))
        expected[r["class"]].append(r["dice"])
    classes = report["summary"]["classes"]
    assert sorted(classes) == ["1", "2", "3"]
    for c in (1, 2, 3):
        assert classes[str(c)]["mean"]["dice"] == pytest.approx(np.mean(expected[c]))
        assert classes[str(c)]["cases"] == 3
    assert report["summary"]["mean"]["dice"] == pytest.approx(np.mean(sum(expected.values(), [])))
    for c in (1, 2, 3):
        line = next(row for row in out.out.splitlines() if row.startswith(f"mean class {c} "))
        assert line.split()[4] == f"{100 * np.mean(expected[c]):.2f}"  # "mean class c (n) Dice% ..."
    assert "mean of 9" in out.out


def test_single_pair_and_class_only_in_the_prediction(tmp_path, capsys):
    truth = _three_classes(5)
    truth[truth == 3] = 2  # the reference has classes 1 and 2 only
    pred = truth.copy()
    pred[:3] = 3  # a class the reference lacks
    write_volume(tmp_path / "pred.nrrd", pred, SPACING)
    write_volume(tmp_path / "label.nrrd", truth, SPACING)
    assert main(["evaluate", str(tmp_path / "pred.nrrd"), str(tmp_path / "label.nrrd")]) == 0
    table = capsys.readouterr().out
    assert [f"mean class {c} (1)" in table for c in (1, 2, 3)] == [True, True, True]
    assert label_classes(pred, truth) == [1, 2, 3]


def test_binary_masks_of_any_value_stay_one_class(tmp_path, capsys):
    truth = (_three_classes(6) > 0).astype(np.uint8) * 255
    pred = np.roll(truth, 1, axis=1)
    write_volume(tmp_path / "pred.nrrd", pred, SPACING)
    write_volume(tmp_path / "label.nrrd", truth, SPACING)
    report = tmp_path / "r.json"
    assert main(["evaluate", str(tmp_path / "pred.nrrd"), str(tmp_path / "label.nrrd"), "--json", str(report)]) == 0
    row = json.loads(report.read_text())["cases"][0]
    assert "class" not in row and row["dice"] == pytest.approx(binary.dc(pred > 0, truth > 0))
    assert "mean class" not in capsys.readouterr().out


def test_errors_name_the_file_not_a_model(tmp_path, capsys):
    truth = _three_classes(7)
    write_volume(tmp_path / "label.nrrd", truth, SPACING)
    write_volume(tmp_path / "pred.nrrd", truth, SPACING)
    assert main(["evaluate", str(tmp_path / "pred.nrrd"), str(tmp_path / "label.nrrd"), "--num-classes", "2"]) == 2
    err = capsys.readouterr().err
    assert "--num-classes 2" in err and "model" not in err
    write_volume(tmp_path / "half.nrrd", truth.astype(np.float32) + 0.5, SPACING)
    assert main(["evaluate", str(tmp_path / "half.nrrd"), str(tmp_path / "label.nrrd")]) == 2
    err = capsys.readouterr().err
    assert "half.nrrd" in err and "integer classes" in err and "model" not in err
    write_volume(tmp_path / "shifted.nrrd", truth, SPACING, origin=(5.0, 0.0, 0.0))
    assert main(["evaluate", str(tmp_path / "shifted.nrrd"), str(tmp_path / "label.nrrd")]) == 2
    assert "not on the grid" in capsys.readouterr().err


def test_summarize_by_class():
    rows = [{"case": "a", "class": 1, "dice": 0.5, "jaccard": 0.3, "asd_vox": 1.0, "hd95_vox": 2.0, "asd_mm": 1.0,
             "hd95_mm": 2.0},
            {"case": "b", "class": 1, "dice": 0.7, "jaccard": 0.5, "asd_vox": 3.0, "hd95_vox": 4.0, "asd_mm": 3.0,
             "hd95_mm": 4.0},
            {"case": "a", "class": 2, "dice": 0.9, "jaccard": 0.8, "asd_vox": 0.5, "hd95_vox": 1.0, "asd_mm": 0.5,
             "hd95_mm": 1.0}]
    got = summarize_by_class(rows)
    assert sorted(got) == [1, 2] and got[1]["cases"] == 2 and got[2]["cases"] == 1
    assert got[1]["mean"]["dice"] == pytest.approx(0.6) and got[2]["mean"]["hd95_vox"] == pytest.approx(1.0)
    assert summarize_by_class([{k: v for k, v in rows[0].items() if k != "class"}]) == {}
