"""Resampling between a scan's own grid and a model's grid (the model plan's spacing).

A model trained at a coarser spacing (nnU-Net's "low resolution" idea) sees every scan on a grid of its
own spacing, and its outputs go back to the scan's exact grid. Both directions use the same convention,
so a round trip is consistent:

- The model grid covers **exactly the same physical extent** as the scan's grid (the box from the outer
  face of the first voxel to the outer face of the last one, in the scan's own axes, so origin and
  direction are respected), with ``round(size * spacing / target)`` voxels per axis (at least 1). Its
  actual spacing is therefore ``spacing * size / new_size``: the target to within half a voxel over the
  extent. This is the cell-centred convention of ``torch.nn.functional.interpolate(align_corners=False)``
  and of scikit-image's ``resize`` used by nnU-Net.
- Intensities, probabilities and level sets are resampled **linearly** (trilinear).
- Label maps are never resampled by nearest neighbour: each class's signed distance (in mm, negative
  inside) is resampled linearly and the voxel takes the class whose distance is most negative, or
  background where none is negative. A smooth surface stays smooth when upsampled.

Arrays are indexed (x, y, z); channel-first arrays (C, X, Y, Z). Spacings in mm per voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from ..errors import DTCError

# Relative spacing difference under which a scan is used on its own grid, unresampled. Our choice: a 1 %
# change of spacing moves a surface by well under a voxel over any plausible field of view.
SAME_SPACING_TOLERANCE = 0.01


def target_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    """Voxels per axis of the model grid: ``round(size * spacing / target)``, at least 1. (X, Y, Z)."""
    _check_spacing(spacing, "scan")
    _check_spacing(target, "model")
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def needs_resampling(spacing: Sequence[float], target: Sequence[float] | None) -> bool:
    """False when ``target`` is None (a native-grid model) or within 1 % of ``spacing`` on every axis."""
    if target is None:
        return False
    return any(abs(float(s) - float(t)) > SAME_SPACING_TOLERANCE * float(t) for s, t in zip(spacing, target))


def effective_spacing(shape: Sequence[int], spacing: Sequence[float], new_shape: Sequence[int]) -> tuple[float, ...]:
    """Actual spacing (mm) of the model grid ``new_shape`` that covers the scan grid ``(shape, spacing)``."""
    return tuple(float(s) * n / m for s, n, m in zip(spacing, shape, new_shape))


def resize_linear(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of (X, Y, Z) or (C, X, Y, Z) ``array`` to spatial ``shape``, float32.

    Same physical extent in and out (cell-centred, ``align_corners=False``). A same-shape call returns a
    float32 copy.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim not in (3, 4):
        raise DTCError(f"resampling needs a 3-D volume or channels of them; got shape {array.shape}")
    shape = tuple(int(n) for n in shape)
    if array.shape[-3:] == shape:
        return array.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    tensor = tensor[None, None] if array.ndim == 3 else tensor[None]
    with torch.no_grad():
        out = F.interpolate(tensor, size=shape, mode="trilinear", align_corners=False)
    out = out[0, 0] if array.ndim == 3 else out[0]
    return out.numpy()


def raw_signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed Euclidean distance in mm between voxel centres, float32 (X, Y, Z): negative inside.

    ``edt(outside) - edt(inside)``: an object voxel next to the background gets ``-spacing``, a background
    voxel next to the object ``+spacing``, so the zero crossing of its linear interpolation lies halfway,
    on the voxel faces. An empty mask gives +inf-free +1e6 mm (everything far outside).
    """
    mask = np.asarray(mask, dtype=bool)
    sampling = tuple(float(s) for s in spacing)
    if not mask.any():
        return np.full(mask.shape, 1e6, np.float32)
    if mask.all():
        return np.full(mask.shape, -1e6, np.float32)
    outside = ndi.distance_transform_edt(~mask, sampling=sampling)
    inside = ndi.distance_transform_edt(mask, sampling=sampling)
    return (outside - inside).astype(np.float32)


def resample_label(label: np.ndarray, spacing: Sequence[float], shape: Sequence[int], num_classes: int) -> np.ndarray:
    """Label map (X, Y, Z) with values 0..num_classes to spatial ``shape``, through signed distances.

    Each class's :func:`raw_signed_distance` is resampled linearly; a voxel takes the class of the most
    negative distance, background where no distance is negative. Returns uint8 (X', Y', Z').
    """
    label = np.asarray(label)
    shape = tuple(int(n) for n in shape)
    if label.shape == shape:
        return label.astype(np.uint8, copy=True)
    best = np.zeros(shape, np.float32)  # 0: a voxel with no negative distance stays background
    out = np.zeros(shape, np.uint8)
    for c in range(1, num_classes + 1):
        mask = label == c
        if not mask.any():
            continue
        sdf = resize_linear(raw_signed_distance(mask, spacing), shape)
        closer = sdf < best
        out[closer] = c
        best[closer] = sdf[closer]
    return out


def _check_spacing(spacing: Sequence[float], what: str) -> None:
    values = [float(s) for s in spacing]
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise DTCError(f"{what} spacing {tuple(spacing)} must be 3 positive sizes in mm")
