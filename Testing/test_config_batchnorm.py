"""A mode, batch and patch whose coarsest level leaves BatchNorm one value per channel are refused by the config
with the fix (torch's own message names neither), and exactly those: the oracle is a real training step with the
check switched off, which fails in torch where the config refuses and trains where it accepts."""

from __future__ import annotations

import pytest

from conftest import tiny_config
from DTCCore.config import DTCConfig
from DTCCore.errors import DTCError
from DTCCore.training.trainer import train

# (mode, labeled batch, unlabeled batch, patch, pools)
CASES = [
    ("seg", 1, 0, (16, 16, 16), (4, 4, 4)),  # 1 crop x 1 voxel: refused
    ("seg", 2, 0, (16, 16, 16), (4, 4, 4)),
    ("seg", 1, 0, (32, 16, 16), (4, 4, 4)),  # 1 crop x 2 voxels
    ("dtc", 1, 1, (16, 16, 16), (4, 4, 4)),  # 2 crops
    ("copy-paste", 2, 0, (16, 16, 16), (4, 4, 4)),  # stage 1 runs half the labeled crops: 1: refused
    ("copy-paste", 4, 0, (16, 16, 16), (4, 4, 4)),
    ("copy-paste-teacher", 2, 2, (16, 16, 16), (4, 4, 4)),  # refused (stage 1 as copy-paste)
    ("seg", 1, 0, (16, 16, 1), (4, 4, 0)),  # a 2-D network: its slices join the batch; 1 slice: refused
    ("seg", 1, 0, (16, 16, 2), (4, 4, 0)),
]


def _config(mode, labeled, unlabeled, patch, pools) -> DTCConfig:
    config = tiny_config(iterations=1, precise_bn_batches=0)
    config.recipe.mode, config.recipe.cp_stage1_fraction = mode, 1.0
    config.train.labeled_batch, config.train.unlabeled_batch, config.train.patch = labeled, unlabeled, patch
    config.network.pools = pools
    config.network.dims = 2 if pools[2] == 0 else 3
    return config


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}+{c[2]}-{'x'.join(map(str, c[3]))}")
def test_the_config_refuses_exactly_what_batchnorm_cannot_train(case, tmp_path, blob_manifest, monkeypatch):
    config = _config(*case)
    try:
        config.validate()
        refused = None
    except DTCError as error:
        refused = str(error)
    monkeypatch.setattr(DTCConfig, "_validate_batchnorm", lambda self: None)
    if refused is None:
        train(config, blob_manifest, tmp_path / "run")
        assert (tmp_path / "run" / "model.pt").exists()
    else:
        assert "BatchNorm needs more than one value; use a larger patch or a larger labeled batch" in refused
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            train(config, blob_manifest, tmp_path / "run")
