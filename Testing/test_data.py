"""Tests of DTCCore.training.batches: normalisation, crops, augmentation, loading, deterministic batches."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import ndimage

from DTCCore.config import RecipeConfig, TrainConfig
from DTCCore.data.images import Geometry, write_image
from DTCCore.data.intensity import normalize
from DTCCore.data.manifest import load_manifest
from DTCCore.errors import DTCError
from DTCCore.training.augment import flips_and_turns as augment
from DTCCore.training.batches import (
    LabeledCase,
    TrainBatches,
    UnlabeledCase,
    load_cases,
    make_loader,
    random_crop,
)


def _coords(shape) -> np.ndarray:
    """Each voxel's value encodes its position: x*10000 + y*100 + z + 1 (positive, unique)."""
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return (x * 10000 + y * 100 + z + 1).astype(np.float32)


def _decode(v: np.ndarray):
    v = v.astype(np.int64) - 1
    return v // 10000, (v // 100) % 100, v % 100


def test_normalize_hand_computed():
    image = np.array([1.0, 2.0, 3.0, 4.0]).reshape(2, 2, 1)
    out = normalize(image)
    std = np.sqrt(((np.array([1, 2, 3, 4]) - 2.5) ** 2).mean())  # population std = sqrt(1.25)
    assert out.dtype == np.float32 and out.shape == (2, 2, 1)
    np.testing.assert_allclose(out.ravel(), (np.array([1, 2, 3, 4]) - 2.5) / std, rtol=1e-6)
    rand = normalize(np.random.default_rng(0).gamma(2.0, 30.0, size=(20, 10, 5)).astype(np.uint8))
    assert abs(float(rand.mean())) < 1e-5 and abs(float(rand.std()) - 1) < 1e-5
    flat = normalize(np.full((3, 3, 3), 7.0))
    assert flat.dtype == np.float32 and not flat.any()


def _arrays(shape, classes=1):
    image = _coords(shape)
    label = (image.astype(np.int64) % 3 == 0).astype(np.uint8)
    sdf = np.stack([image * (c + 1) for c in range(classes)])  # channel c encodes position too
    return {"image": image, "label": label, "sdf": sdf}


def test_random_crop_inside_volume_is_a_window():
    arrays = _arrays((12, 9, 7), classes=2)
    rng = np.random.default_rng(1)
    corners = set()
    for _ in range(150):
        out = random_crop(arrays, (10, 8, 4), rng)
        assert out["image"].shape == (10, 8, 4) and out["label"].shape == (10, 8, 4)
        assert out["sdf"].shape == (2, 10, 8, 4)
        x, y, z = _decode(out["image"])
        x0, y0, z0 = int(x[0, 0, 0]), int(y[0, 0, 0]), int(z[0, 0, 0])
        corners.add((x0, y0, z0))
        np.testing.assert_array_equal(out["image"], arrays["image"][x0:x0 + 10, y0:y0 + 8, z0:z0 + 4])
        np.testing.assert_array_equal(out["label"], arrays["label"][x0:x0 + 10, y0:y0 + 8, z0:z0 + 4])
        np.testing.assert_array_equal(out["sdf"], arrays["sdf"][:, x0:x0 + 10, y0:y0 + 8, z0:z0 + 4])
    # every valid corner, the last one included, is drawn: x0 in 0..2, y0 in 0..1, z0 in 0..3
    assert {c[0] for c in corners} == {0, 1, 2} and {c[1] for c in corners} == {0, 1}
    assert {c[2] for c in corners} == {0, 1, 2, 3}


def test_random_crop_pads_small_volumes():
    arrays = _arrays((5, 20, 3))
    out = random_crop(arrays, (8, 16, 8), np.random.default_rng(0))
    assert out["image"].shape == (8, 16, 8) and out["sdf"].shape == (1, 8, 16, 8)
    inside = out["image"] > 0
    # the volume is one contiguous block of 5 x 3 voxels (x, z) inside the padding
    assert inside.any(axis=(1, 2)).sum() == 5 and inside.any(axis=(0, 1)).sum() == 3
    assert np.all(out["image"][~inside] == 0) and np.all(out["label"][~inside] == 0)
    assert np.all(out["sdf"][0][~inside] == 1.0)  # far outside
    assert out["label"].dtype == np.uint8 and out["image"].dtype == np.float32
    x, y, z = _decode(out["image"][inside])
    np.testing.assert_array_equal(out["label"][inside], arrays["label"][x, y, z])


def test_random_crop_places_small_volumes_anywhere_in_the_patch():
    """A volume thinner than the patch lands at every offset 0..p-s, not only centred (a network trained
    on one placement fails on scans with other slice counts)."""
    arrays = _arrays((5, 20, 3))
    rng = np.random.default_rng(2)
    offsets = []
    for _ in range(300):
        out = random_crop(arrays, (8, 16, 8), rng)
        inside = out["image"] > 0
        xs = np.flatnonzero(inside.any(axis=(1, 2)))
        zs = np.flatnonzero(inside.any(axis=(0, 1)))
        assert np.array_equal(xs, np.arange(xs[0], xs[0] + 5)) and np.array_equal(zs, np.arange(zs[0], zs[0] + 3))
        x, y, z = _decode(out["image"][inside])
        assert np.array_equal(np.unique(x), np.arange(5)) and np.array_equal(np.unique(z), np.arange(3))
        np.testing.assert_array_equal(out["label"][inside], arrays["label"][x, y, z])
        offsets.append((int(xs[0]), int(zs[0])))
    x_counts = np.bincount([o[0] for o in offsets], minlength=4)
    z_counts = np.bincount([o[1] for o in offsets], minlength=6)
    assert len(x_counts) == 4 and len(z_counts) == 6  # never beyond p - s: x 0..3, z 0..5
    assert np.all(x_counts > 300 / 4 / 2) and np.all(z_counts > 300 / 6 / 2)  # every offset, about uniform


@pytest.mark.parametrize("shape, distinct", [((6, 6, 3), 4), ((6, 4, 3), 2)])
def test_augment_keeps_correspondence(shape, distinct):
    arrays = _arrays(shape, classes=2)
    rng = np.random.default_rng(3)
    outcomes = set()
    for _ in range(60):
        out = augment(arrays, rng)
        assert out["image"].shape == shape and out["sdf"].shape == (2, *shape)  # never changes shape
        assert all(a.flags.c_contiguous for a in out.values())
        x, y, z = _decode(out["image"])
        assert np.all(z == np.arange(shape[2]))  # z untouched: in-plane only
        np.testing.assert_array_equal(out["label"], arrays["label"][x, y, z])
        for c in range(2):
            np.testing.assert_array_equal(out["sdf"][c], arrays["sdf"][c][x, y, z])
        outcomes.add(out["image"].tobytes())
    # rot90(k) then flip x|y gives the 4 in-plane reflections of a square; {0, 2} x flips gives 2 otherwise
    assert len(outcomes) == distinct


def _cases(n_lab=3, n_unl=2, shape=(10, 9, 6), classes=1):
    labeled, unlabeled = [], []
    for j in range(n_lab):
        image = 1000.0 * (j + 1) + np.random.default_rng(j).random(shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[1:5, 1:4, 1:] = 1
        label[1:5, 1:4, 2:] = classes  # class 2 (if any) on top of class 1
        sdf = np.stack([np.where(label == c, -0.5, 0.5) for c in range(1, classes + 1)]).astype(np.float32)
        labeled.append(LabeledCase(f"l{j}", image.astype(np.float32), label, sdf))
    for j in range(n_unl):
        ushape = (shape[0] + 2 * j, shape[1] - j, shape[2])  # unlabeled volumes may differ in size
        image = -1000.0 * (j + 1) - np.random.default_rng(50 + j).random(ushape).astype(np.float32)
        unlabeled.append(UnlabeledCase(f"u{j}", image))
    return labeled, unlabeled


def _cfg(lb=2, ub=2, patch=(8, 8, 4), iterations=6):
    return TrainConfig(labeled_batch=lb, unlabeled_batch=ub, patch=patch, iterations=iterations)


def _which(batch_image: torch.Tensor) -> list[int]:
    """Case of each batch item from its intensity: labeled j -> j, unlabeled j -> -(j+1)."""
    return [int(np.trunc(v / 1000.0)) for v in batch_image.reshape(batch_image.shape[0], -1).mean(dim=1).tolist()]


def test_batch_composition_and_types():
    labeled, unlabeled = _cases()
    ds = TrainBatches(labeled, unlabeled, _cfg(), RecipeConfig(), seed=5)
    assert len(ds) == 6 and list(ds.indices()) == list(range(6))
    b = ds[0]
    assert b["image"].dtype == torch.float32 and b["image"].shape == (4, 1, 8, 8, 4)
    assert b["label"].dtype == torch.int64 and b["label"].shape == (2, 8, 8, 4)
    assert b["sdf"].dtype == torch.float32 and b["sdf"].shape == (2, 1, 8, 8, 4)
    which = _which(b["image"])
    assert all(w >= 1 for w in which[:2]) and all(w <= -1 for w in which[2:])  # labeled first
    # the sdf follows its label through crop and augmentation
    torch.testing.assert_close(b["sdf"][:, 0], torch.where(b["label"] == 1, -0.5, 0.5))
    only_lab = TrainBatches(labeled, [], _cfg(), RecipeConfig(), seed=5)
    assert only_lab[0]["image"].shape == (2, 1, 8, 8, 4)
    no_ub = TrainBatches(labeled, unlabeled, _cfg(ub=0), RecipeConfig(), seed=5)
    assert no_ub[3]["image"].shape == (2, 1, 8, 8, 4)
    with pytest.raises(DTCError, match="at least 1 labeled"):
        TrainBatches([], unlabeled, _cfg(), RecipeConfig(), seed=5)


def test_small_volumes_give_patch_sized_batches():
    labeled, unlabeled = _cases(shape=(6, 5, 3), classes=2)
    b = TrainBatches(labeled, unlabeled, _cfg(patch=(8, 8, 4)), RecipeConfig(), seed=0)[2]
    assert b["image"].shape == (4, 1, 8, 8, 4) and b["sdf"].shape == (2, 2, 8, 8, 4)
    assert torch.all(b["sdf"][b["label"][:, None].expand(-1, 2, -1, -1, -1) == 0] > 0)


def test_labeled_cycled_per_epoch_unlabeled_forever():
    labeled, unlabeled = _cases(n_lab=3, n_unl=2)
    ds = TrainBatches(labeled, unlabeled, _cfg(lb=2, ub=2, iterations=30), RecipeConfig(), seed=11)
    seq = [c for i in range(30) for c in ds.picks(0, i)]  # 60 picks = 20 epochs of 3 cases
    for e in range(20):
        assert sorted(seq[3 * e: 3 * e + 3]) == [0, 1, 2]
    assert len({tuple(seq[3 * e: 3 * e + 3]) for e in range(20)}) > 1  # a fresh order per epoch
    useq = [c for i in range(30) for c in ds.picks(1, i)]
    for e in range(30):
        assert sorted(useq[2 * e: 2 * e + 2]) == [0, 1]
    # the batches really hold those cases
    for i in range(3):
        which = _which(ds[i]["image"])
        assert which[:2] == [c + 1 for c in ds.picks(0, i)] and which[2:] == [-(c + 1) for c in ds.picks(1, i)]
    counts = Counter(c for i in range(3) for c in ds.picks(0, i))  # 2 epochs exactly
    assert counts == {0: 2, 1: 2, 2: 2}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("image", "label", "sdf"))


def test_batches_deterministic_and_resumable():
    labeled, unlabeled = _cases()
    cfg = _cfg(iterations=8)
    a = TrainBatches(labeled, unlabeled, cfg, RecipeConfig(), seed=3)
    b = TrainBatches(labeled, unlabeled, cfg, RecipeConfig(), seed=3, start_iteration=5)
    assert list(b.indices()) == [5, 6, 7]
    assert _same(a[6], b[6]) and _same(a[6], a[6])
    assert not _same(a[6], a[7])
    assert not _same(a[6], TrainBatches(labeled, unlabeled, cfg, RecipeConfig(), seed=4)[6])
    assert not _same(a[6], TrainBatches(labeled, unlabeled, cfg, RecipeConfig(), seed=3, rank=1)[6])


def test_loader_workers_do_not_change_batches():
    labeled, unlabeled = _cases()
    ds = TrainBatches(labeled, unlabeled, _cfg(iterations=7), RecipeConfig(), seed=9, start_iteration=2,
                      num_iterations=5)
    direct = [ds[i] for i in range(2, 7)]
    for workers in (0, 2):
        got = list(make_loader(ds, workers, pin_memory=False))
        assert len(got) == 5 and all(_same(g, d) for g, d in zip(got, direct))


def test_patch_normalisation_uses_reference_formula():
    from DTCCore.model.levelset import signed_distance_reference

    labeled, unlabeled = _cases(classes=2)
    ds = TrainBatches(labeled, unlabeled, _cfg(), RecipeConfig(sdf_normalization="patch"), seed=1)
    b = ds[4]
    label = b["label"].numpy()
    for c in (1, 2):
        np.testing.assert_allclose(b["sdf"][:, c - 1].numpy(), signed_distance_reference(label == c), atol=0)
    # sanity, independent of model/levelset.py: negative deep inside, +1 at the farthest outside voxel per item
    for n in range(2):
        for c in (1, 2):
            mask = label[n] == c
            if mask.any() and not mask.all():
                sdf = b["sdf"][n, c - 1].numpy()
                assert sdf[~mask].max() == pytest.approx(1.0) and np.all(sdf[mask] <= 0)


def _write_case(folder, name, label, image_seed=0, geometry=Geometry(spacing=(0.5, 0.5, 1.0))):
    shape = label.shape
    image = np.random.default_rng(image_seed).normal(100.0, 20.0, size=shape).astype(np.float32)
    write_image(folder / f"{name}.nrrd", image, geometry)
    write_image(folder / f"{name}_label.nrrd", label, geometry)
    return {"image": f"{name}.nrrd", "label": f"{name}_label.nrrd"}


def test_load_cases(tmp_path):
    label = np.zeros((12, 10, 8), np.uint8)
    label[3:9, 2:8, 2:6] = 1
    label[4:6, 3:5, 3:4] = 2
    entries = [_write_case(tmp_path, "a", label), _write_case(tmp_path, "b", (label > 0).astype(np.uint8), 1)]
    write_image(tmp_path / "u.nrrd", np.random.default_rng(2).normal(size=(7, 9, 5)), Geometry())
    (tmp_path / "m.json").write_text(json.dumps({"labeled": entries, "unlabeled": ["u.nrrd"]}))
    calls = []
    labeled, unlabeled = load_cases(load_manifest(tmp_path / "m.json"), 2, progress=lambda *a: calls.append(a))
    assert calls == [(1, 3, "a"), (2, 3, "b"), (3, 3, "u")]
    a = labeled[0]
    assert a.name == "a" and a.image.dtype == np.float32 and abs(float(a.image.mean())) < 1e-4
    assert abs(float(a.image.std()) - 1) < 1e-4
    np.testing.assert_array_equal(a.label, label)
    assert a.sdf.shape == (2, 12, 10, 8) and a.sdf.dtype == np.float32
    for c in (1, 2):  # sign and range against SciPy: negative strictly inside, positive outside
        mask = label == c
        interior = ndimage.binary_erosion(mask)
        assert np.all(a.sdf[c - 1][interior] < 0) and np.all(a.sdf[c - 1][~mask] > 0)
        assert a.sdf[c - 1].min() >= -1 and a.sdf[c - 1].max() == pytest.approx(1.0)
    assert unlabeled[0].image.shape == (7, 9, 5) and unlabeled[0].name == "u"


def test_load_cases_errors(tmp_path):
    entry = _write_case(tmp_path, "e", np.zeros((6, 6, 4), np.uint8))
    (tmp_path / "m.json").write_text(json.dumps({"labeled": [entry]}))
    with pytest.raises(DTCError, match=r"label .*e_label\.nrrd is empty: a labeled example needs at least one"):
        load_cases(load_manifest(tmp_path / "m.json"), 1)
    label = np.ones((6, 6, 4), np.uint8)
    label[0] = 3
    entry = _write_case(tmp_path, "f", label)
    (tmp_path / "n.json").write_text(json.dumps({"labeled": [entry]}))
    with pytest.raises(DTCError, match=r"has values \{1, 3\}"):
        load_cases(load_manifest(tmp_path / "n.json"), 1)
    off = _write_case(tmp_path, "g", np.ones((6, 6, 4), np.uint8))
    write_image(tmp_path / "g_label.nrrd", np.ones((6, 6, 4), np.uint8), Geometry(origin=(5.0, 0.0, 0.0)))
    (tmp_path / "o.json").write_text(json.dumps({"labeled": [off]}))
    with pytest.raises(DTCError, match="not on the image grid"):
        load_cases(load_manifest(tmp_path / "o.json"), 1)
