"""Trainer: learning, run folder, resume equals an uninterrupted run, cancel, fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_blob_dataset, tiny_config
from DTCCore.errors import CancelledError, DTCError
from DTCCore.model.checkpoint import find_latest_checkpoint, list_checkpoints, load_checkpoint, load_model
from DTCCore.training.trainer import lr_at, train


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_lr_schedule_matches_reference_steps():
    from DTCCore.config import DTCConfig

    c = DTCConfig()
    assert lr_at(0, c) == pytest.approx(0.01)
    assert lr_at(2499, c) == pytest.approx(0.01)
    assert lr_at(2500, c) == pytest.approx(0.001)
    assert lr_at(5000, c) == pytest.approx(0.0001)


def test_each_iteration_uses_its_own_learning_rate(tmp_path, blob_manifest):
    # lr x0.1 from iteration 2 on (0-based): the steps of iterations 0 and 1 use 0.01, of 2 and 3 use 0.001.
    config = tiny_config(iterations=4, lr_steps=(2,), checkpoint_every=1)
    events = []
    train(config, blob_manifest, tmp_path / "run", progress=events.append)
    logged = {e["iteration"]: e["lr"] for e in events if e["event"] == "progress"}
    assert logged == pytest.approx({1: 0.01, 2: 0.01, 3: 0.001, 4: 0.001})
    # Not only the log: the optimizer saved after k iterations holds the lr its last step (k - 1) used.
    saved = list_checkpoints(tmp_path / "run")
    assert [it for it, _ in saved] == [4, 3, 2, 1]
    for it, path in saved:
        groups = load_checkpoint(path)["optimizer"]["param_groups"]
        assert [g["lr"] for g in groups] == pytest.approx([lr_at(it - 1, config)] * len(groups)), it


def test_run_folder_contents_and_events(tmp_path, blob_manifest):
    events = []
    model_path = train(tiny_config(iterations=4), blob_manifest, tmp_path / "run", progress=events.append)
    run = tmp_path / "run"
    assert model_path == run / "model.pt" and model_path.exists()
    assert (run / "config.json").exists() and (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["iteration"] for e in progress] == [1, 2, 3, 4]
    for e in progress:
        assert set(e["losses"]) == {"total", "dice", "lsf", "consistency"}
        assert e["total"] == 4 and e["eta_s"] >= 0 and e["lr"] == pytest.approx(0.01)
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert logged == events
    assert [it for it, _ in list_checkpoints(run)] == [4, 2]
    model, config = load_model(model_path)
    assert config.network.base_filters == 2 and not model.training


def test_refuses_to_overwrite_a_run(tmp_path, blob_manifest):
    train(tiny_config(iterations=1), blob_manifest, tmp_path / "run")
    with pytest.raises(DTCError, match="already holds a training run"):
        train(tiny_config(iterations=1), blob_manifest, tmp_path / "run")


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, blob_manifest):
    full = train(tiny_config(iterations=6), blob_manifest, tmp_path / "full")
    calls = {"n": 0}

    def cancel_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3  # polled before each iteration: 3 iterations run, then cancel

    with pytest.raises(CancelledError):
        train(tiny_config(iterations=6), blob_manifest, tmp_path / "part", cancel=cancel_after_three)
    latest = find_latest_checkpoint(tmp_path / "part")
    assert latest is not None and latest[1]["iteration"] == 3
    resumed = train(tiny_config(iterations=6), blob_manifest, tmp_path / "part", resume=True)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_without_checkpoint_starts_over_and_says_so(tmp_path, blob_manifest):
    events = []
    train(tiny_config(iterations=2), blob_manifest, tmp_path / "run", resume=True, progress=events.append)
    texts = [e["text"] for e in events if e["event"] == "message"]
    assert any("starting from the beginning" in t for t in texts)


def test_a_patch_longer_than_every_scan_gets_a_hint(tmp_path, blob_manifest):
    # The blob scans are 40 x 36 x 24 voxels: a 48-slice patch pads every crop; 32 (the next multiple of 16)
    # covers them. A patch within the scans gets no hint.
    texts = {}
    for name, patch in [("long", (32, 32, 48)), ("fits", (32, 32, 16))]:
        events: list = []
        train(tiny_config(iterations=1, patch=patch), blob_manifest, tmp_path / name, progress=events.append)
        texts[name] = [e["text"] for e in events if e["event"] == "message" and "patch" in e["text"]]
    assert texts["long"] == ["patch 32x32x48 is longer than every training scan along z (largest 24 voxels): "
                             "every crop is padded there; --patch 32 32 32 covers the largest scan at less cost"]
    assert texts["fits"] == []


def test_cancelled_run_leaves_a_loadable_checkpoint(tmp_path, blob_manifest):
    with pytest.raises(CancelledError, match="resume"):
        train(tiny_config(iterations=50), blob_manifest, tmp_path / "run", cancel=lambda: True)
    path, payload = find_latest_checkpoint(tmp_path / "run")
    assert payload["iteration"] == 0 and payload["optimizer"] is not None
    load_model(path)


def test_unlabeled_data_unused_outside_dtc_mode(tmp_path, blob_manifest):
    events = []
    cfg = tiny_config(iterations=1)
    cfg.recipe.mode = "seg+lsf"
    train(cfg, blob_manifest, tmp_path / "run", progress=events.append)
    assert events[0]["unlabeled"] == 0 and events[0]["labeled"] == 3


def test_fine_tune_starts_from_given_weights_and_checks_architecture(tmp_path, blob_manifest):
    base = train(tiny_config(iterations=1), blob_manifest, tmp_path / "base")
    cfg = tiny_config(iterations=1)
    cfg.train.lr = 0.0  # no update: weights (not BN statistics) must equal the initial model's
    tuned = train(cfg, blob_manifest, tmp_path / "tuned", init_from=base)
    a, b = _weights(base), _weights(tuned)
    learned = [k for k in a if "running" not in k and "num_batches" not in k]
    assert len(learned) > 10
    for k in learned:
        assert torch.equal(a[k], b[k]), k
    fresh = _weights(train(cfg, blob_manifest, tmp_path / "fresh"))
    assert not all(torch.equal(a[k], fresh[k]) for k in learned)
    other = tiny_config(iterations=1)
    other.network.base_filters = 4
    with pytest.raises(DTCError, match="another architecture"):
        train(other, blob_manifest, tmp_path / "other", init_from=base)


def test_tiny_model_learns_blobs(tmp_path):
    """Dice on held-out blobs clearly improves with training (semi-supervised, DTC mode)."""
    from conftest import blob_volume
    from DTCCore.evaluation.metrics import evaluate_case
    from DTCCore.inference.predict import predict_volume

    manifest = make_blob_dataset(tmp_path / "data", n_labeled=4, n_unlabeled=2, seed=1)
    cfg = tiny_config(iterations=60)
    cfg.network.base_filters = 4
    cfg.train.lr = 0.05
    cfg.train.checkpoint_every = 1000
    cfg.train.log_every = 20
    rng = np.random.default_rng(99)
    tests = [blob_volume(rng) for _ in range(2)]

    def mean_dice(model_path) -> float:
        model, config = load_model(model_path)
        return float(np.mean([evaluate_case(predict_volume(model, img, config).label > 0, lab > 0)["dice"]
                              for img, lab in tests]))

    before_cfg = tiny_config(iterations=1)
    before_cfg.network.base_filters = 4
    before_cfg.train.lr = 0.0
    before = mean_dice(train(before_cfg, manifest, tmp_path / "before"))
    after = mean_dice(train(cfg, manifest, tmp_path / "after"))
    assert after > 0.7 and after > before + 0.2, (before, after)


def test_model_gets_precise_batchnorm_only_when_training_ends_at_a_high_lr(tmp_path, blob_manifest):
    def final_vs_checkpoint(run, cfg):
        model = load_checkpoint(train(cfg, blob_manifest, run))["model"]
        ckpt = load_checkpoint(run / "checkpoints" / "iter_000002.pt")["model"]
        stats = [k for k in model if k.endswith("running_mean")]
        weights = [k for k in model if k.endswith("weight")]
        assert stats and all(torch.equal(model[k], ckpt[k]) for k in weights)
        return all(torch.equal(model[k], ckpt[k]) for k in stats)

    assert not final_vs_checkpoint(tmp_path / "high", tiny_config(iterations=2))  # ends at lr 0.01
    low = tiny_config(iterations=2, lr_steps=(1,), lr_gamma=0.01)  # ends at lr 1e-4: reference behaviour
    assert final_vs_checkpoint(tmp_path / "low", low)
