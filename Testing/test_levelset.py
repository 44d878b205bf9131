"""Tests of DTCCore.model.levelset: the level-set transform T, its reference per-patch variant and T^-1."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DTCCore.model.levelset import (
    inverse_transform,
    signed_distance,
    signed_distance_multiclass,
    signed_distance_reference,
)

SAMPLE_LABEL = Path(__file__).resolve().parents[1] / "DTCCore" / "sample" / "la_sample_label.nrrd"
FACE_OFFSETS = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]


def _sphere(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum((grid[i] - centre[i]) ** 2 for i in range(3))
    return d2 <= radius**2


def _naive_inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Object voxels with a background face-neighbour inside the image (loop; skimage 'inner' semantics)."""
    out = np.zeros_like(mask, dtype=bool)
    for p in zip(*np.nonzero(mask)):
        for off in FACE_OFFSETS:
            q = tuple(a + b for a, b in zip(p, off))
            if all(0 <= q[i] < mask.shape[i] for i in range(3)) and not mask[q]:
                out[p] = True
                break
    return out


def _brute_distance(src: np.ndarray, dst: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """For each voxel in src, the Euclidean distance (physical) to the nearest voxel of dst; 0 elsewhere."""
    out = np.zeros(src.shape)
    targets = np.argwhere(dst) * np.asarray(spacing)
    for p in np.argwhere(src):
        out[tuple(p)] = np.sqrt(((targets - p * np.asarray(spacing)) ** 2).sum(1)).min()
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def sphere() -> np.ndarray:
    return _sphere((24, 22, 20), (11.0, 10.0, 9.0), 6.5)


def test_sign_zero_set_and_range(sphere: np.ndarray) -> None:
    t = signed_distance(sphere)
    boundary = _naive_inner_boundary(sphere)
    assert t.dtype == np.float32 and t.shape == sphere.shape
    assert np.all(t[boundary] == 0.0)
    assert np.all(t[sphere & ~boundary] < 0)
    assert np.all(t[~sphere] > 0)
    assert t.min() == -1.0 and t.max() == 1.0  # each side normalised by its own maximum


def test_monotonic_along_rays_from_the_centre(sphere: np.ndarray) -> None:
    t = signed_distance(sphere)
    rays = [t[11:, 10, 9], t[11::-1, 10, 9], t[11, 10:, 9], t[11, 10, 9:], t[11, 10, 9::-1]]
    rays.append(np.array([t[11 + i, 10 + i, 9 + i] for i in range(10)]))
    for ray in rays:
        assert np.all(np.diff(ray) > 0), ray  # strictly increasing from -1 at the centre outwards
        assert ray[0] < 0 < ray[-1]


@pytest.mark.parametrize("spacing", [None, (1.0, 2.0, 0.5)])
def test_matches_brute_force_distances(spacing: tuple[float, float, float] | None) -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((7, 6, 5), dtype=bool)
    mask[2:6, 1:5, 1:4] = True
    mask &= rng.random(mask.shape) < 0.85  # irregular object with holes
    sp = (1.0, 1.0, 1.0) if spacing is None else spacing
    posdis = _brute_distance(mask, ~mask, sp)
    negdis = _brute_distance(~mask, mask, sp)
    expected = negdis / negdis.max() - posdis / posdis.max()
    expected[_naive_inner_boundary(mask)] = 0.0
    np.testing.assert_allclose(signed_distance(mask, spacing), expected, atol=1e-6)


def test_degenerate_masks() -> None:
    assert np.all(signed_distance(np.zeros((4, 5, 6), bool)) == 1.0)
    assert np.all(signed_distance(np.ones((4, 5, 6), np.uint8)) == -1.0)


def test_inverse_reproduces_the_sphere(sphere: np.ndarray) -> None:
    prob = inverse_transform(signed_distance(sphere), 1500.0)
    assert _dice(prob >= 0.5, sphere) >= 0.95
    assert np.array_equal(prob >= 0.5, sphere)
    # Boundary voxels (T = 0) sit at exactly 0.5: a strict threshold drops the inner boundary only.
    assert np.array_equal(prob > 0.5, sphere & ~_naive_inner_boundary(sphere))


def test_inverse_reproduces_the_bundled_la_label() -> None:
    image = sitk.ReadImage(str(SAMPLE_LABEL))
    label = sitk.GetArrayFromImage(image).transpose(2, 1, 0) > 0  # (x, y, z)
    t = signed_distance(label, image.GetSpacing())
    assert -1.0 <= t.min() < 0 < t.max() <= 1.0
    prob = inverse_transform(t)
    assert _dice(prob >= 0.5, label) >= 0.95
    assert _dice(prob > 0.5, label) >= 0.9  # inner boundary excluded (a thin shell of the atrium)


def test_reference_per_patch_formula() -> None:
    rng = np.random.default_rng(1)
    batch = np.zeros((3, 8, 7, 6), dtype=np.uint8)
    batch[0, 2:6, 2:5, 1:5] = rng.random((4, 3, 4)) < 0.9
    batch[1] = _sphere((8, 7, 6), (0.0, 3.0, 2.0), 3.0)  # touches the image border
    # batch[2] stays empty -> zeros (reference)
    out = signed_distance_reference(batch)
    assert out.shape == batch.shape and out.dtype == np.float32
    for b in range(2):
        pos = batch[b].astype(bool)
        posdis = _brute_distance(pos, ~pos, (1, 1, 1))
        negdis = _brute_distance(~pos, pos, (1, 1, 1))
        ref = (negdis - negdis.min()) / (negdis.max() - negdis.min()) - \
            (posdis - posdis.min()) / (posdis.max() - posdis.min())
        ref[_naive_inner_boundary(pos)] = 0
        np.testing.assert_allclose(out[b], ref, atol=1e-6)
    assert np.all(out[2] == 0)


def test_multiclass_channels() -> None:
    label = np.zeros((10, 9, 8), dtype=np.uint8)
    label[1:4, 1:5, 1:5] = 1
    label[5:9, 3:8, 2:7] = 2
    out = signed_distance_multiclass(label, 3)
    assert out.shape == (3, 10, 9, 8) and out.dtype == np.float32
    for c in (1, 2):
        np.testing.assert_array_equal(out[c - 1], signed_distance(label == c))
        assert np.all(out[c - 1][label == c] <= 0) and np.all(out[c - 1][label != c] > 0)
    assert np.all(out[2] == 1.0)  # class 3 absent


def test_inverse_transform_numpy_and_torch() -> None:
    z = np.array([-1.0, -1e-3, 0.0, 1e-3, 1.0, 1e30, -1e30], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = inverse_transform(z, 1500.0)
    expected = [1.0, 1 / (1 + np.exp(-1.5)), 0.5, 1 / (1 + np.exp(1.5)), 0.0, 0.0, 1.0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.all(np.isfinite(out))

    zt = torch.tensor([-2e-3, 0.0, 2e-3], requires_grad=True)
    pt = inverse_transform(zt, 1500.0)
    torch.testing.assert_close(pt.detach(), torch.tensor([1 / (1 + np.exp(-3.0)), 0.5, 1 / (1 + np.exp(3.0))],
                                                         dtype=torch.float32))
    pt.sum().backward()
    assert torch.all(zt.grad < 0)  # larger level set -> lower object probability


def test_boundary_has_no_26_only_contacts() -> None:
    """Face connectivity: a voxel touching background only by an edge/corner is not on the boundary."""
    mask = np.zeros((5, 5, 5), bool)
    mask[1:4, 1:4, 1:4] = True
    mask[1, 1, 1] = False  # remove a corner: (2,2,2) touches it only through a corner
    t = signed_distance(mask)
    assert t[2, 2, 2] < 0
    for p in itertools.product(range(1, 4), repeat=3):
        if mask[p] and p != (2, 2, 2):
            assert t[p] == 0.0
