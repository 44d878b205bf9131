"""The 2-D plan (``dtc train --dims 2|auto``): in-plane network, per-slice level set, slice-by-slice inference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import write_volume
from DTCCore.cli import main
from DTCCore.config import DTCConfig
from DTCCore.errors import DTCError
from DTCCore.model.levelset import signed_distance_slices
from DTCCore.model.network import DualTaskVNet, build_network
from DTCCore.planning.dims import SLICE_ANISOTROPY, auto_dims, check_slice_axis, model_grid

THICK = (1.5, 1.5, 8.0)  # mm: a short-axis cardiac cine grid (pixels 1.3-1.9 mm, slices 5-10 mm apart)
_C, _S = math.cos(0.4), math.sin(0.4)
ROTATED_IN_PLANE = (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0)  # a rotation about z (slices stay slices)
ORIGIN = (-40.25, 12.5, 3.0)


@pytest.mark.parametrize("spacing, expected", [
    ((1.0, 1.0, 1.0), 3), ((0.625, 0.625, 0.625), 3),
    ((1.5, 1.5, 4.5), 3),  # exactly 3x: not more than the threshold
    ((1.5, 1.5, 4.51), 2), ((1.5, 1.5, 10.0), 2), ((1.3, 1.9, 5.8), 2), ((1.3, 1.9, 5.6), 3),
    ((10.0, 1.5, 1.5), 3), ((1.5, 10.0, 1.5), 3),  # the thick axis is in the plane: not a 2-D model's slices
])
def test_auto_dims_is_two_exactly_when_the_slices_are_more_than_3x_the_pixels(spacing, expected):
    assert SLICE_ANISOTROPY == 3.0
    assert auto_dims(spacing) == expected


def test_a_2d_network_sees_each_slice_alone_and_equals_a_per_slice_loop():
    """Oracle: the same network run on one slice at a time (a naive loop over z)."""
    torch.manual_seed(0)
    net = DualTaskVNet(base_filters=2, num_classes=2, pools=(4, 4, 0), dims=2).eval()
    assert net.size_multiples == (16, 16, 1)
    x = torch.randn(2, 1, 32, 16, 5)
    with torch.no_grad():
        seg, lsf = net(x)
        assert seg.shape == (2, 3, 32, 16, 5) and lsf.shape == (2, 2, 32, 16, 5)
        for k in range(5):
            s, level = net(x[..., k:k + 1])
            assert torch.allclose(seg[..., k:k + 1], s, atol=1e-6)
            assert torch.allclose(lsf[..., k:k + 1], level, atol=1e-6)
        changed = x.clone()
        changed[..., [0, 1, 3, 4]] = torch.randn(2, 1, 32, 16, 4)  # every slice but slice 2
        seg2, _ = net(changed)
    assert torch.allclose(seg2[..., 2], seg[..., 2], atol=1e-6)
    assert not torch.allclose(seg2[..., 1], seg[..., 1])
    assert all(m.weight.dim() <= 4 for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
    assert not any(isinstance(m, (torch.nn.Conv3d, torch.nn.BatchNorm3d)) for m in net.modules())


def test_folded_batchnorm_of_a_2d_network_gives_the_same_outputs():
    from DTCCore.model.batchnorm import fold_batchnorm

    torch.manual_seed(1)
    net = DualTaskVNet(base_filters=4, pools=(4, 4, 0), dims=2)
    net.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics that are not the identity
            net(torch.randn(2, 1, 32, 32, 3) * 3 + 1)
    net.eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 1, 32, 32, 4)
    with torch.no_grad():
        for a, b in zip(net(x), folded(x)):
            assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())


def test_2d_network_refuses_pooling_the_slice_axis():
    with pytest.raises(DTCError, match="does not pool the slice axis"):
        DualTaskVNet(pools=(4, 4, 1), dims=2)
    config = DTCConfig()
    config.network.dims = 2
    with pytest.raises(DTCError, match="use pools PX PY 0"):
        config.validate()
    config.network.pools = (4, 4, 0)
    config.validate()
    config.recipe.sdf_normalization = "patch"
    with pytest.raises(DTCError, match="no 2-D form"):
        config.validate()
    config.network.dims = 4
    with pytest.raises(DTCError, match="use 2 .* or 3"):
        config.validate()


def _naive_planar_sdf(mask: np.ndarray, spacing) -> np.ndarray:
    """Brute force: in each z-slice, the mm distance of every pixel to the nearest pixel of the other side,
    inner boundary (4-neighbour) 0, each side divided by its maximum in the slice."""
    out = np.empty(mask.shape, np.float64)
    sx, sy = spacing[:2]
    for k in range(mask.shape[2]):
        m = mask[:, :, k]
        if not m.any() or m.all():
            out[:, :, k] = 1.0 if not m.any() else -1.0
            continue
        inside, outside = np.argwhere(m), np.argwhere(~m)
        dist = np.zeros(m.shape)
        for (i, j) in np.ndindex(m.shape):
            other = outside if m[i, j] else inside
            dist[i, j] = np.sqrt(((other[:, 0] - i) * sx) ** 2 + ((other[:, 1] - j) * sy) ** 2).min()
        pos, neg = np.where(m, dist, 0.0), np.where(m, 0.0, dist)
        sdf = neg / neg.max() - pos / pos.max()
        padded = np.pad(m, 1, mode="edge")  # the image border is not background
        boundary = m & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
        sdf[boundary] = 0.0
        out[:, :, k] = sdf
    return out


def test_planar_level_set_is_each_slices_own_signed_distance_in_mm():
    rng = np.random.default_rng(3)
    mask = np.zeros((14, 11, 4), bool)
    mask[3:10, 2:8, 0] = True  # a box
    mask[:, :, 1] = rng.random((14, 11)) > 0.6  # scattered pixels
    mask[:, :, 3] = True  # a full slice; slice 2 stays empty
    spacing = (1.5, 0.75, 9.0)
    got = signed_distance_slices(mask, spacing)
    assert got.dtype == np.float32 and got.shape == mask.shape
    assert np.allclose(got, _naive_planar_sdf(mask, spacing), atol=1e-6)
    assert np.all(got[:, :, 2] == 1.0) and np.all(got[:, :, 3] == -1.0)
    # in-plane: a slice's target does not change with its neighbours (a 3-D distance would)
    alone = signed_distance_slices(mask[:, :, :1], spacing)
    assert np.array_equal(alone[:, :, 0], got[:, :, 0])


def test_a_2d_model_keeps_the_scans_slices_and_refuses_a_scan_sliced_across():
    assert model_grid((1.5, 1.5, 1.5), (1.2, 1.2, 8.0), 2) == (1.5, 1.5, 8.0)
    assert model_grid((1.5, 1.5, 1.5), (1.2, 1.2, 8.0), 3) == (1.5, 1.5, 1.5)
    assert model_grid(None, (1.2, 1.2, 8.0), 2) is None
    check_slice_axis((1.5, 1.5, 8.0))
    check_slice_axis((1.0, 1.0, 1.0))
    with pytest.raises(DTCError, match="coarse axis is x .*Reorient"):
        check_slice_axis((8.0, 1.5, 1.5))


def _thick_case(rng: np.random.Generator, shape=(48, 40, 7)) -> tuple[np.ndarray, np.ndarray]:
    """A bright elliptic cylinder whose cross-section changes from slice to slice, on noise: (image, label)."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    label = np.zeros(shape, np.uint8)
    cx, cy = rng.uniform(0.4, 0.6) * shape[0], rng.uniform(0.4, 0.6) * shape[1]
    for k in range(1, shape[2] - 1):
        rx, ry = rng.uniform(6, 11), rng.uniform(5, 9)
        label[:, :, k] = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
    image = 100.0 + 70.0 * label + rng.normal(0, 10.0, shape)
    return image.astype(np.float32), label


def test_a_thick_slice_volume_trains_and_segments_in_2d_with_its_geometry(tmp_path, capsys):
    rng = np.random.default_rng(11)
    data = tmp_path / "data"
    labeled, unlabeled = [], []
    for i in range(3):
        image, label = _thick_case(rng)
        write_volume(data / f"c{i}.nrrd", image, THICK, ORIGIN, ROTATED_IN_PLANE)
        if i < 2:
            write_volume(data / f"c{i}_label.nrrd", label, THICK, ORIGIN, ROTATED_IN_PLANE)
            labeled.append({"image": f"c{i}.nrrd", "label": f"c{i}_label.nrrd"})
        else:
            unlabeled.append(f"c{i}.nrrd")
    manifest = data / "manifest.json"
    manifest.write_text(json.dumps({"labeled": labeled, "unlabeled": unlabeled}))
    run = tmp_path / "run"
    assert main(["train", str(manifest), "-o", str(run), "--dims", "auto", "--iterations", "3",
                 "--base-filters", "2", "--patch", "32", "32", "2", "--workers", "0", "--device", "cpu",
                 "--jsonl"]) == 0
    config = DTCConfig.load(run / "config.json")
    assert config.network.dims == 2 and tuple(config.network.pools) == (4, 4, 0)  # auto: 8 mm > 3 x 1.5 mm
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "done"
    model = run / "model.pt"

    assert main(["info", str(model)]) == 0
    info = json.loads(capsys.readouterr().out.splitlines()[0])
    assert info["plan"]["dims"] == 2 and info["plan"]["pools"] == [4, 4, 0]

    from DTCCore.model.checkpoint import load_model

    net, _ = load_model(model)
    assert isinstance(net, DualTaskVNet) and net.dims == 2

    scan = data / "c2.nrrd"
    out = tmp_path / "out"
    assert main(["segment", str(scan), "-o", str(out), "--model", str(model), "--device", "cpu"]) == 0
    assert "2-D model, slice by slice; each scan's own grid, windows 32x32x2" in capsys.readouterr().err
    ref = sitk.ReadImage(str(scan))
    for kind in ("seg", "levelset", "disagreement"):
        result = sitk.ReadImage(str(out / f"c2_{kind}.nrrd"))
        assert result.GetSize() == ref.GetSize() and result.GetSpacing() == ref.GetSpacing()
        assert result.GetOrigin() == ref.GetOrigin() and result.GetDirection() == ref.GetDirection()

    # a scan whose thick axis is x: refused with what to do, nothing written
    image, _ = _thick_case(rng)
    sideways = write_volume(tmp_path / "sideways.nrrd", image.transpose(2, 1, 0), (8.0, 1.5, 1.5))
    capsys.readouterr()
    assert main(["segment", str(sideways), "-o", str(tmp_path / "o2"), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert "coarse axis is x" in err and "3-D model" in err
    assert not any((tmp_path / "o2").glob("*_seg*"))


def test_a_2d_model_with_a_plan_spacing_resamples_the_plane_only(tmp_path):
    """On a scan of 12 slices 8 mm apart, a 2-D model of plan 2 x 2 x 2 mm predicts 12 slices (the window sees
    the scan's own slices), and the result is on the scan's grid."""
    from DTCCore.inference.predict import predict_volume

    config = DTCConfig()
    config.network.dims, config.network.pools, config.network.base_filters = 2, (4, 4, 0), 2
    config.train.patch = (32, 32, 4)
    config.plan.spacing = (2.0, 2.0, 2.0)
    config.validate()
    torch.manual_seed(0)
    model = build_network(config.network).eval()
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    image = np.random.default_rng(0).normal(size=(40, 30, 12)).astype(np.float32)
    pred = predict_volume(model, image, config, spacing=(1.0, 1.0, 8.0))
    assert pred.label.shape == image.shape and pred.levelset.shape == image.shape
    assert seen and all(s[-1] == 4 for s in seen)  # windows of 4 slices, no resampling along z
    assert sum(s[0] for s in seen) == 3  # 20 x 15 voxels at 2 mm fit one window in-plane; 12 slices / 4: no z overlap
