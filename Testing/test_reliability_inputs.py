"""Reliability: one table of bad inputs, each run through the CLI and through the API.

Every bad input must give a one-line ``error: ...`` naming the problem (exit status 2, no traceback) on
the command line, a DTCError from the API, and leave no file in the output folder. A few hard-but-valid
inputs (volume smaller than the patch, no unlabeled volume, non-ASCII paths with spaces) must work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import blob_volume, make_blob_dataset, tiny_config, write_volume
from DTCCore.cli import main
from DTCCore.config import DTCConfig
from DTCCore.data import images as dtc_io
from DTCCore.data.images import read_image, write_image
from DTCCore.errors import DTCError
from DTCCore.model.checkpoint import load_model, save_checkpoint
from DTCCore.model.network import build_network
from DTCCore.training.runlog import read_log
from DTCCore.training.trainer import train

SMALL = (24, 20, 12)  # voxels; smaller than the tiny patch (32, 32, 16) along every axis


@dataclass
class Job:
    """What a case runs: ``dtc train MANIFEST`` (config file) or ``dtc segment IMAGE --model MODEL``."""

    command: str
    target: Path  # the manifest (train) or the image (segment)
    out: Path
    config: Path | None = None
    model: Path | None = None
    init_from: Path | None = None

    def argv(self) -> list[str]:
        if self.command == "train":
            extra = ["--init-from", str(self.init_from)] if self.init_from else []
            return ["train", str(self.target), "-o", str(self.out), "--config", str(self.config), *extra]
        return ["segment", str(self.target), "-o", str(self.out), "--model", str(self.model), "--device", "cpu"]

    def api(self) -> None:
        if self.command == "train":
            train(DTCConfig.load(self.config), self.target, self.out, init_from=self.init_from)
        else:  # what 'dtc segment' does, without the prediction itself
            load_model(self.model)
            image, geometry = read_image(self.target)
            write_image(self.out / "result_seg.nrrd", np.zeros(image.shape, np.uint8), geometry)


def _model(root: Path, filters: int = 2, weights_filters: int | None = None) -> Path:
    cfg = tiny_config()
    cfg.network.base_filters = filters
    other = tiny_config()
    other.network.base_filters = weights_filters or filters
    torch.manual_seed(0)
    return save_checkpoint(root / f"model{filters}_{weights_filters}.pt", build_network(other.network), None, 0, cfg)


def _train_job(root: Path, manifest: Path | None = None, num_classes: int = 1, **kw) -> Job:
    manifest = manifest or make_blob_dataset(root / "data", n_labeled=1, n_unlabeled=1)
    cfg = tiny_config(iterations=1)
    cfg.network.num_classes = num_classes
    cfg.save(root / "cfg.json")
    return Job("train", manifest, root / "run", config=root / "cfg.json", **kw)


def _segment_job(root: Path, image: Path, model: Path | None = None) -> Job:
    return Job("segment", image, root / "out", model=model or _model(root))


def _manifest(root: Path, data) -> Path:
    (root / "m.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return root / "m.json"


def _replace_label(root: Path, label: np.ndarray, **geometry) -> Job:
    manifest = make_blob_dataset(root / "data", n_labeled=1, n_unlabeled=1)
    write_volume(root / "data" / "case0_label.nrrd", label, **geometry)
    return _train_job(root, manifest)


def _blob(seed: int = 0):
    return blob_volume(np.random.default_rng(seed))


def _image_job(root: Path, array: np.ndarray) -> Job:
    return _segment_job(root, write_volume(root / "scan.nrrd", array))


def _four_d(root: Path) -> Job:
    vol = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    sitk.WriteImage(sitk.JoinSeries([vol, vol]), str(root / "scan4d.nrrd"))
    return _segment_job(root, root / "scan4d.nrrd")


def _zero_voxels(root: Path) -> Job:
    (root / "empty.raw").write_bytes(b"")
    (root / "empty.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 0 4 4\nElementType = MET_FLOAT\n"
                                    "ElementDataFile = empty.raw\n")
    return _segment_job(root, root / "empty.mhd")


def _truncated(root: Path) -> Job:
    path = root / "scan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(_blob()[0].T.copy()), str(path), False)  # raw: the voxels follow the header
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return _segment_job(root, path)


def _text_file(root: Path, name: str) -> Path:
    (root / name).write_text("patient notes, not an image\n")
    return root / name


def _huge(root: Path) -> Job:
    """A header claiming 1000^3 float voxels and holding none: nothing big is allocated."""
    (root / "huge.nrrd").write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 1000 1000 1000\nencoding: raw\n"
                                    "endian: little\n\n")
    return _segment_job(root, root / "huge.nrrd")


def _corrupt_model(root: Path) -> Job:
    model = _model(root)
    model.write_bytes(model.read_bytes()[:-100])
    return _segment_job(root, write_volume(root / "scan.nrrd", _blob()[0]), model)


def _duplicate(root: Path) -> Job:
    make_blob_dataset(root / "data", n_labeled=1, n_unlabeled=0)
    pair = {"image": "data/case0.nrrd", "label": "data/case0_label.nrrd"}
    return _train_job(root, _manifest(root, {"labeled": [pair], "unlabeled": ["data/case0.nrrd"]}))


def _existing_run(root: Path) -> Job:
    job = _train_job(root)
    job.out.mkdir()
    (job.out / "config.json").write_text("{}")
    return job


def _bad_patch(root: Path) -> Job:
    job = _train_job(root)
    (root / "cfg.json").write_text(json.dumps({"train": {"patch": [30, 32, 16]}}))
    return job


def _bad_label_file(root: Path) -> Job:
    manifest = make_blob_dataset(root / "data", n_labeled=1, n_unlabeled=1)
    _text_file(root / "data", "case0_label.nrrd")
    return _train_job(root, manifest)


def _under_a_file(root: Path, command: str) -> Job:
    (root / "blocker").write_text("x")
    job = _train_job(root) if command == "train" else _image_job(root, _blob()[0])
    job.out = root / "blocker" / "sub"
    return job


def _rgb(root: Path) -> Job:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 5, 4, 3), np.uint8), isVector=True), str(root / "rgb.nrrd"))
    return _segment_job(root, root / "rgb.nrrd")


_, _BLOB_LABEL = _blob()
CASES: list[tuple[str, Callable[[Path], Job], str]] = [
    ("label-grid-differs", lambda r: _replace_label(r, _BLOB_LABEL, spacing=(2.0, 1.0, 1.0)), "not on the image grid"),
    ("label-size-differs", lambda r: _replace_label(r, _BLOB_LABEL[:-2]), "not on the image grid"),
    ("empty-label", lambda r: _replace_label(r, np.zeros_like(_BLOB_LABEL)), "is empty"),
    ("non-binary-label", lambda r: _replace_label(r, _BLOB_LABEL * 2), "binarise it"),
    ("label-beyond-classes", lambda r: _train_job(r, _replace_label(r, _BLOB_LABEL * 3).target, num_classes=2),
     "remap its values to 0..2"),
    ("nan-intensities", lambda r: _image_job(r, np.where(_BLOB_LABEL > 0, np.nan, _blob()[0]).astype(np.float32)),
     "NaN or infinite"),
    ("inf-intensities", lambda r: _train_job(r, _write_inf_unlabeled(r)), "NaN or infinite"),
    ("2d-image", lambda r: _segment_job(r, _write_2d(r)), "is a 2D image"),
    ("4d-image", _four_d, "is a 4D image"),
    ("rgb-image", _rgb, "components per voxel"),
    ("zero-voxels", _zero_voxels, "has no voxels"),
    ("truncated-file", _truncated, "truncated or corrupt"),
    ("non-image-file", lambda r: _segment_job(r, _text_file(r, "scan.nrrd")), "cannot read"),
    ("non-image-label", _bad_label_file, "cannot read"),
    ("1e9-voxels", _huge, "too large for the available memory"),
    ("model-of-another-architecture",
     lambda r: _segment_job(r, write_volume(r / "s.nrrd", _blob()[0]), _model(r, 2, 4)), "another architecture"),
    ("init-from-another-architecture", lambda r: _train_job(r, init_from=_model(r, 4)), "another architecture"),
    ("corrupt-checkpoint", _corrupt_model, "corrupt or truncated"),
    ("non-checkpoint-model", lambda r: _segment_job(r, write_volume(r / "s.nrrd", _blob()[0]), _text_file(r, "m.pt")),
     "not a DTCSegmentation checkpoint"),
    ("missing-model", lambda r: _segment_job(r, write_volume(r / "s.nrrd", _blob()[0]), r / "nope.pt"),
     "does not exist"),
    ("missing-image", lambda r: _segment_job(r, r / "nope.nrrd"), "does not exist"),
    ("manifest-missing-files",
     lambda r: _train_job(r, _manifest(r, {"labeled": [{"image": "a.nrrd", "label": "b.nrrd"}]})), "missing file(s)"),
    ("manifest-duplicate-case", _duplicate, "twice"),
    ("manifest-wrong-json", lambda r: _train_job(r, _manifest(r, '{"labeled": [}')), "not valid JSON"),
    ("manifest-unknown-key", lambda r: _train_job(r, _manifest(r, {"images": []})), "unknown key"),
    ("manifest-is-a-folder", lambda r: _train_job(r, r), "is a folder"),
    ("no-labeled-pairs", lambda r: _train_job(r, _manifest(r, {"labeled": [], "unlabeled": []})), "no labeled pairs"),
    ("patch-not-multiple-of-16", _bad_patch, "multiple of 16"),
    ("run-folder-holds-a-run", _existing_run, "already holds a training run"),
    ("train-output-under-a-file", lambda r: _under_a_file(r, "train"), "is a file"),
    ("segment-output-under-a-file", lambda r: _under_a_file(r, "segment"), "cannot write to"),
]


def _write_inf_unlabeled(root: Path) -> Path:
    manifest = make_blob_dataset(root / "data", n_labeled=1, n_unlabeled=1)
    image = _blob(3)[0]
    image[3, 4, 5] = np.inf
    write_volume(root / "data" / "case1.nrrd", image)
    return manifest


def _write_2d(root: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 30), np.float32)), str(root / "slice.nrrd"))
    return root / "slice.nrrd"


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


@pytest.fixture(autouse=True)
def _laptop_memory(monkeypatch):
    """The 1e9-voxel case must not depend on this machine's RAM: at most 8 GiB are 'available'."""
    real = dtc_io.available_memory_bytes()
    monkeypatch.setattr(dtc_io, "available_memory_bytes", lambda: min(real or 8 * 2**30, 8 * 2**30))


def test_the_table_has_at_least_20_kinds():
    assert len({fragment for _, _, fragment in CASES}) >= 20 and len(CASES) >= 25


@pytest.mark.parametrize("name, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_cli_one_line_error_and_no_output(tmp_path, capsys, name, build, fragment):
    job = build(tmp_path)
    before = set(_files_under(job.out))
    assert main(job.argv()) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines, err
    assert lines[-1].startswith("error: ") and fragment in lines[-1], err
    assert set(_files_under(job.out)) == before, "no partial output"


@pytest.mark.parametrize("name, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_api_raises_dtc_error(tmp_path, name, build, fragment):
    job = build(tmp_path)
    with pytest.raises(DTCError) as info:
        job.api()
    message = str(info.value)
    assert fragment in message and "\n" not in message


def _tiny_train(manifest: Path, run: Path, capsys) -> list[dict]:
    cfg_file = run.parent / "cfg.json"
    tiny_config(iterations=2).save(cfg_file)
    assert main(["train", str(manifest), "-o", str(run), "--config", str(cfg_file)]) == 0, capsys.readouterr().err
    return read_log(run)


def test_volume_smaller_than_the_patch_trains_and_segments(tmp_path, capsys):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=1, n_unlabeled=1, shape=SMALL)
    log = _tiny_train(manifest, tmp_path / "run", capsys)
    assert log[-1]["event"] == "done"
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "data" / "case0.nrrd"), "-o", str(out), "--model",
                 str(tmp_path / "run" / "model.pt"), "--device", "cpu"]) == 0
    seg = sitk.ReadImage(str(out / "case0_seg.nrrd"))
    assert seg.GetSize() == SMALL


def test_zero_unlabeled_volumes_train_supervised(tmp_path, capsys):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=0)
    log = _tiny_train(manifest, tmp_path / "run", capsys)
    start = [r for r in log if r["event"] == "start"][0]
    assert start["unlabeled"] == 0 and start["labeled"] == 2 and log[-1]["event"] == "done"


def test_non_ascii_and_space_paths_work(tmp_path, capsys):
    root = tmp_path / "données de l'été" / "scans patient 1"
    manifest = make_blob_dataset(root, n_labeled=1, n_unlabeled=1)
    for old in sorted(root.glob("case*.nrrd")):
        old.rename(root / old.name.replace("case", "cas é "))
    text = manifest.read_text().replace("case", "cas é ")
    manifest.write_text(text, encoding="utf-8")
    run = tmp_path / "runs ünïcode" / "run 1"
    assert _tiny_train(manifest, run, capsys)[-1]["event"] == "done"
    out = tmp_path / "résultats 1"
    assert main(["segment", str(root / "cas é 0.nrrd"), "-o", str(out), "--model", str(run / "model.pt"),
                 "--device", "cpu"]) == 0
    assert (out / "cas é 0_seg.nrrd").exists()
