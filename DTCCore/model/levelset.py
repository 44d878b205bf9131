"""The level-set transform T of DTC and its smooth inverse T^-1.

T (the ground truth of the level-set head) is a signed Euclidean distance to the object boundary:
**negative inside, positive outside, exactly 0 on the boundary voxels**.

Definitions (arrays indexed (x, y, z); distances in voxels, or in ``spacing`` units when given):

- ``posdis`` = distance of every object voxel to the nearest background voxel (0 outside);
- ``negdis`` = distance of every background voxel to the nearest object voxel (0 inside);
- boundary = the object's *inner* boundary: object voxels with a background face-neighbour (6-connected),
  i.e. ``mask & ~binary_erosion(mask, 6-connectivity, border_value=1)``. This is exactly what the reference
  uses (``skimage.segmentation.find_boundaries(mask, mode='inner')``, default connectivity 1, reflective
  image border: an object touching the image edge has no boundary there);
- T = negdis / max(negdis) - posdis / max(posdis), then T = 0 on the boundary. So inside lies in [-1, 0],
  outside in [0, 1].

Normalisation ("volume", our default, :func:`signed_distance`): each side is divided by its own maximum over
the WHOLE volume given, computed once per labeled volume and cached by the data loader. The reference
(:func:`signed_distance_reference`) min-max normalises each side *per random patch, every batch, on the
CPU* — about half of its iteration time (measured on one H200: 463 of 901 ms). The per-volume version keeps
the same sign, the same zero set (the boundary) and the same range [-1, 1]; only the scale of each side
differs (a patch's far side is divided by the volume's maximum instead of the patch's), which the tanh
head fits equally well. The paper itself says T is computed once before training.

Degenerate masks (reference: zeros for a patch without foreground): an empty mask has no object, every
voxel is "outside" -> all +1; a full mask has no background -> all -1. Both keep the sign convention and
T^-1 then maps them to all-background / all-object.

T^-1(z) = sigmoid(-k z), k = 1500 (paper, with the sign of the reference code so that inside -> 1). Note
that boundary voxels (T = 0) map to exactly 0.5: ``T^-1(T(mask)) >= 0.5`` reproduces the mask exactly,
``> 0.5`` gives the mask without its inner boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage as ndi
import scipy.special
import torch

from ..errors import DTCError

K_DEFAULT = 1500.0  # paper and reference: T^-1(z) = sigmoid(-1500 z)
_FACE_STRUCTURE = ndi.generate_binary_structure(3, 1)  # 6-connectivity = skimage find_boundaries default
_FACE_STRUCTURE_2D = ndi.generate_binary_structure(2, 1)  # 4-connectivity: the same rule in a slice


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise DTCError(f"level set needs a 3-D mask (x, y, z); got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Object voxels with a background face-neighbour; bool (X, Y, Z). Image border is not background."""
    return _inner_boundary(_as_mask(mask), _FACE_STRUCTURE)


def _inner_boundary(mask: np.ndarray, face: np.ndarray) -> np.ndarray:
    """``mask``'s pixels or voxels with a background neighbour across a face of ``face``; the border is not."""
    return mask & ~ndi.binary_erosion(mask, structure=face, border_value=1)


def signed_distance(mask: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """T(mask): per-volume normalised signed distance, float32 (X, Y, Z) in [-1, 1].

    mask: bool or 0/1 array (X, Y, Z). spacing: voxel size per axis (e.g. mm) for the Euclidean distance;
    None means 1 voxel. Negative inside, positive outside, 0 on the inner boundary; each side divided by
    its maximum over this volume. Empty mask -> all +1, full mask -> all -1 (see module docstring).
    """
    return _normalised_signed_distance(_as_mask(mask), _sampling(spacing), _FACE_STRUCTURE)


def _sampling(spacing: Sequence[float] | None) -> tuple[float, ...] | None:
    """``spacing`` as 3 positive floats for SciPy's EDT (None: 1 voxel); DTCError otherwise."""
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    if sampling is not None and (len(sampling) != 3 or any(s <= 0 for s in sampling)):
        raise DTCError(f"spacing {spacing} must be 3 positive voxel sizes")
    return sampling


def _normalised_signed_distance(mask: np.ndarray, sampling: tuple[float, ...] | None,
                                face: np.ndarray) -> np.ndarray:
    """T of a bool mask of any dimension (``face``: its face-neighbour structure); see :func:`signed_distance`."""
    if not mask.any():
        return np.ones(mask.shape, dtype=np.float32)
    if mask.all():
        return -np.ones(mask.shape, dtype=np.float32)
    posdis = ndi.distance_transform_edt(mask, sampling=sampling)
    negdis = ndi.distance_transform_edt(~mask, sampling=sampling)
    sdf = negdis / negdis.max() - posdis / posdis.max()
    sdf[_inner_boundary(mask, face)] = 0.0
    return sdf.astype(np.float32)


def signed_distance_slices(mask: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """T of each z-slice on its own, the level-set target of a 2-D model (planning/dims.py):
    float32 (X, Y, Z) in [-1, 1].

    Slice ``[:, :, k]`` is the 2-D signed distance of that slice's mask: in-plane Euclidean distances (in
    ``spacing``'s x and y units, e.g. mm; the z spacing is not used), the inner boundary with 4-connectivity
    in the plane, each side divided by its maximum over that slice; a slice without object is all +1, one
    without background all -1 (as :func:`signed_distance` for a volume).

    Why in-plane and per slice: a 2-D network sees one slice, and this target is a function of that slice's
    mask alone. The 3-D distance sampled on the slice depends on the neighbouring slices, which the network
    never sees (with slices 5-10 mm apart, the nearest boundary of a voxel is often across a slice), and a
    per-volume scale would too.
    """
    mask = _as_mask(mask)
    sampling = _sampling(spacing)
    out = np.empty(mask.shape, dtype=np.float32)
    for k in range(mask.shape[2]):
        out[:, :, k] = _normalised_signed_distance(mask[:, :, k], None if sampling is None else sampling[:2],
                                                   _FACE_STRUCTURE_2D)
    return out


def signed_distance_multiclass(label: np.ndarray, num_classes: int, spacing: Sequence[float] | None = None,
                               dims: int = 3) -> np.ndarray:
    """One :func:`signed_distance` channel per foreground class 1..C: float32 (C, X, Y, Z); ``dims=2``: one
    :func:`signed_distance_slices` channel per class.

    label: integer array (X, Y, Z) with values 0 (background) .. num_classes.
    """
    label = np.asarray(label)
    if num_classes < 1:
        raise DTCError(f"num_classes {num_classes} must be >= 1")
    transform = signed_distance_slices if dims == 2 else signed_distance
    out = np.empty((num_classes, *label.shape), dtype=np.float32)
    for c in range(1, num_classes + 1):
        out[c - 1] = transform(label == c, spacing)
    return out


def signed_distance_reference(mask_batch: np.ndarray) -> np.ndarray:
    """The reference's per-patch ``compute_sdf`` (train_la_dtc.py): float32 (B, X, Y, Z).

    mask_batch: (B, X, Y, Z) bool/0-1. For each item: min-max normalise negdis and posdis (unit voxels)
    separately over the patch, T = negdis_n - posdis_n, inner boundary set to 0; all zeros when the item
    has no foreground (as the reference). An item with no background (the reference divides 0 by 0 and
    gets NaN) gives all -1 here, like :func:`signed_distance`.
    """
    batch = np.asarray(mask_batch)
    if batch.ndim != 4:
        raise DTCError(f"reference level set needs a (B, X, Y, Z) batch; got shape {batch.shape}")
    out = np.zeros(batch.shape, dtype=np.float32)
    for b in range(batch.shape[0]):
        pos = batch[b].astype(bool)
        if not pos.any():
            continue  # reference: zeros
        if pos.all():
            out[b] = -1.0  # reference: NaN (0/0); see docstring
            continue
        posdis = ndi.distance_transform_edt(pos)
        negdis = ndi.distance_transform_edt(~pos)
        sdf = (negdis - negdis.min()) / (negdis.max() - negdis.min()) \
            - (posdis - posdis.min()) / (posdis.max() - posdis.min())
        sdf[inner_boundary(pos)] = 0.0
        out[b] = sdf
    return out


def inverse_transform(z, k: float = K_DEFAULT):
    """T^-1(z) = sigmoid(-k z): level set -> object probability (inside -> 1, outside -> 0).

    z: torch tensor (differentiable, same dtype/device) or NumPy array (float result of z's precision,
    at least float32; numerically stable, no overflow warnings).
    """
    if isinstance(z, torch.Tensor):
        return torch.sigmoid(-k * z)
    arr = np.asarray(z)
    dtype = np.result_type(arr.dtype, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.multiply(arr, -k, dtype=dtype)
    return scipy.special.expit(scaled).astype(dtype, copy=False)
