"""bench/studies/copy_paste_teacher_acdc.py: what a multi-class 2-D copy-paste-teacher run knew at each checkpoint (the
student's and teacher's validation Dice per class, the teacher's pseudo-labels on replayed batches), on a tiny run
over a synthetic ACDC-like folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import bench_module, tiny_config
from test_bench_acdc import _acdc_like


def test_class_dice_matches_medpy_per_class_and_skips_absent_classes():
    from medpy.metric.binary import dc

    study = bench_module("copy_paste_teacher_acdc")
    rng = np.random.default_rng(3)
    pred, truth = rng.integers(0, 3, (12, 10, 4)), rng.integers(0, 3, (12, 10, 4))  # class 3 in neither
    got = study.class_dice(pred, truth, 3)
    for c in (1, 2):
        assert got[c] == pytest.approx(dc(pred == c, truth == c))
    assert np.isnan(got[3])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _tiny_teacher_run(tmp_path_factory.mktemp("teacher_acdc"))


def test_recomputed_batchnorm_changes_the_copy_only(tiny_run):
    import torch

    study = bench_module("copy_paste_teacher_acdc")
    cpt = bench_module("copy_paste_teacher")
    run, config = tiny_run
    from DTCCore.model.checkpoint import list_checkpoints, load_checkpoint
    from DTCCore.model.network import build_network

    net = build_network(config.network)
    net.load_state_dict(load_checkpoint(sorted(list_checkpoints(run))[0][1])["model"])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    labeled, truth = cpt.unlabeled_truth(_manifest(run), config)
    fresh = study.with_recomputed_bn(net, config, labeled, truth, 0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original is untouched
    means = [k for k in before if k.endswith("running_mean")]
    assert means and any(not torch.equal(before[k], fresh.state_dict()[k]) for k in means)
    assert not fresh.training


def _manifest(run):
    from DTCCore.model.checkpoint import list_checkpoints, load_checkpoint

    return Path(load_checkpoint(sorted(list_checkpoints(run))[-1][1])["extra"]["manifest"])


def _tiny_teacher_run(tmp_path):
    """A 3-class 2-D copy-paste-teacher run of 4 steps, a checkpoint every 2: stage 1 at 2, stage 2 (teacher) at 4."""
    train_acdc = bench_module("train_acdc")
    from DTCCore.training.trainer import train

    data = _acdc_like(tmp_path / "acdc", n=7)  # train.list: 2 labeled + 2 unlabeled used; val.list: 1 patient
    manifest = train_acdc.build_manifest(data, 2, 2, "copy-paste-teacher", tmp_path / "out")
    config = tiny_config(iterations=4, checkpoint_every=2, precise_bn_batches=0)
    config.network.num_classes, config.network.dims, config.network.pools = 3, 2, (2, 2, 0)
    config.train.patch, config.plan.spacing = (32, 32, 4), (4.0, 4.0, 1.0)
    config.train.augment = "no-mirror"
    config.recipe.mode, config.recipe.cp_stage1_fraction = "copy-paste-teacher", 0.75  # stage 2 from step 3
    config.validate()
    run = tmp_path / "out" / "run"
    train(config, manifest, run)
    return run, config


def test_study_rows_follow_the_stages_and_the_table_shows_them(tiny_run, capsys):
    study = bench_module("copy_paste_teacher_acdc")
    run, _ = tiny_run
    result = study.main([str(run), "--data", str(run.parents[1] / "acdc"), "--replay", "2"])
    rows = result["checkpoints"]
    assert [(r["iteration"], r["stage"]) for r in rows] == [(2, 1), (4, 2)]
    assert "teacher_val" not in rows[0] and "pseudo_labels" not in rows[0]
    for key in ("student_val", "student_val_stored_bn", "teacher_val"):
        assert set(rows[1][key]) == {"1", "2", "3", "mean"}
        assert rows[1][key]["mean"] == pytest.approx(np.mean([rows[1][key][c] for c in "123"]))
    for c in "123":  # the synthetic crops hold every class; the counts are voxels of 2 batches x 2 crops
        q = rows[1]["pseudo_labels"][c]
        assert q["true_voxels"] > 0 and 0 <= q["predicted_voxels"] <= 2 * 2 * 32 * 32 * 4
        assert np.isnan(q["dice"]) or 0.0 <= q["dice"] <= 1.0
    assert json.loads((run / study.OUT).read_text())["checkpoints"][1]["iteration"] == 4
    capsys.readouterr()
    study.main([str(run), "--report"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| iteration | stage |") and table[2].startswith("| 2 | 1 |")
    assert table[3].startswith("| 4 | 2 |") and table[3].count("/") == 5 * 2  # 5 columns of 3 classes
