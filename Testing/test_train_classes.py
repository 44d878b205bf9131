"""``dtc train`` counts a new model's classes from its labeled scans (issue 40 item 6), ``--num-classes`` overrides,
and a fine-tune keeps its model's classes; a label value the model cannot hold is refused before anything is
written, naming the file, the value and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import blob_volume, tiny_config, write_volume
from DTCCore.cli import main
from DTCCore.model.checkpoint import load_checkpoint


def _dataset(root: Path, labels: list[np.ndarray]) -> Path:
    """One case per label map (blob images), no unlabeled scans; returns the manifest."""
    rng = np.random.default_rng(3)
    pairs = []
    for i, label in enumerate(labels):
        image, _ = blob_volume(rng, label.shape)
        write_volume(root / f"c{i}.nrrd", image)
        write_volume(root / f"c{i}_label.nrrd", label)
        pairs.append({"image": f"c{i}.nrrd", "label": f"c{i}_label.nrrd"})
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"labeled": pairs, "unlabeled": []}))
    return manifest


def _classes_map(shape=(40, 36, 24), values=(1, 2, 3)) -> np.ndarray:
    """Slabs along x holding each value in turn (background between them)."""
    label = np.zeros(shape, np.uint8)
    width = shape[0] // (2 * len(values) + 1)
    for i, v in enumerate(values):
        label[(2 * i + 1) * width:(2 * i + 2) * width, 4:-4, 4:-4] = v
    return label


def _tiny_args(tmp_path: Path) -> list[str]:
    """The tiny training of the suite, as options (no --config, so nothing names the classes)."""
    cfg = tiny_config(iterations=2)
    return ["--iterations", "2", "--patch", *map(str, cfg.train.patch), "--base-filters", "2", "--workers", "0",
            "--device", "cpu", "--mode", "seg"]


def test_a_new_model_takes_its_classes_from_the_labels(tmp_path, capsys):
    manifest = _dataset(tmp_path / "d", [_classes_map(values=(1, 2, 3)), _classes_map(values=(2, 1))])
    assert main(["train", str(manifest), "-o", str(tmp_path / "run"), *_tiny_args(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "classes: 3 (label values {1, 2, 3} in 2 labeled scans; --num-classes overrides)"
    assert load_checkpoint(tmp_path / "run" / "model.pt")["config"].network.num_classes == 3


def test_a_binary_mask_makes_a_one_class_model(tmp_path, capsys):
    manifest = _dataset(tmp_path / "d", [_classes_map(values=(1,))])
    assert main(["train", str(manifest), "-o", str(tmp_path / "run"), *_tiny_args(tmp_path)]) == 0
    assert capsys.readouterr().err.splitlines()[0].startswith("classes: 1 (label values {1} in 1 labeled scans")
    assert load_checkpoint(tmp_path / "run" / "model.pt")["config"].network.num_classes == 1


def test_num_classes_overrides_and_refuses_a_higher_label(tmp_path, capsys):
    manifest = _dataset(tmp_path / "d", [_classes_map(values=(1, 2, 3))])
    run = tmp_path / "run"
    assert main(["train", str(manifest), "-o", str(run), *_tiny_args(tmp_path), "--num-classes", "2"]) == 2
    err = capsys.readouterr().err
    assert "c0_label.nrrd holds class {3}, above the model's 2 classes (--num-classes)" in err
    assert "raise --num-classes or remap the label" in err
    assert not run.exists()  # refused before anything was written
    assert main(["train", str(manifest), "-o", str(run), *_tiny_args(tmp_path), "--num-classes", "4"]) == 0
    assert capsys.readouterr().err.splitlines()[0] == "classes: 4 (--num-classes)"
    assert load_checkpoint(run / "model.pt")["config"].network.num_classes == 4


def test_a_fine_tune_keeps_its_models_classes_and_names_an_unknown_value(tmp_path, capsys):
    manifest = _dataset(tmp_path / "d", [_classes_map(values=(1, 2, 3))])
    assert main(["train", str(manifest), "-o", str(tmp_path / "base"), *_tiny_args(tmp_path)]) == 0
    model = tmp_path / "base" / "model.pt"
    capsys.readouterr()
    two = _dataset(tmp_path / "d2", [_classes_map(values=(2,))])  # one value: a new model would have 1 class
    assert main(["train", str(two), "-o", str(tmp_path / "ft"), *_tiny_args(tmp_path), "--init-from", str(model)]) == 0
    assert capsys.readouterr().err.splitlines()[0].startswith("classes: 3 (those of the model it fine-tunes")
    assert load_checkpoint(tmp_path / "ft" / "model.pt")["config"].network.num_classes == 3
    four = _dataset(tmp_path / "d4", [_classes_map(values=(1, 4))])
    assert main(["train", str(four), "-o", str(tmp_path / "ft4"), *_tiny_args(tmp_path), "--init-from",
                 str(model)]) == 2
    err = capsys.readouterr().err
    assert "c0_label.nrrd holds class {4}, above the model's 3 classes (those of the model it fine-tunes" in err
    assert "a fine-tune keeps its model's classes" in err
    assert not (tmp_path / "ft4").exists()


@pytest.mark.parametrize("values, message", [
    ((255,), "a 1-class model expects 0/1 — binarise it (label > 0)"),
    (tuple(range(1, 41)), "more than 32 classes is unlikely to be a class map"),
])
def test_labels_that_are_no_class_map_get_the_right_advice(tmp_path, capsys, values, message):
    shape = (90, 36, 24) if len(values) > 3 else (40, 36, 24)
    label = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        label[2 * i:2 * i + 1, 4:-4, 4:-4] = v
    manifest = _dataset(tmp_path / "d", [label])
    assert main(["train", str(manifest), "-o", str(tmp_path / "run"), *_tiny_args(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
