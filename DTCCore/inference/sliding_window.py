"""Sliding-window inference of a dual-task network over a whole volume.

The window grid follows the reference code (``test_util.test_single_case`` of github.com/HiLab-git/DTC):
along each axis ``n = ceil((dim - patch) / stride) + 1`` windows start at ``min(i * stride, dim - patch)``,
so the last window is flush with the far edge; volumes smaller than the patch are zero-padded
symmetrically and cropped back. Overlapping windows are blended with a Gaussian importance map
(MONAI / nnU-Net) or uniformly (the reference's plain average).

What is blended is whatever the model returns, as in MONAI's ``sliding_window_inference``: no activation
is applied here. The caller chooses the space: :func:`DTCCore.inference.predict.predict_volume` runs the network
wrapped in :class:`DTCCore.inference.predict.ProbabilityOutputs`, so the sigmoid / softmax is taken per window and
the probabilities are blended. The three steps are separate functions: :func:`place_windows` (padding and
window corners), :func:`blend_windows` (the forward passes and the weighted sums) and :func:`crop_to_image`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..planning.pools import SIZE_MULTIPLE

GAUSSIAN_SIGMA_SCALE = 0.125  # sigma = patch / 8 per axis: MONAI sigma_scale default, nnU-Net 1/8
GAUSSIAN_FLOOR = 1e-3  # smallest weight so that no voxel gets weight 0: MONAI compute_importance_map
# Largest padded volume run as one forward pass by whole_volume_patch users: 8 M voxels needs about 3 GB
# of RAM at base_filters 16 in fp32 (our measurement: ~0.4 kB peak RSS per voxel, bench/RESULTS.md).
WHOLE_VOLUME_MAX_VOXELS = 8_000_000


def whole_volume_patch(shape: Sequence[int], patch: Sequence[int],
                       multiples: Sequence[int] = (SIZE_MULTIPLE,) * 3) -> tuple[int, int, int]:
    """One window covering ``shape`` (X, Y, Z): each axis rounded up to its multiple (16 for the reference
    network; ``network.size_multiples``), at least ``patch``."""
    return tuple(max(int(p), -(-int(d) // int(m)) * int(m)) for d, p, m in zip(shape, patch, multiples))  # type: ignore[return-value]


def window_starts(dim: int, patch: int, stride: int) -> list[int]:
    """Start indices of the windows along one axis of length ``dim`` (>= ``patch``), reference formula."""
    n = math.ceil((dim - patch) / stride) + 1
    return [min(i * stride, dim - patch) for i in range(n)]


def strides_from_overlap(patch: Sequence[int], overlap: float) -> tuple[int, int, int]:
    """Stride per axis for a fraction ``overlap`` of the patch shared by neighbouring windows."""
    return tuple(max(1, int(p * (1.0 - overlap))) for p in patch)  # type: ignore[return-value]


def importance_map(patch: Sequence[int], blend: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Blending weights (X, Y, Z) float32 for one window: ones, or a Gaussian with max 1 and a positive floor."""
    if blend == "uniform":
        return torch.ones(tuple(patch), dtype=torch.float32, device=device)
    if blend != "gaussian":
        raise ValueError(f"blend must be 'gaussian' or 'uniform', got {blend!r}")
    w = torch.ones((), dtype=torch.float32, device=device)
    for p in patch:
        x = torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2.0  # centred, symmetric
        sigma = p * GAUSSIAN_SIGMA_SCALE
        w = w.unsqueeze(-1) * torch.exp(-(x**2) / (2.0 * sigma**2))
    return (w / w.max()).clamp_(min=GAUSSIAN_FLOOR)


@dataclass(frozen=True)
class WindowGrid:
    """Where the windows of one volume go, in voxels.

    size: the image's spatial shape (X, Y, Z) before padding.
    lo: zeros added before each axis (an axis smaller than the patch is padded to it, the odd voxel after).
    padded: the spatial shape after padding (each axis >= patch).
    patch: the window shape (px, py, pz).
    corners: the windows' lowest corners (x, y, z) in the padded volume, x slowest, z fastest.
    """

    size: tuple[int, int, int]
    lo: tuple[int, int, int]
    padded: tuple[int, int, int]
    patch: tuple[int, int, int]
    corners: tuple[tuple[int, int, int], ...]


def place_windows(image: torch.Tensor, patch: Sequence[int], stride: Sequence[int]) -> tuple[torch.Tensor, WindowGrid]:
    """Zero-pad ``image`` (N, C, X, Y, Z) to at least ``patch`` per axis and lay the window grid on it.

    Axes smaller than the patch get ``(patch - dim) // 2`` zeros before and the rest after (the reference
    code's ``w_pad // 2``); window starts follow :func:`window_starts` with ``stride`` (voxels per axis).
    Returns the padded image (N, C, *padded), unchanged when no axis needs padding, and its grid.
    """
    size = tuple(int(d) for d in image.shape[2:])
    pads = [max(p - d, 0) for d, p in zip(size, patch)]
    lo = [p // 2 for p in pads]
    if any(pads):
        # F.pad takes (z_lo, z_hi, y_lo, y_hi, x_lo, x_hi).
        image = F.pad(image, [v for a in (2, 1, 0) for v in (lo[a], pads[a] - lo[a])])
    padded = tuple(int(d) for d in image.shape[2:])
    starts = [window_starts(d, p, s) for d, p, s in zip(padded, patch, stride)]
    corners = tuple((x, y, z) for x in starts[0] for y in starts[1] for z in starts[2])
    grid = WindowGrid(size, tuple(lo), padded, tuple(int(p) for p in patch), corners)  # type: ignore[arg-type]
    return image, grid


def blend_windows(
    model: nn.Module,
    image: torch.Tensor,
    grid: WindowGrid,
    weight: torch.Tensor,
    batch_windows: int,
    amp_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on every window of ``grid`` and blend its two outputs with ``weight``.

    Args:
        model: returns ``(seg (B, Cs, *patch), lsf (B, Cl, *patch))`` for ``(B, C_in, *patch)``, on
            ``image.device``; called as it is (in the caller's train/eval mode) under ``torch.inference_mode``.
        image: the padded ``(N, C_in, *grid.padded)`` float tensor from :func:`place_windows`.
        weight: ``(*patch)`` float32 blending weights (:func:`importance_map`), positive.
        batch_windows: windows per forward pass (>= 1), taken from one batch item at a time.
        amp_dtype: autocast dtype for the forward passes; ``None`` runs in the model's dtype.
        progress: ``progress(done, total)`` after each forward pass (windows over all N).

    Returns:
        ``(seg (N, Cs, *grid.padded), lsf (N, Cl, *grid.padded))`` float32: per voxel the weighted mean
        ``sum_w w * out / sum_w w`` over the windows covering it, of the outputs exactly as returned.
    """
    patch = grid.patch
    n_batch = image.shape[0]
    total = len(grid.corners) * n_batch
    device = image.device
    seg_sum: torch.Tensor | None = None
    lsf_sum: torch.Tensor | None = None
    count = torch.zeros((1, 1) + grid.padded, dtype=torch.float32, device=device)
    for x, y, z in grid.corners:
        count[..., x : x + patch[0], y : y + patch[1], z : z + patch[2]] += weight
    # Windows go in as channels_last_3d: 20-25% faster 3D convolutions on the CPU (oneDNN) and with bf16 on
    # CUDA (our measurement, bench/RESULTS.md), the same result up to float rounding. The caller's model is
    # never changed (predict_volume gives a channels-last inference copy).
    done = 0
    with torch.inference_mode():
        for n in range(n_batch):
            for first in range(0, len(grid.corners), batch_windows):
                chunk = grid.corners[first : first + batch_windows]
                windows = torch.cat(
                    [image[n : n + 1, :, x : x + patch[0], y : y + patch[1], z : z + patch[2]] for x, y, z in chunk]
                ).contiguous(memory_format=torch.channels_last_3d)
                amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
                with amp:
                    seg, lsf = model(windows)
                seg, lsf = seg.float(), lsf.float()  # blended in float32, also after a bf16 forward pass
                if seg_sum is None or lsf_sum is None:
                    seg_sum = torch.zeros((n_batch, seg.shape[1]) + grid.padded, dtype=torch.float32, device=device)
                    lsf_sum = torch.zeros((n_batch, lsf.shape[1]) + grid.padded, dtype=torch.float32, device=device)
                for i, (x, y, z) in enumerate(chunk):
                    box = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
                    seg_sum[(n, slice(None)) + box] += seg[i] * weight
                    lsf_sum[(n, slice(None)) + box] += lsf[i] * weight
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        assert seg_sum is not None and lsf_sum is not None
        seg_sum /= count
        lsf_sum /= count
    return seg_sum, lsf_sum


def crop_to_image(blended: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """``(N, C, *grid.padded)`` -> ``(N, C, *grid.size)``: the padding of :func:`place_windows` removed (a view)."""
    crop = (slice(None), slice(None)) + tuple(slice(start, start + d) for start, d in zip(grid.lo, grid.size))
    return blended[crop]


def sliding_window(
    model: nn.Module,
    image: torch.Tensor,
    patch: Sequence[int],
    stride: Sequence[int] | None = None,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_windows: int = 4,
    amp_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a dual-task network over ``image`` window by window and blend its raw outputs.

    Args:
        model: returns ``(seg (B, Cs, *patch), lsf (B, Cl, *patch))`` for input ``(B, C_in, *patch)``;
            it must already be on ``image.device``. It is put in eval mode for the call (and restored).
            Whatever it returns is blended: logits for a bare network (wrap it in
            :class:`DTCCore.inference.predict.ProbabilityOutputs` to blend probabilities, as ``predict_volume`` does).
        image: ``(N, C_in, X, Y, Z)`` float tensor; any size (smaller than ``patch`` is zero-padded).
        patch: window size ``(px, py, pz)`` in voxels.
        stride: window step per axis in voxels; ``None`` derives it from ``overlap``.
        overlap: fraction of the patch shared by neighbours when ``stride`` is None:
            ``stride = max(1, int(patch * (1 - overlap)))``.
        blend: ``"gaussian"`` (sigma = patch/8, max 1, floor 1e-3) or ``"uniform"`` (plain average).
        batch_windows: windows per forward pass (bounds memory; never all windows at once).
        amp_dtype: autocast dtype (e.g. ``torch.bfloat16`` on CUDA); ``None`` runs in the model's dtype.
        progress: called as ``progress(done, total)`` after each forward pass (windows over all N).

    Returns:
        ``seg (N, Cs, X, Y, Z)`` and ``lsf (N, Cl, X, Y, Z)``: the model's two outputs blended over the
        windows (no activation applied). Both float32 on ``image.device``.
    """
    if image.ndim != 5:
        raise ValueError(f"image must be (N, C, X, Y, Z), got shape {tuple(image.shape)}")
    patch = tuple(int(p) for p in patch)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch must be 3 positive sizes, got {patch}")
    stride = strides_from_overlap(patch, overlap) if stride is None else tuple(int(s) for s in stride)
    if len(stride) != 3 or min(stride) < 1:
        raise ValueError(f"stride must be 3 positive sizes, got {stride}")
    if batch_windows < 1:
        raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
    if not image.is_floating_point():
        image = image.float()

    image, grid = place_windows(image, patch, stride)
    device = image.device
    weight = importance_map(patch, blend, device)
    # Only the train/eval mode of the caller's model is switched for the call, and restored.
    was_training = model.training
    model.eval()
    try:
        seg, lsf = blend_windows(model, image, grid, weight, batch_windows, amp_dtype, progress)
    finally:
        model.train(was_training)
    return crop_to_image(seg, grid), crop_to_image(lsf, grid)
