"""Tests of DTCCore.evaluation.metrics (MedPy is the oracle) and DTCCore.inference.postprocess (a naive flood fill
is the oracle)."""

from __future__ import annotations

import itertools
import math
from collections import deque

import numpy as np
import pytest
from medpy.metric import binary
from scipy import ndimage

from DTCCore.evaluation.metrics import METRICS, evaluate_case, evaluate_multiclass, summarize
from DTCCore.inference.postprocess import largest_component, largest_component_per_class


def _blob(shape=(24, 20, 16), seed=0, level=0.55) -> np.ndarray:
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma=2.5)
    return noise > np.quantile(noise, level)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_medpy_voxels_and_mm(seed):
    pred, truth = _blob(seed=seed), _blob(seed=seed + 10)
    spacing = (0.7, 1.1, 2.5)
    got = evaluate_case(pred.astype(np.uint8), truth, spacing)
    assert set(got) == set(METRICS)
    assert got["dice"] == pytest.approx(binary.dc(pred, truth), abs=1e-12)
    assert got["jaccard"] == pytest.approx(binary.jc(pred, truth), abs=1e-12)
    assert got["asd_vox"] == pytest.approx(binary.asd(pred, truth), abs=1e-12)
    assert got["hd95_vox"] == pytest.approx(binary.hd95(pred, truth), abs=1e-12)
    assert got["asd_mm"] == pytest.approx(binary.asd(pred, truth, voxelspacing=spacing), abs=1e-12)
    assert got["hd95_mm"] == pytest.approx(binary.hd95(pred, truth, voxelspacing=spacing), abs=1e-12)
    assert got["asd_mm"] != pytest.approx(got["asd_vox"])  # the spacing is really used
    # hand check of Dice / Jaccard
    inter, total = np.logical_and(pred, truth).sum(), pred.sum() + truth.sum()
    assert got["dice"] == pytest.approx(2 * inter / total)
    assert got["jaccard"] == pytest.approx(inter / (total - inter))


def test_identical_and_shifted():
    truth = np.zeros((12, 12, 12), bool)
    truth[3:8, 3:8, 3:8] = True
    same = evaluate_case(truth, truth, (2.0, 2.0, 2.0))
    assert same == {"dice": 1.0, "jaccard": 1.0, "asd_vox": 0.0, "hd95_vox": 0.0, "asd_mm": 0.0, "hd95_mm": 0.0}
    shifted = np.roll(truth, 1, axis=0)
    got = evaluate_case(shifted, truth, (2.0, 1.0, 1.0))
    assert got["dice"] == pytest.approx(2 * 100 / 250)  # 4 of 5 slices overlap: 100 of 125 voxels
    assert got["hd95_vox"] == pytest.approx(1.0) and got["hd95_mm"] == pytest.approx(2.0)  # one voxel along x


def test_hand_computed_case_where_the_95th_percentile_is_not_the_maximum():
    # Truth: a one-voxel-thick line x = 0..19 at (y, z) = (2, 2); prediction: the same line one voxel over
    # (y = 3) plus 3 stray voxels x = 27..29 on that row. Every voxel of a thin line is a surface voxel.
    # Surface distances, both ways (MedPy's hd95 pools them): 20 + 20 of 1 voxel (y), and the strays' to the
    # truth's end (19, 2, 2): sqrt(8^2 + 1), sqrt(9^2 + 1), sqrt(10^2 + 1). 43 values; numpy's 95th
    # percentile sits at rank 0.95 * 42 = 39.9: 0.1 of the way from the 40th value (1) to the 41st (sqrt 65).
    # The maximum (the plain Hausdorff distance) would be sqrt(101). ASD (prediction to truth only): the mean
    # of the prediction's 23 distances.
    truth = np.zeros((32, 6, 5), bool)
    truth[0:20, 2, 2] = True
    pred = np.zeros_like(truth)
    pred[0:20, 3, 2] = True
    pred[27:30, 3, 2] = True
    got = evaluate_case(pred, truth, (2.0, 1.0, 1.0))
    strays_vox = [math.sqrt(d * d + 1) for d in (8, 9, 10)]
    strays_mm = [math.sqrt((2 * d) ** 2 + 1) for d in (8, 9, 10)]  # x spacing 2 mm, y 1 mm
    assert got["hd95_vox"] == pytest.approx(1 + 0.9 * (strays_vox[0] - 1), abs=1e-9)  # 7.356
    assert got["hd95_mm"] == pytest.approx(1 + 0.9 * (strays_mm[0] - 1), abs=1e-9)  # 14.528
    assert got["hd95_vox"] < max(strays_vox) - 1  # far from the maximum, 10.05
    assert got["asd_vox"] == pytest.approx((20 + sum(strays_vox)) / 23, abs=1e-9)
    assert got["asd_mm"] == pytest.approx((20 + sum(strays_mm)) / 23, abs=1e-9)
    assert got["dice"] == 0.0 and got["jaccard"] == 0.0  # the lines do not overlap


def test_empty_cases_defined():
    empty = np.zeros((6, 6, 6), bool)
    some = empty.copy()
    some[2:4, 2:4, 2:4] = True
    both = evaluate_case(empty, empty)
    assert both == {"dice": 1.0, "jaccard": 1.0, "asd_vox": 0.0, "hd95_vox": 0.0, "asd_mm": 0.0, "hd95_mm": 0.0}
    for pred, truth in ((empty, some), (some, empty)):
        got = evaluate_case(pred, truth, (1.0, 1.0, 3.0))
        assert got["dice"] == 0.0 and got["jaccard"] == 0.0
        assert all(math.isnan(got[k]) for k in ("asd_vox", "hd95_vox", "asd_mm", "hd95_mm"))
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate_case(empty, empty[:5])


def test_summarize_nanmean_and_counts():
    rows = [
        {"case": "a", "dice": 0.8, "jaccard": 0.6, "asd_vox": 2.0, "hd95_vox": 5.0, "asd_mm": 1.0, "hd95_mm": 3.0},
        {"case": "b", "dice": 0.6, "jaccard": 0.4, "asd_vox": 4.0, "hd95_vox": 7.0, "asd_mm": 3.0, "hd95_mm": 5.0},
        {"case": "c", "dice": 0.0, "jaccard": 0.0, "asd_vox": math.nan, "hd95_vox": math.nan,
         "asd_mm": math.nan, "hd95_mm": math.nan},
    ]
    s = summarize(rows)
    assert s["cases"] == 3 and s["undefined_distance"] == 1
    assert s["mean"]["dice"] == pytest.approx(1.4 / 3)
    assert s["std"]["dice"] == pytest.approx(np.std([0.8, 0.6, 0.0]))
    assert s["mean"]["asd_vox"] == pytest.approx(3.0) and s["std"]["asd_vox"] == pytest.approx(1.0)
    assert s["mean"]["hd95_mm"] == pytest.approx(4.0)
    nothing = summarize([rows[2]])
    assert math.isnan(nothing["mean"]["asd_mm"]) and nothing["undefined_distance"] == 1
    assert summarize([])["cases"] == 0 and math.isnan(summarize([])["mean"]["dice"])


def test_multiclass_per_class():
    truth = np.zeros((16, 14, 10), np.uint8)
    truth[_blob((16, 14, 10), 3)] = 1
    truth[_blob((16, 14, 10), 4, 0.8)] = 2
    pred = np.roll(truth, 1, axis=1)
    got = evaluate_multiclass(pred, truth, 3, (1.0, 1.0, 2.0))
    assert sorted(got) == [1, 2, 3]
    for c in (1, 2):
        assert got[c]["dice"] == pytest.approx(binary.dc(pred == c, truth == c))
        assert got[c]["hd95_mm"] == pytest.approx(binary.hd95(pred == c, truth == c, voxelspacing=(1.0, 1.0, 2.0)))
    assert got[3]["dice"] == 1.0 and got[3]["asd_vox"] == 0.0  # absent from both


def _naive_largest(mask: np.ndarray) -> np.ndarray:
    """Breadth-first flood fill over the 26 neighbours, keeping the biggest component (first on ties)."""
    seen = np.zeros(mask.shape, bool)
    best: list = []
    steps = [d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)]
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        comp, queue = [start], deque([start])
        while queue:
            p = queue.popleft()
            for d in steps:
                q = tuple(a + b for a, b in zip(p, d))
                if all(0 <= q[i] < mask.shape[i] for i in range(3)) and mask[q] and not seen[q]:
                    seen[q] = True
                    comp.append(q)
                    queue.append(q)
        if len(comp) > len(best):
            best = comp
    out = np.zeros(mask.shape, bool)
    for p in best:
        out[p] = True
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_largest_component_matches_naive(seed):
    mask = (np.random.default_rng(seed).random((10, 9, 8)) > 0.8).astype(np.uint8)
    got = largest_component(mask)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got.astype(bool), _naive_largest(mask.astype(bool)))


def test_largest_component_diagonal_and_empty():
    mask = np.zeros((6, 6, 6), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # corner-connected: one 26-component of 3
    mask[5, 5, 0] = mask[5, 4, 0] = True  # a separate component of 2
    got = largest_component(mask)
    assert got.dtype == bool and got.sum() == 3 and got[2, 2, 2] and not got[5, 5, 0]
    empty = np.zeros((4, 4, 4), np.uint8)
    assert not largest_component(empty).any() and largest_component(empty).shape == (4, 4, 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_largest_component_per_class_matches_naive(seed):
    label = np.random.default_rng(seed).choice(4, size=(10, 9, 8), p=[0.7, 0.1, 0.1, 0.1]).astype(np.uint8)
    got = largest_component_per_class(label, 3)
    assert got.dtype == np.uint8 and got is not label
    want = np.zeros_like(label)
    for c in (1, 2, 3):
        want[_naive_largest(label == c)] = c
    np.testing.assert_array_equal(got, want)
    assert (label > 0).sum() > (got > 0).sum()  # something was removed (random masks are fragmented)
