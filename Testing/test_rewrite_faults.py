"""Every file the engine rewrites survives a write that fails partway: the previous file stays, whole.

The files written over an existing one (a new file is not at risk): the dataset's ``manifest.json`` (each
added case), a run folder's ``config.json`` and ``model.pt`` (a resumed or extended run) and its checkpoints,
``curves.png`` (redrawn during training) and previews (``dtc segment --preview --overwrite``), a model's label
table sidecar (written again when a resumed fine-tune ends), ``dtc evaluate --csv/--json`` tables and the
volumes ``dtc segment --overwrite`` writes. ``log.jsonl`` is appended to, never rewritten (a torn last line
is skipped by ``runlog.read_log``); a dataset's ``labels.json`` is written once and never rewritten. The
Slicer module's files (``requested_config.json``, the dataset through its panel) are in
test_slicer_rewrite_faults.py.

Each rewrite runs under two faults (write_faults.py): the data write stops after half the bytes (a full
disk), or the final rename fails. Either way the call must raise, and the folder must hold exactly what it
held before: the old file byte for byte (it still parses, and lists exactly the old entries) and no temp file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config, write_volume
from DTCCore.errors import DTCError
from write_faults import FAULTS, folder_state, inject

FAILED_WRITE = (DTCError, OSError)  # the engine's message (atomic.py); OSError: a write that is not guarded


def rewrite_fails(monkeypatch, fault: str, path: Path, rewrite) -> None:
    """Run ``rewrite()`` (it writes over ``path``) under ``fault``; it must raise and leave the folder as it was."""
    before = folder_state(path.parent)
    assert path.name in before
    with monkeypatch.context() as m:
        inject(m, fault, path.parent)
        with pytest.raises(FAILED_WRITE):
            rewrite()
    assert folder_state(path.parent) == before  # the old file byte for byte; no temp file left


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("change", ["add labeled", "label an unlabeled scan", "add unlabeled"])
def test_manifest_keeps_the_previous_entries(tmp_path, monkeypatch, fault, change):
    from DTCCore.data.manifest import add_labeled, add_unlabeled, load_manifest

    folder = tmp_path / "dataset"
    files = {name: touch(folder / "images" / f"{name}.nrrd") for name in ("a", "b", "u", "v")}
    labels = {name: touch(folder / "labels" / f"{name}.nrrd") for name in ("a", "b", "u")}
    manifest = folder / "manifest.json"
    add_labeled(manifest, files["a"], labels["a"])
    add_unlabeled(manifest, files["u"])
    old = load_manifest(manifest, require_labeled=False)
    rewrite = {
        "add labeled": lambda: add_labeled(manifest, files["b"], labels["b"]),
        "label an unlabeled scan": lambda: add_labeled(manifest, files["u"], labels["u"], replaces=files["u"]),
        "add unlabeled": lambda: add_unlabeled(manifest, files["v"]),
    }[change]
    rewrite_fails(monkeypatch, fault, manifest, rewrite)
    again = load_manifest(manifest, require_labeled=False)
    assert again.labeled == old.labeled and again.unlabeled == old.unlabeled
    assert [(p.image.name, p.label.name) for p in again.labeled] == [("a.nrrd", "a.nrrd")]
    assert [p.name for p in again.unlabeled] == ["u.nrrd"]
    rewrite()  # the same change, without the fault, goes through
    assert load_manifest(manifest, require_labeled=False) != again


@pytest.mark.parametrize("fault", FAULTS)
def test_run_config_keeps_the_previous_settings(tmp_path, monkeypatch, fault):
    from DTCCore.config import DTCConfig

    path = tmp_path / "run" / "config.json"
    path.parent.mkdir()
    tiny_config(iterations=6).save(path)
    rewrite_fails(monkeypatch, fault, path, lambda: tiny_config(iterations=12).save(path))
    assert DTCConfig.load(path).train.iterations == 6


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", ["model.pt", "checkpoints/iter_000004.pt"])
def test_model_and_checkpoint_keep_the_previous_weights(tmp_path, monkeypatch, fault, name):
    from DTCCore.model.checkpoint import load_checkpoint, save_checkpoint
    from DTCCore.model.network import build_network

    config = tiny_config()
    torch.manual_seed(0)
    model = build_network(config.network)
    path = tmp_path / "run" / name
    path.parent.mkdir(parents=True)
    save_checkpoint(path, model, None, 4, config)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    rewrite_fails(monkeypatch, fault, path, lambda: save_checkpoint(path, model, None, 8, config))
    payload = load_checkpoint(path)  # the content hash checks every byte
    assert payload["iteration"] == 4
    assert all(torch.equal(payload["model"][k], weights[k]) for k in weights)


def progress(n: int) -> list[dict]:
    return [{"event": "progress", "iteration": i, "total": 40, "lr": 0.01, "lambda": 0.1 * i,
             "losses": {"total": 1.0 / i, "dice": 0.5 / i, "lsf": 0.2 / i, "consistency": 0.01 * i}}
            for i in range(1, n + 1)]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("picture", ["curves", "preview"])
def test_png_keeps_the_previous_picture(tmp_path, monkeypatch, fault, picture):
    from DTCCore.evaluation.preview import save_curves, save_preview

    path = tmp_path / "run" / f"{picture}.png"
    path.parent.mkdir()
    image = np.random.default_rng(0).normal(size=(24, 20, 8)).astype(np.float32)
    label = (image > 1).astype(np.uint8)
    draw = {"curves": lambda n: save_curves(path, progress(n)),
            "preview": lambda n: save_preview(path, image * n, label, title=f"case {n}")}[picture]
    draw(5)
    rewrite_fails(monkeypatch, fault, path, lambda: draw(20))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("fault", FAULTS)
def test_model_label_table_keeps_the_previous_classes(tmp_path, monkeypatch, fault):
    from DTCCore.data.labels import read_table, sidecar_path, write_sidecar

    model = touch(tmp_path / "run" / "model.pt")
    old = [{"value": 1, "name": "Left atrium", "color": [0.8, 0.2, 0.2], "terminology": ""}]
    new = [{"value": 1, "name": "Left ventricle", "color": [0.2, 0.2, 0.8], "terminology": ""}]
    write_sidecar(model, old)
    rewrite_fails(monkeypatch, fault, sidecar_path(model), lambda: write_sidecar(model, new))
    assert read_table(model, {}, 1) == old


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("table", ["csv", "json"])
def test_evaluation_table_keeps_the_previous_rows(tmp_path, monkeypatch, fault, table):
    from DTCCore.cli import build_parser

    truth = np.zeros((12, 10, 6), np.uint8)
    truth[3:9, 2:8, 1:5] = 1
    write_volume(tmp_path / "label" / "case1.nrrd", truth)
    write_volume(tmp_path / "good" / "case1.nrrd", truth)
    write_volume(tmp_path / "bad" / "case1.nrrd", np.roll(truth, 2, axis=0))
    out = tmp_path / "tables" / f"scores.{table}"
    out.parent.mkdir()

    def evaluate(pred: str) -> None:
        args = build_parser().parse_args(["evaluate", str(tmp_path / pred), str(tmp_path / "label"),
                                          f"--{table}", str(out)])
        args.run(args)

    evaluate("good")
    rewrite_fails(monkeypatch, fault, out, lambda: evaluate("bad"))
    text = out.read_text()
    dice = float(text.splitlines()[1].split(",")[1]) if table == "csv" else json.loads(text)["cases"][0]["dice"]
    assert dice == 1.0  # the previous (perfect) prediction's row


@pytest.mark.parametrize("fault", FAULTS)
def test_volume_written_over_keeps_the_previous_voxels(tmp_path, monkeypatch, fault):
    from DTCCore.data.images import Geometry, read_image, write_image

    geometry = Geometry(spacing=(0.7, 0.8, 2.0), origin=(1.0, -2.0, 3.0), direction=tuple(np.eye(3).ravel()))
    old = np.arange(12 * 10 * 6, dtype=np.float32).reshape(12, 10, 6)
    path = tmp_path / "out" / "case1_seg.nrrd"
    write_image(path, old, geometry)
    rewrite_fails(monkeypatch, fault, path, lambda: write_image(path, -old, geometry))
    again, _ = read_image(path)
    assert np.array_equal(again, old)
