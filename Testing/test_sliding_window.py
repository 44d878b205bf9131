"""Sliding-window inference against an independent naive loop, the reference window formula and MONAI's map.

``sliding_window`` blends the model's raw outputs (as MONAI's does); ``predict_volume`` gets probabilities
by wrapping the network in ``ProbabilityOutputs`` (the activation per window). Both are checked here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from DTCCore.inference.predict import ProbabilityOutputs
from DTCCore.inference.sliding_window import crop_to_image, importance_map, place_windows, sliding_window, window_starts
from DTCCore.model.network import foreground_probability, seg_probability


class ConvDual(nn.Module):
    """Small conv net with position-dependent window outputs (zero padding at window edges)."""

    def __init__(self, c_in: int = 1, seg_channels: int = 1, lsf_channels: int = 1, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.seg_channels = seg_channels
        self.conv = nn.Conv3d(c_in, 4, 3, padding=1)
        self.head = nn.Conv3d(4, seg_channels + lsf_channels, 3, padding=1)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(x.shape[0])
        out = self.head(torch.relu(self.conv(x)))
        return out[:, : self.seg_channels], torch.tanh(out[:, self.seg_channels :])


def naive_sliding_window(model, image, patch, stride, weight=None, activation=True):
    """Oracle: pad, run each window alone, average probabilities (``activation``: sigmoid for one channel,
    else softmax; else the raw outputs) with counts (or with ``weight``, an array of the patch shape, per
    window voxel), crop. Written independently."""
    weight = np.ones(tuple(patch)) if weight is None else np.asarray(weight, dtype=np.float64)
    n, _, *size = image.shape
    pad_before, pad_after = [], []
    for d, p in zip(size, patch):
        extra = max(p - d, 0)
        pad_before.append(extra // 2)
        pad_after.append(extra - extra // 2)
    img = np.pad(image.numpy(), [(0, 0), (0, 0)] + list(zip(pad_before, pad_after)))
    padded = img.shape[2:]
    # Window starts: every multiple of the stride that fits, plus one window flush with the far edge.
    starts = []
    for d, p, s in zip(padded, patch, stride):
        axis = list(range(0, d - p, s)) + [d - p]
        starts.append(axis)
    seg_sum = seg_cnt = lsf_sum = None
    model.eval()
    with torch.no_grad():
        for b in range(n):
            for x in starts[0]:
                for y in starts[1]:
                    for z in starts[2]:
                        win = torch.from_numpy(img[b : b + 1, :, x : x + patch[0], y : y + patch[1], z : z + patch[2]])
                        seg, lsf = model(win)
                        if activation:
                            seg = torch.sigmoid(seg) if seg.shape[1] == 1 else torch.softmax(seg, 1)
                        if seg_sum is None:
                            seg_sum = np.zeros((n, seg.shape[1]) + padded)
                            lsf_sum = np.zeros((n, lsf.shape[1]) + padded)
                            seg_cnt = np.zeros((n, 1) + padded)
                        box = (b, slice(None), slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
                        seg_sum[box] += seg[0].numpy() * weight
                        lsf_sum[box] += lsf[0].numpy() * weight
                        seg_cnt[box] += weight
    crop = (slice(None), slice(None)) + tuple(slice(a, a + d) for a, d in zip(pad_before, size))
    return (seg_sum / seg_cnt)[crop], (lsf_sum / seg_cnt)[crop]


CASES = [
    # size, patch, stride (None -> from overlap 0.5), n, c_in, seg channels, lsf channels
    ((20, 17, 9), (8, 8, 8), None, 1, 1, 1, 1),  # not divisible by the stride
    ((5, 12, 7), (8, 8, 8), None, 1, 1, 1, 1),  # smaller than the patch along x and z
    ((13, 11, 10), (8, 6, 4), (3, 5, 2), 2, 2, 1, 1),  # explicit stride, batch of 2, 2 input channels
    ((9, 3, 14), (6, 6, 6), (4, 4, 5), 1, 1, 3, 2),  # multi-class softmax, y smaller than the patch
]


@pytest.mark.parametrize("size,patch,stride,n,c_in,cs,cl", CASES)
def test_uniform_blend_equals_naive_loop(size, patch, stride, n, c_in, cs, cl):
    gen = torch.Generator().manual_seed(sum(size))
    image = torch.randn((n, c_in) + size, generator=gen)
    model = ConvDual(c_in, cs, cl, seed=len(size) + cs)
    expected_stride = stride or tuple(max(1, int(p * 0.5)) for p in patch)
    want_seg, want_lsf = naive_sliding_window(model, image, patch, expected_stride)
    seg, lsf = sliding_window(ProbabilityOutputs(model), image, patch, stride=stride, overlap=0.5, blend="uniform",
                              batch_windows=3)
    assert seg.shape == (n, cs) + size and lsf.shape == (n, cl) + size
    assert seg.dtype == torch.float32 and lsf.dtype == torch.float32
    np.testing.assert_allclose(seg.numpy(), want_seg, atol=1e-5)
    np.testing.assert_allclose(lsf.numpy(), want_lsf, atol=1e-5)
    if cs > 1:
        np.testing.assert_allclose(seg.sum(1).numpy(), 1.0, atol=1e-5)
    # The bare model: its raw outputs (logits) are blended, no activation.
    raw_seg, raw_lsf = naive_sliding_window(model, image, patch, expected_stride, activation=False)
    seg, lsf = sliding_window(model, image, patch, stride=stride, overlap=0.5, blend="uniform", batch_windows=3)
    np.testing.assert_allclose(seg.numpy(), raw_seg, atol=1e-5)
    np.testing.assert_allclose(lsf.numpy(), raw_lsf, atol=1e-5)
    assert np.abs(raw_seg - want_seg).max() > 0.1  # the two spaces really differ


def gaussian_weights(patch):
    """The documented map, written out: per axis exp(-d^2 / (2 sigma^2)) with d the distance from the window
    centre (p - 1) / 2 and sigma = p / 8; the product over the axes, divided by its maximum, floored at 1e-3."""
    axes = []
    for p in patch:
        d = np.arange(p) - (p - 1) / 2.0
        axes.append(np.exp(-(d**2) / (2.0 * (p / 8.0) ** 2)))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(w / w.max(), 1e-3)


class WindowContrast(nn.Module):
    """Per-voxel output minus the window's own mean, scaled: every window sees a voxel differently, so a
    blend's weights show in the result (a constant model hides them: any positive weights reproduce it)."""

    def __init__(self, seg_channels: int = 1) -> None:
        super().__init__()
        self.seg_channels = seg_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = x[:, :1]
        contrast = 4.0 * (v - v.mean(dim=(2, 3, 4), keepdim=True))
        seg = torch.cat([contrast * (c + 1) for c in range(self.seg_channels)], dim=1)
        return seg, torch.tanh(contrast)


GAUSSIAN_CASES = [
    # size, patch, stride, seg channels, model
    ((20, 17, 9), (8, 8, 8), (4, 4, 4), 1, "contrast"),
    ((13, 11, 10), (8, 6, 4), (3, 5, 2), 1, "conv"),  # non-cubic patch, odd strides
    ((5, 12, 14), (8, 8, 6), (4, 3, 5), 3, "contrast"),  # padded along x, multi-class softmax
]


@pytest.mark.parametrize("size,patch,stride,cs,kind", GAUSSIAN_CASES)
def test_gaussian_blend_equals_naive_gaussian_loop(size, patch, stride, cs, kind):
    image = torch.randn((1, 1) + size, generator=torch.Generator().manual_seed(sum(size) + cs))
    model = WindowContrast(cs) if kind == "contrast" else ConvDual(1, cs, 1, seed=4)
    weight = gaussian_weights(patch)
    np.testing.assert_allclose(importance_map(patch, "gaussian").numpy(), weight, rtol=1e-5)
    want_seg, want_lsf = naive_sliding_window(model, image, patch, stride, weight)
    seg, lsf = sliding_window(ProbabilityOutputs(model), image, patch, stride=stride, blend="gaussian", batch_windows=2)
    np.testing.assert_allclose(seg.numpy(), want_seg, atol=1e-5)
    np.testing.assert_allclose(lsf.numpy(), want_lsf, atol=1e-5)
    raw_seg, raw_lsf = naive_sliding_window(model, image, patch, stride, weight, activation=False)
    seg, lsf = sliding_window(model, image, patch, stride=stride, blend="gaussian", batch_windows=2)
    np.testing.assert_allclose(seg.numpy(), raw_seg, atol=1e-5)
    np.testing.assert_allclose(lsf.numpy(), raw_lsf, atol=1e-5)
    # The case is sensitive to the weights: the plain average differs from the Gaussian blend.
    flat_seg, flat_lsf = naive_sliding_window(model, image, patch, stride)
    assert np.abs(flat_seg - want_seg).max() > 1e-2 and np.abs(flat_lsf - want_lsf).max() > 1e-2


def test_batch_windows_do_not_change_the_result():
    image = torch.randn(1, 1, 14, 11, 9, generator=torch.Generator().manual_seed(3))
    model = ConvDual(seed=5)
    one = sliding_window(model, image, (8, 8, 8), blend="gaussian", batch_windows=1)
    model.calls.clear()
    three = sliding_window(model, image, (8, 8, 8), blend="gaussian", batch_windows=3)
    assert max(model.calls) == 3  # several windows per forward pass, never more than asked
    for a, b in zip(one, three):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)


class ConstantDual(nn.Module):
    def __init__(self, logit: float, level: float) -> None:
        super().__init__()
        self.logit, self.level = logit, level

    def forward(self, x):
        shape = (x.shape[0], 1) + tuple(x.shape[2:])
        return torch.full(shape, self.logit), torch.full(shape, self.level)


@pytest.mark.parametrize("size", [(19, 13, 10), (4, 30, 7)])
def test_gaussian_blend_of_constant_output_is_that_constant(size):
    image = torch.randn((1, 1) + size)
    seg, lsf = sliding_window(ConstantDual(0.7, -0.25), image, (8, 8, 8), overlap=0.6, blend="gaussian")
    np.testing.assert_allclose(seg.numpy(), 0.7, rtol=1e-6)  # the raw output, no activation
    np.testing.assert_allclose(lsf.numpy(), -0.25, rtol=1e-6)
    seg, lsf = sliding_window(ProbabilityOutputs(ConstantDual(0.7, -0.25)), image, (8, 8, 8), overlap=0.6,
                              blend="gaussian")
    np.testing.assert_allclose(seg.numpy(), 1.0 / (1.0 + math.exp(-0.7)), rtol=1e-6)
    np.testing.assert_allclose(lsf.numpy(), -0.25, rtol=1e-6)


def test_window_count_matches_reference_formula():
    # The reference's test on a whole LA MRI 576x576x88, patch 112x112x80, stride 18x18x4: 2,187 windows.
    counts = [len(window_starts(d, p, s)) for d, p, s in zip((576, 576, 88), (112, 112, 80), (18, 18, 4))]
    assert counts == [27, 27, 3] and math.prod(counts) == 2187
    assert window_starts(88, 80, 4)[-1] == 8  # last window flush with the far edge

    size, patch, stride = (23, 9, 16), (8, 8, 8), (5, 3, 8)
    expected = math.prod(math.ceil((d - p) / s) + 1 for d, p, s in zip(size, patch, stride))
    model = ConvDual()
    events = []
    sliding_window(model, torch.randn((2, 1) + size), patch, stride=stride, batch_windows=4,
                   progress=lambda done, total: events.append((done, total)))
    assert sum(model.calls) == 2 * expected  # every window of both batch items, once
    assert max(model.calls) <= 4
    assert events[-1] == (2 * expected, 2 * expected)
    assert [d for d, _ in events] == sorted(d for d, _ in events)


def test_gaussian_importance_map_matches_monai():
    from monai.data.utils import compute_importance_map

    patch = (12, 9, 16)
    ours = importance_map(patch, "gaussian")
    theirs = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125)
    theirs = theirs / theirs.max()  # MONAI floors before this division; compare above the floor
    above = theirs > 0.01
    assert above.float().mean() > 0.1
    np.testing.assert_allclose(ours[above].numpy(), theirs[above].numpy(), rtol=1e-5)
    assert float(ours.max()) == pytest.approx(1.0) and float(ours.min()) == pytest.approx(1e-3)
    assert torch.equal(importance_map(patch, "uniform"), torch.ones(patch))


def test_model_runs_in_eval_mode_and_mode_is_restored():
    model = nn.Sequential(nn.Conv3d(1, 2, 1), nn.Dropout3d(0.5))

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x):
            out = self.net(x)
            return out[:, :1], out[:, 1:]

    wrapped = Wrap().train()
    image = torch.randn(1, 1, 10, 10, 10)
    a = sliding_window(wrapped, image, (8, 8, 8))
    b = sliding_window(wrapped, image, (8, 8, 8))
    assert torch.equal(a[0], b[0])  # no dropout noise: eval mode
    assert wrapped.training and model[1].training


def test_autocast_bfloat16_returns_float32_close_to_fp32():
    image = torch.randn(1, 1, 12, 10, 9, generator=torch.Generator().manual_seed(1))
    model = ConvDual(seed=2)
    ref_seg, ref_lsf = sliding_window(model, image, (8, 8, 8))
    seg, lsf = sliding_window(model, image, (8, 8, 8), amp_dtype=torch.bfloat16)
    assert seg.dtype == torch.float32 and lsf.dtype == torch.float32
    np.testing.assert_allclose(seg.numpy(), ref_seg.numpy(), atol=0.03)
    np.testing.assert_allclose(lsf.numpy(), ref_lsf.numpy(), atol=0.03)


def test_sliding_window_leaves_the_callers_model_unchanged():
    # MONAI's inferer never changes its predictor; neither do we (memory format, mode, weights).
    from DTCCore.config import NetworkConfig
    from DTCCore.model.network import build_network

    torch.manual_seed(0)
    model = build_network(NetworkConfig(base_filters=2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sliding_window(model, torch.randn(1, 1, 20, 20, 20), (16, 16, 16), overlap=0.5)
    assert model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
        if value.dim() == 5:
            assert value.is_contiguous(), name  # not turned channels-last


class RampDual(nn.Module):
    """Voxel-wise outputs plus a fixed ramp over the window's own coordinates: overlapping windows disagree
    on every voxel they share (so the blend shows), and each output voxel depends on one input voxel and its
    place in the window only, so batching and memory layout cannot change a bit of it."""

    def __init__(self, patch, seg_channels: int = 1) -> None:
        super().__init__()
        coords = torch.meshgrid(*[torch.arange(p, dtype=torch.float32) for p in patch], indexing="ij")
        self.ramp = 0.3 * coords[0] - 0.2 * coords[1] + 0.1 * coords[2]
        self.seg_channels = seg_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = x[:, :1]
        seg = torch.cat([(c + 1.0) * v + (c - 1.0) * self.ramp for c in range(self.seg_channels)], dim=1)
        return seg, torch.tanh(v - self.ramp)


def naive_float32_probability_loop(model, image, patch, stride, weight):
    """A second oracle, in float32 and in the order the blend adds (windows x slowest, z fastest): pad with
    NumPy, each window alone, sigmoid / softmax per window, ``sum += p * w`` and ``count += w`` per window,
    then ``sum / count``, crop. Written independently of inference/sliding_window.py."""
    n, _, *size = image.shape
    before = [max(p - d, 0) // 2 for d, p in zip(size, patch)]
    after = [max(p - d, 0) - b for d, p, b in zip(size, patch, before)]
    img = torch.from_numpy(np.pad(image.numpy(), [(0, 0), (0, 0)] + list(zip(before, after))))
    padded = tuple(img.shape[2:])
    starts = [list(range(0, d - p, s)) + [d - p] for d, p, s in zip(padded, patch, stride)]
    corners = [(x, y, z) for x in starts[0] for y in starts[1] for z in starts[2]]
    count = torch.zeros(padded)
    for x, y, z in corners:
        count[x : x + patch[0], y : y + patch[1], z : z + patch[2]] += weight
    seg_sum = lsf_sum = None
    with torch.no_grad():
        for b in range(n):
            for x, y, z in corners:
                box = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
                seg, lsf = model(img[(slice(b, b + 1), slice(None)) + box].clone())
                prob = torch.sigmoid(seg) if seg.shape[1] == 1 else torch.softmax(seg, 1)
                if seg_sum is None:
                    seg_sum = torch.zeros((n, seg.shape[1]) + padded)
                    lsf_sum = torch.zeros((n, lsf.shape[1]) + padded)
                seg_sum[(b, slice(None)) + box] += prob[0] * weight
                lsf_sum[(b, slice(None)) + box] += lsf[0] * weight
    crop = (slice(None), slice(None)) + tuple(slice(a, a + d) for a, d in zip(before, size))
    return (seg_sum / count)[crop], (lsf_sum / count)[crop]


@pytest.mark.parametrize("size,patch,stride,cs,blend", [
    ((20, 17, 9), (8, 8, 8), (4, 4, 4), 1, "gaussian"),
    ((5, 12, 14), (8, 8, 6), (4, 3, 5), 3, "gaussian"),  # padded along x, softmax
    ((13, 11, 10), (8, 8, 4), (3, 5, 2), 1, "uniform"),
])
def test_probability_blend_is_bitwise_the_naive_float32_loop(size, patch, stride, cs, blend):
    """The refactored window placement, blend loop and crop, with the activation per window
    (ProbabilityOutputs, as predict_volume runs them), give bit for bit the probabilities and level sets of
    a plain float32 loop: the refactoring changed no result."""
    image = torch.randn((2, 1) + size, generator=torch.Generator().manual_seed(sum(size) + cs))
    model = RampDual(patch, cs)
    weight = importance_map(patch, blend)
    want_seg, want_lsf = naive_float32_probability_loop(model, image, patch, stride, weight)
    seg, lsf = sliding_window(ProbabilityOutputs(model), image, patch, stride=stride, blend=blend, batch_windows=3)
    assert torch.equal(seg, want_seg) and torch.equal(lsf, want_lsf)
    raw, _ = sliding_window(model, image, patch, stride=stride, blend=blend, batch_windows=3)
    assert (raw - seg).abs().max() > 0.1  # the bare model's blend is of logits, not probabilities


def test_windows_are_placed_and_cropped_back():
    image = torch.randn(1, 2, 5, 12, 7)
    padded, grid = place_windows(image, (8, 8, 8), (4, 4, 4))
    assert padded.shape == (1, 2, 8, 12, 8) and grid.lo == (1, 0, 0) and grid.size == (5, 12, 7)
    assert grid.corners == tuple((0, y, 0) for y in (0, 4))
    assert torch.equal(crop_to_image(padded, grid), image)  # the zeros are around the image, cropped off
    assert float(padded.abs().sum()) == pytest.approx(float(image.abs().sum()))


def test_one_owner_of_the_segmentation_activation():
    """seg_probability is the activation training and inference share: sigmoid for one channel, softmax
    over the channels otherwise; the losses' foreground probability is it without the background; and
    under bf16 autocast (where predict_volume now calls it) a float32 input gives the same bits."""
    logits = 6.0 * torch.randn(2, 3, 4, 5, 6, generator=torch.Generator().manual_seed(8))
    one = logits[:, :1]
    # the formulas written out in float64: equal up to float32 rounding (a few units of 6e-8 below 1)
    d, d1 = logits.double(), one.double()
    sigmoid = 1.0 / (1.0 + torch.exp(-d1))
    e = torch.exp(d - d.amax(1, keepdim=True))
    softmax = e / e.sum(1, keepdim=True)
    np.testing.assert_allclose(seg_probability(one).numpy(), sigmoid.numpy(), rtol=0, atol=2.5e-7)
    np.testing.assert_allclose(seg_probability(logits).numpy(), softmax.numpy(), rtol=0, atol=2.5e-7)
    assert torch.equal(foreground_probability(logits), seg_probability(logits)[:, 1:])
    assert torch.equal(foreground_probability(one), seg_probability(one))
    for x in (one, logits, logits.contiguous(memory_format=torch.channels_last_3d)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = seg_probability(x)
        assert inside.dtype == torch.float32 and torch.equal(inside, seg_probability(x))


def test_probability_wrapper_keeps_the_callers_mode():
    model = ConvDual(seed=1).eval()
    sliding_window(ProbabilityOutputs(model), torch.randn(1, 1, 9, 9, 9), (8, 8, 8))
    assert not model.training  # not switched to training when the wrapper's mode is restored
    model.train()
    sliding_window(ProbabilityOutputs(model), torch.randn(1, 1, 9, 9, 9), (8, 8, 8))
    assert model.training
