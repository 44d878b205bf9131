"""Thick-slice networks: ``NetworkConfig.pools`` (how many downsamplings halve each axis) from the rule
through the network, the config, checkpoints, inference and ``dtc train --pools`` (parameter counts:
test_network.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_blob_dataset, tiny_config, write_volume
from DTCCore.config import DTCConfig
from DTCCore.errors import DTCError
from DTCCore.inference.predict import predict_volume
from DTCCore.inference.sliding_window import whole_volume_patch
from DTCCore.model.checkpoint import load_model, save_checkpoint
from DTCCore.model.network import DualTaskVNet, build_network
from DTCCore.planning.pools import auto_pools, check_patch, check_pools, fit_patch, size_multiples, stage_strides


def _naive_auto_pools(spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """nnU-Net's rule written out stage by stage, independent of pools.auto_pools: a stage halves
    exactly the axes whose spacing is less than 2x the finest one."""
    pools, current = [0, 0, 0], list(spacing)
    for _stage in range(4):
        pooled = [axis for axis in range(3) if current[axis] / min(current) < 2.0]
        for axis in pooled:
            pools[axis], current[axis] = pools[axis] + 1, current[axis] * 2
    return pools[0], pools[1], pools[2]


@pytest.mark.parametrize("spacing,expected", [
    ((1.0, 1.0, 1.0), (4, 4, 4)),  # isotropic: the reference network
    ((1.5, 1.5, 10.0), (4, 4, 2)),  # 10 mm slices: in-plane only until 6 mm pixels, then all axes
    ((2.0, 2.0, 5.0), (4, 4, 3)),
    ((0.7, 0.7, 3.0), (4, 4, 2)),
    ((5.0, 1.0, 1.0), (2, 4, 4)),  # the coarse axis need not be z
    ((1.0, 1.0, 2.0), (4, 4, 3)),  # exactly 2x: waits one stage (nnU-Net's threshold is strict)
    ((1.0, 1.0, 1.9), (4, 4, 4)),
])
def test_auto_pools_follows_nnunets_rule(spacing, expected):
    assert auto_pools(spacing) == expected == _naive_auto_pools(spacing)


def test_stage_strides_pool_a_thick_axis_last():
    assert stage_strides((4, 4, 4)) == [(2, 2, 2)] * 4
    assert stage_strides((4, 4, 2)) == [(2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2)]
    assert stage_strides((3, 4, 0)) == [(1, 2, 1), (2, 2, 1), (2, 2, 1), (2, 2, 1)]
    assert size_multiples((4, 4, 2)) == (16, 16, 4)
    for bad in [(5, 4, 4), (4, 4), (4, 4, -1), (4, 4, 1.5), (True, 4, 4)]:
        with pytest.raises(DTCError, match="pools"):
            check_pools(bad)


def test_thick_slice_network_shapes_and_strides():
    torch.manual_seed(0)
    model = DualTaskVNet(num_classes=3, base_filters=2, pools=(4, 4, 2)).eval()
    assert model.block_one_dw[0].stride == (2, 2, 1) and model.block_one_dw[0].kernel_size == (2, 2, 1)
    assert model.block_four_dw[0].stride == (2, 2, 2)
    assert isinstance(model.block_eight_up[0], nn.ConvTranspose3d) and model.block_eight_up[0].stride == (2, 2, 1)
    seg, lsf = model(torch.randn(1, 1, 32, 16, 4))  # 4 slices: too thin for the reference network
    assert seg.shape == (1, 4, 32, 16, 4) and lsf.shape == (1, 3, 32, 16, 4)
    with pytest.raises(DTCError, match=r"multiple of 16 x 16 x 4 \(x, y, z\)"):
        model(torch.randn(1, 1, 32, 16, 6))
    with pytest.raises(DTCError, match="is not a multiple of 16; "):
        DualTaskVNet(base_filters=2)(torch.randn(1, 1, 32, 16, 4))


def test_config_checks_the_patch_against_the_pools():
    config = tiny_config()
    config.train.patch = (32, 32, 8)
    with pytest.raises(DTCError, match="network.pools"):
        config.validate()
    config.network.pools = (4, 4, 3)
    config.validate()
    assert DTCConfig.from_dict(config.to_dict()).network.pools == (4, 4, 3)
    old = DTCConfig().to_dict()
    del old["network"]["pools"]  # a model saved before pools existed is the reference network
    assert DTCConfig.from_dict(old).network.pools == (4, 4, 4)
    with pytest.raises(DTCError, match="pools"):
        DTCConfig.from_dict({"network": {"pools": [4, 4, 5]}})


def test_patch_errors_suggest_the_nearest_sizes_that_fit():
    # Oracle: every size from 1 to 40 is checked against "a positive multiple of 2**p", and a suggestion
    # must be the largest fitting size below and the smallest above (searched by counting, not dividing).
    for pools in [(4, 4, 4), (4, 4, 3), (4, 4, 2), (4, 4, 0)]:
        multiple = 2 ** pools[2]
        for z in range(1, 41):
            fits = z >= multiple and z % multiple == 0
            if fits:
                check_patch((32, 16, z), pools)
                continue
            below = max((v for v in range(1, z) if v % multiple == 0), default=None)
            above = min(v for v in range(z + 1, z + 2 * multiple) if v % multiple == 0)
            hint = f"z {z}: use {below} or {above}" if below else f"z {z}: use {above}"
            with pytest.raises(DTCError, match=f"; {hint}$"):
                check_patch((32, 16, z), pools, where="the panel")
    with pytest.raises(DTCError, match=r"x 100: use 96 or 112, z 6: use 8$"):
        check_patch((100, 112, 6), (4, 4, 3))
    two_sizes = r"must be 3 sizes.*\(the VNet halves axis x, y, z 4, 4, 4 times; network.pools\)$"
    with pytest.raises(DTCError, match=two_sizes):
        check_patch((16, 16), (4, 4, 4))


def test_fit_patch_cuts_each_axis_to_the_largest_scan():
    # Oracle: the smallest size that fits the network (a multiple of 2**p, counted up) and covers the scan,
    # unless the asked size is smaller.
    for pools in [(4, 4, 4), (4, 4, 2), (3, 4, 0)]:
        for largest in [(22, 20, 18), (200, 180, 9), (16, 1, 4), (5, 300, 33)]:
            asked = (112, 112, 80)
            got = fit_patch(asked, pools, largest)
            for p, a, n, got_axis in zip(pools, asked, largest, got):
                covering = next(v for v in range(2 ** p, 10_000) if v % 2 ** p == 0 and v >= n)
                assert got_axis == min(a, covering)
            check_patch(got, pools)  # always a size the network takes


def test_whole_volume_patch_rounds_each_axis_to_its_multiple():
    for shape in [(40, 36, 5), (17, 64, 3), (16, 16, 4)]:
        for patch, multiples in [((32, 32, 4), (16, 16, 4)), ((16, 16, 16), (16, 16, 16))]:
            got = whole_volume_patch(shape, patch, multiples)
            for d, p, m, g in zip(shape, patch, multiples, got):  # the smallest multiple >= d and >= p
                assert g == min(v for v in range(m, 4 * max(d, p) + m, m) if v >= d and v >= p)


def test_checkpoint_and_inference_keep_a_thick_slice_model(tmp_path):
    config = tiny_config()
    config.network.pools, config.train.patch, config.network.num_classes = (4, 4, 2), (32, 32, 4), 2
    torch.manual_seed(1)
    model = build_network(config.network).eval()
    path = save_checkpoint(tmp_path / "thick.pt", model, None, 0, config, {})
    loaded, loaded_config = load_model(path)
    assert loaded_config.network.pools == (4, 4, 2)
    x = torch.randn(1, 1, 32, 32, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[0], model(x)[0], atol=1e-3)  # fp16 storage
    image = np.random.default_rng(0).normal(size=(40, 36, 5)).astype(np.float32)  # 5 slices
    for whole in (False, True):
        loaded_config.infer.whole_volume = whole
        pred = predict_volume(loaded, image, loaded_config)
        assert pred.label.shape == image.shape and pred.probability.shape == (3, *image.shape)
        assert pred.levelset.shape == (2, *image.shape)


def test_cli_pools_numbers_and_auto(tmp_path):
    from DTCCore.cli import build_parser
    from DTCCore.cli.train import build_config

    manifest = make_blob_dataset(tmp_path, n_labeled=2, n_unlabeled=1)
    data = json.loads(manifest.read_text())
    for i, pair in enumerate(data["labeled"]):  # thick slices: 0.8 x 0.8 x 4 mm
        image = np.zeros((40, 36, 24), np.float32)
        write_volume(tmp_path / pair["image"], image, spacing=(0.8, 0.8, 4.0))
        write_volume(tmp_path / pair["label"], image.astype(np.uint8), spacing=(0.8, 0.8, 4.0))
    write_volume(tmp_path / data["unlabeled"][0], np.zeros((40, 36, 24), np.float32), spacing=(0.8, 0.8, 4.0))
    parser = build_parser()

    def config(*extra: str) -> DTCConfig:
        return build_config(parser.parse_args(["train", str(manifest), "-o", "run", *extra]))

    assert config().network.pools == (4, 4, 4)
    assert config("--pools", "4", "4", "2", "--patch", "64", "64", "8").network.pools == (4, 4, 2)
    assert config("--pools", "auto").network.pools == auto_pools((0.8, 0.8, 4.0)) == (4, 4, 2)
    assert config("--pools", "auto", "--spacing", "2", "2", "3").network.pools == (4, 4, 4)
    with pytest.raises(DTCError, match="--pools"):
        config("--pools", "4", "4")
    with pytest.raises(DTCError, match=r"each a multiple of 16 x 16 x 8 \(x, y, z\)"):
        config("--pools", "4", "4", "3", "--patch", "64", "64", "12")
