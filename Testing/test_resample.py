"""Model plan: resampling to the model's spacing and back, the ``auto`` spacing rule, ``--spacing``.

Oracles: analytic spheres in physical coordinates (mm), and nearest-neighbour resampling as the
baseline that label resampling must beat.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from DTCCore.config import DTCConfig
from DTCCore.data.resample import needs_resampling, resample_label, resize_linear, target_shape
from DTCCore.errors import DTCError
from DTCCore.evaluation.metrics import evaluate_case
from DTCCore.inference.predict import predict_volume
from DTCCore.planning.spacing import AUTO_MAX_VOXELS, auto_spacing, parse_spacing


def sphere(shape, spacing, centre_mm, radius_mm) -> np.ndarray:
    """bool (X, Y, Z): voxel centres (i * spacing mm, origin 0) within ``radius_mm`` of ``centre_mm``."""
    axes = [np.arange(n) * s for n, s in zip(shape, spacing)]
    grid = np.meshgrid(*axes, indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre_mm)) <= radius_mm**2


def cell_centred(shape, spacing, new_shape):
    """Voxel-centre coordinates (mm) of the model grid that covers the same extent as (shape, spacing)."""
    return [(np.arange(m) + 0.5) * (n * s / m) - 0.5 * s for n, s, m in zip(shape, spacing, new_shape)]


def test_target_shape_and_tolerance():
    assert target_shape((200, 150, 88), (0.625,) * 3, (1.25,) * 3) == (100, 75, 44)
    assert target_shape((3, 3, 3), (1, 1, 1), (10, 10, 10)) == (1, 1, 1)  # never 0 voxels
    assert not needs_resampling((0.625,) * 3, None)
    assert not needs_resampling((1.004, 1.0, 0.996), (1.0, 1.0, 1.0))
    assert needs_resampling((1.0, 1.0, 1.05), (1.0, 1.0, 1.0))
    with pytest.raises(DTCError, match="spacing"):
        target_shape((10, 10, 10), (1, 0, 1), (1, 1, 1))


def test_resize_linear_keeps_a_linear_ramp_and_the_extent():
    # A ramp linear in physical position is reproduced exactly at the model grid's voxel centres
    # (cell-centred convention), away from the clamped border voxels.
    shape, spacing, new_shape = (40, 30, 20), (0.5, 0.5, 1.0), (20, 15, 10)
    x = np.arange(shape[0]) * spacing[0]
    ramp = np.broadcast_to(x[:, None, None], shape).astype(np.float32)
    out = resize_linear(ramp, new_shape)
    centres = cell_centred(shape, spacing, new_shape)[0]
    np.testing.assert_allclose(out[1:-1, 5, 5], centres[1:-1], atol=1e-5)
    assert out.dtype == np.float32 and out.shape == new_shape
    two = resize_linear(np.stack([ramp, 2 * ramp]), new_shape)
    np.testing.assert_allclose(two[1], 2 * two[0], rtol=1e-6)


def test_label_resampling_follows_the_surface_better_than_nearest_neighbour():
    # A sphere seen at 2 mm, brought up to 0.5 mm: through signed distances it is close to the true
    # sphere at 0.5 mm; nearest neighbour gives a blocky surface (the baseline it must beat).
    fine_shape, fine = (96, 96, 96), (0.5, 0.5, 0.5)
    coarse_shape = target_shape(fine_shape, fine, (2.0,) * 3)
    coarse_centres = cell_centred(fine_shape, fine, coarse_shape)
    centre, radius = (23.7, 24.2, 24.9), 11.3
    grid = np.meshgrid(*coarse_centres, indexing="ij")
    coarse = (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2).astype(np.uint8)
    truth = sphere(fine_shape, fine, centre, radius)
    up = resample_label(coarse, (2.0,) * 3, fine_shape, 1) > 0
    nearest_index = [np.minimum(((np.arange(n) + 0.5) * m / n).astype(int), m - 1)
                     for n, m in zip(fine_shape, coarse_shape)]
    nearest = coarse[np.ix_(*nearest_index)] > 0
    dice_sdf = evaluate_case(up, truth, fine)["dice"]
    dice_nn = evaluate_case(nearest, truth, fine)["dice"]
    # Measured when written: 0.961 through signed distances, 0.937 nearest neighbour (a 5.6-voxel radius
    # at 2 mm carries little shape; the margin is what matters).
    assert dice_sdf > 0.955
    assert dice_sdf > dice_nn + 0.015
    assert abs(up.sum() - truth.sum()) / truth.sum() < 0.03  # volume kept within 3 %


def test_multiclass_label_resampling_keeps_each_class():
    shape = (60, 40, 30)
    label = np.zeros(shape, np.uint8)
    label[:30][sphere((30, 40, 30), (1, 1, 1), (15, 20, 15), 9)] = 1
    label[30:][sphere((30, 40, 30), (1, 1, 1), (15, 20, 15), 9)] = 2
    down = resample_label(label, (1, 1, 1), (30, 20, 15), 2)
    assert set(np.unique(down)) == {0, 1, 2}
    assert down[:15].max() == 1 and down[15:].max() == 2  # sides kept
    back = resample_label(down, (2, 2, 2), shape, 2)
    for c in (1, 2):
        assert evaluate_case(back == c, label == c, (1, 1, 1))["dice"] > 0.9


class Bright(nn.Module):
    """Foreground where the input is above halfway between its darkest and brightest voxel (one window:
    the whole volume); records its input shape."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape[2:]))
        centred = x - (x.amax() + x.amin()) / 2
        return 8.0 * centred, -0.01 * centred


def plan_config(spacing=(2.0, 2.0, 2.0)) -> DTCConfig:
    config = DTCConfig()
    config.plan.spacing = spacing
    config.train.patch = (32, 32, 32)
    config.infer.whole_volume = True
    config.validate()
    return config


def test_same_physical_answer_at_two_spacings():
    # The same 12 mm ball scanned at 1.0 mm isotropic and at 0.5 x 0.5 x 1.5 mm: a 2 mm-plan model sees
    # both on (nearly) the same grid, so the physical segmentations agree; outputs are on each input grid.
    centre, radius = (24.3, 23.6, 25.1), 12.0
    results = {}
    for spacing, shape in (((1.0, 1.0, 1.0), (50, 48, 52)), ((0.5, 0.5, 1.5), (100, 96, 34))):
        mask = sphere(shape, spacing, centre, radius)
        image = np.where(mask, 200.0, 100.0).astype(np.float32)
        model = Bright()
        pred = predict_volume(model, image, plan_config(), spacing=spacing)
        assert pred.label.shape == shape and pred.probability.shape == shape and pred.levelset.shape == shape
        assert model.shapes[0] == (32, 32, 32)  # whole volume on the 2 mm grid (25 x 24 x 26 -> padded)
        results[spacing] = (pred.label > 0, mask)
        assert evaluate_case(pred.label > 0, mask, spacing)["dice"] > 0.95
    # Compare physically: both predictions sampled at the 1 mm voxel centres.
    iso, _ = results[(1.0, 1.0, 1.0)]
    aniso, _ = results[(0.5, 0.5, 1.5)]
    idx = np.meshgrid(*[np.minimum(np.round(np.arange(n) * 1.0 / s).astype(int), m - 1)
                        for n, s, m in zip(iso.shape, (0.5, 0.5, 1.5), aniso.shape)], indexing="ij")
    assert evaluate_case(iso, aniso[tuple(idx)], (1, 1, 1))["dice"] > 0.93
    volumes = [results[s][0].sum() * np.prod(s) for s in results]
    assert abs(volumes[0] - volumes[1]) / volumes[0] < 0.05


class Ramp(nn.Module):
    """Voxel by voxel (no neighbours): seg probability ``0.5 + PROBABILITY_SLOPE * x`` (its logit returned) and
    level set ``LEVELSET_SLOPE * x`` of the (z-scored) input x; records the input it saw."""

    PROBABILITY_SLOPE, LEVELSET_SLOPE = 0.12, 0.2  # |x| < 3.5 here: probabilities stay inside (0.08, 0.92)

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        p = 0.5 + self.PROBABILITY_SLOPE * x
        return torch.log(p / (1 - p)), self.LEVELSET_SLOPE * x


def test_outputs_linear_on_the_model_grid_come_back_as_the_analytic_ramp():
    # A scan whose intensity is linear in position, at 1 x 0.5 x 1 mm, for a 2 mm-plan model: the model grid
    # has 2 x 4 x 2 times fewer voxels, its voxel centres all between the scan's, so the model sees exactly the
    # ramp at its own centres (z-scored: mean and standard deviation of those values, computed here). Its
    # outputs, linear in that input, are then linear in position on the model grid, and linear resampling must
    # return them exactly at every scan voxel between the model grid's first and last centres (all but one
    # layer of border voxels): the analytic ramp at the scan's voxel centres. Nearest neighbour would be off by
    # half a model voxel's step (about 4e-3 in probability), far beyond float32 rounding.
    shape, spacing, plan = (40, 48, 28), (1.0, 0.5, 1.0), (2.0, 2.0, 2.0)
    gradient = np.array([1.0, 0.7, -0.4])  # intensity per mm along x, y, z

    def ramp(axes_mm):
        grid = np.meshgrid(*axes_mm, indexing="ij")
        return sum(g * c for g, c in zip(grid, gradient))

    scan_mm = [np.arange(n) * s for n, s in zip(shape, spacing)]
    model_shape = target_shape(shape, spacing, plan)
    assert model_shape == (20, 12, 14)
    model_mm = cell_centred(shape, spacing, model_shape)
    on_model = ramp(model_mm)
    mean, std = on_model.mean(), on_model.std()
    model, config = Ramp(), plan_config(plan)
    config.infer.precision = "fp32"  # float32 arithmetic throughout (bf16 would round to 3 digits)
    pred = predict_volume(model, ramp(scan_mm).astype(np.float32), config, spacing=spacing)
    assert tuple(model.inputs[0].shape[2:]) == (32, 32, 32) and len(model.inputs) == 1  # one padded window
    z = (ramp(scan_mm) - mean) / std  # the z-scored ramp, continued to the scan's voxel centres
    interior = tuple(slice(int(np.searchsorted(a, m[0])), int(np.searchsorted(a, m[-1], side="right")))
                     for a, m in zip(scan_mm, model_mm))
    assert [s.stop - s.start for s in interior] == [38, 44, 26]  # one layer off each face (x, z); y: 2 of 0.5 mm
    np.testing.assert_allclose(pred.probability[interior], (0.5 + Ramp.PROBABILITY_SLOPE * z)[interior], atol=2e-5)
    np.testing.assert_allclose(pred.levelset[interior], (Ramp.LEVELSET_SLOPE * z)[interior], atol=2e-5)


def test_plan_model_needs_the_spacing_and_native_model_ignores_it():
    image = np.random.default_rng(0).normal(100, 10, (20, 20, 20)).astype(np.float32)
    with pytest.raises(DTCError, match="spacing"):
        predict_volume(Bright(), image, plan_config())
    native = DTCConfig()
    native.train.patch = (16, 16, 16)
    model = Bright()
    a = predict_volume(model, image, native, spacing=(0.3, 0.3, 3.0)).label
    b = predict_volume(Bright(), image, native).label
    np.testing.assert_array_equal(a, b)
    assert model.shapes[0] == (16, 16, 16)


def test_plan_with_roi_predicts_only_inside():
    image = np.full((40, 40, 40), 100.0, np.float32)
    image[10:30, 10:30, 10:30] = 200.0
    roi = (slice(5, 35), slice(5, 35), slice(5, 35))
    pred = predict_volume(Bright(), image, plan_config(), roi=roi, spacing=(1.0, 1.0, 1.0))
    assert pred.label[:5].sum() == 0 and pred.label[35:].sum() == 0
    assert evaluate_case(pred.label > 0, image > 150, (1, 1, 1))["dice"] > 0.95


def test_auto_spacing_rule():
    # LA-like: 0.625 mm isotropic, about 190 x 145 x 88 voxels: coarsened isotropically to the budget.
    spacings = [(0.625,) * 3] * 5
    shapes = [(190, 145, 88), (180, 140, 88), (200, 150, 88), (170, 132, 88), (244, 160, 88)]
    s = auto_spacing(spacings, shapes)
    assert s[0] == s[1] == s[2] and s[0] > 0.625
    extent = np.median(np.asarray(shapes) * 0.625, axis=0)
    assert np.prod(np.round(extent / np.asarray(s))) <= AUTO_MAX_VOXELS
    assert np.prod(np.round(extent / (np.asarray(s) / 1.03))) > AUTO_MAX_VOXELS  # the coarsest needed, no more
    # Thick slices (1 x 1 x 6 mm): z is left alone until the in-plane spacing reaches half of it.
    s = auto_spacing([(1.0, 1.0, 6.0)], [(512, 512, 20)], max_voxels=1_000_000)
    assert s[2] == 6.0 and s[0] == s[1] and 1.0 < s[0] < 3.0
    # Small scans are used at their median spacing, never finer.
    assert auto_spacing([(0.8, 0.8, 0.8)], [(30, 30, 30)]) == (0.8, 0.8, 0.8)


def test_parse_spacing():
    assert parse_spacing(["native"]) is None
    assert parse_spacing(["AUTO"]) == "auto"
    assert parse_spacing(["1.5"]) == (1.5, 1.5, 1.5)
    assert parse_spacing(["1", "1", "2.5"]) == (1.0, 1.0, 2.5)
    for bad in (["fast"], ["1", "2"], ["0"], ["-1", "1", "1"]):
        with pytest.raises(DTCError, match="--spacing"):
            parse_spacing(bad)


def test_config_rejects_a_bad_plan():
    config = DTCConfig()
    config.plan.spacing = (1.0, 0.0, 1.0)
    with pytest.raises(DTCError, match="spacing"):
        config.validate()
    with pytest.raises(DTCError, match="normalization"):
        DTCConfig.from_dict({"plan": {"normalization": "minmax"}})
    assert DTCConfig.from_dict({"plan": {"spacing": [1.5, 1.5, 1.5]}}).plan.spacing == (1.5, 1.5, 1.5)


def test_resize_linear_leaves_torch_threads_and_grad_mode_as_they_were():
    # resize_linear runs under no_grad and must not leave autograd disabled for the caller, nor change the
    # caller's torch thread count (the engine sets it once from --threads). Threads set to an unusual count
    # first, so that a resampler resetting them to its own default (1, or the core count) is seen.
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        resize_linear(np.zeros((4, 4, 4), np.float32), (2, 2, 2))
        assert torch.is_grad_enabled()
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_cli_segment_with_a_plan_model_keeps_the_input_grid(tmp_path):
    # A tiny random plan model (2 mm grid) on an oblique, anisotropic, off-origin scan: every output has
    # exactly the input's size, spacing, origin and direction, and the first line names the model's grid.
    import subprocess
    import sys

    import SimpleITK as sitk

    from conftest import tiny_config, write_volume
    from DTCCore.model.checkpoint import save_checkpoint
    from DTCCore.model.network import build_network

    config = tiny_config()
    config.plan.spacing = (2.0, 2.0, 2.0)
    torch.manual_seed(0)
    model_file = save_checkpoint(tmp_path / "plan.pt", build_network(config.network).eval(), None, 0, config, {})
    c, s = np.cos(0.3), np.sin(0.3)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    image = np.random.default_rng(1).normal(100, 20, (45, 38, 21)).astype(np.float32)
    scan = write_volume(tmp_path / "scan.nrrd", image, spacing=(0.7, 0.8, 1.9), origin=(-12.5, 30.0, 7.25),
                        direction=direction)
    out = subprocess.run([sys.executable, "-m", "DTCCore", "segment", str(scan), "-o", str(tmp_path / "out"),
                          "--model", str(model_file), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "grid 2x2x2 mm" in out.stderr.splitlines()[0]
    ref = sitk.ReadImage(str(scan))
    for kind in ("seg", "levelset", "disagreement"):
        img = sitk.ReadImage(str(tmp_path / "out" / f"scan_{kind}.nrrd"))
        assert img.GetSize() == ref.GetSize()
        np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
