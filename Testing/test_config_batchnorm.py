"""A mode, batch and patch whose coarsest level leaves BatchNorm one value per channel are refused before training
with the fix (torch's own message names neither), and exactly those: the oracle is a real training step with the
check switched off, which fails in torch where the trainer refuses and trains where it accepts. A trained model's
config is never refused for it (the check is the trainer's, not DTCConfig.validate's)."""

from __future__ import annotations

import pytest

from conftest import make_blob_dataset, tiny_config
from DTCCore.config import DTCConfig
from DTCCore.errors import DTCError
from DTCCore.training import trainer
from DTCCore.training.trainer import train

REFUSED = "BatchNorm needs more than one value; use a larger patch or a larger labeled batch"
# (mode, labeled batch, unlabeled batch, patch, pools, unlabeled scans in the manifest)
CASES = [
    ("seg", 1, 0, (16, 16, 16), (4, 4, 4), 2),  # 1 crop x 1 voxel: refused
    ("seg", 2, 0, (16, 16, 16), (4, 4, 4), 2),
    ("dtc", 1, 1, (16, 16, 16), (4, 4, 4), 2),  # 2 crops
    ("dtc", 1, 1, (16, 16, 16), (4, 4, 4), 0),  # no unlabeled scans: 1 crop, refused
    ("copy-paste", 2, 0, (16, 16, 16), (4, 4, 4), 2),  # stage 1 runs half the labeled crops: 1: refused
    ("copy-paste-teacher", 2, 2, (16, 16, 16), (4, 4, 4), 2),  # refused (stage 1 as copy-paste)
    ("seg", 1, 0, (16, 16, 1), (4, 4, 0), 2),  # a 2-D network: its slices join the batch; 1 slice: refused
    ("seg", 1, 0, (16, 16, 2), (4, 4, 0), 2),
]


def _config(mode, labeled, unlabeled, patch, pools) -> DTCConfig:
    config = tiny_config(iterations=1, precise_bn_batches=0)
    config.recipe.mode, config.recipe.cp_stage1_fraction = mode, 1.0
    config.train.labeled_batch, config.train.unlabeled_batch, config.train.patch = labeled, unlabeled, patch
    config.network.pools = pools
    config.network.dims = 2 if pools[2] == 0 else 3
    return config


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}+{c[2]}-{'x'.join(map(str, c[3]))}-u{c[5]}")
def test_the_trainer_refuses_exactly_what_batchnorm_cannot_train(case, tmp_path, monkeypatch):
    *settings, unlabeled_scans = case
    config = _config(*settings)
    config.validate()  # a valid config: the refusal is the trainer's
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=unlabeled_scans)
    try:
        train(config, manifest, tmp_path / "run")
        refused = None
    except DTCError as error:
        refused = str(error)
        assert not (tmp_path / "run").exists()  # refused before anything was written
    if refused is None:
        assert (tmp_path / "run" / "model.pt").exists()
        return
    assert REFUSED in refused
    monkeypatch.setattr(trainer, "check_batchnorm_batch", lambda config, has_unlabeled: None)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        train(config, manifest, tmp_path / "unchecked")


def test_sync_batchnorm_runs_are_not_checked():
    """SyncBatchNorm over several processes pools every process's values: one crop each can train."""
    from DTCCore.config import check_batchnorm_batch

    config = _config("seg", 1, 0, (16, 16, 16), (4, 4, 4))
    with pytest.raises(DTCError, match="BatchNorm"):
        check_batchnorm_batch(config, True)
    config.train.sync_batchnorm = True
    check_batchnorm_batch(config, True)
