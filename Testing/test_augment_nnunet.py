"""nnU-Net's scaling and intensity augmentations (DTCCore/training/augment.py) and their use in TrainBatches."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from DTCCore.training import augment as aug
from DTCCore.training.batches import LabeledCase, TrainBatches, random_crop, volume_sdf


def _seed_where(predicate, limit: int = 5000) -> int:
    """The first seed whose generator satisfies ``predicate(rng)`` (drawn on a fresh copy)."""
    for seed in range(limit):
        if predicate(np.random.default_rng(seed)):
            return seed
    raise AssertionError("no seed found")


def _square(size=(64, 64, 16), half=8):
    """An image that is 1 on a centred square prism (side 2 * half, all slices) and 0 elsewhere."""
    image = np.zeros(size, np.float32)
    cx, cy = size[0] // 2, size[1] // 2
    image[cx - half:cx + half, cy - half:cy + half, :] = 1.0
    return image


def test_around_one_draws_both_sides_within_range():
    rng = np.random.default_rng(0)
    values = np.array([aug.around_one(rng, 0.7, 1.4) for _ in range(2000)])
    assert values.min() >= 0.7 and values.max() <= 1.4
    below = (values < 1).mean()
    assert 0.45 < below < 0.55  # BGContrast: either side of 1 with equal chance


def test_scaled_crop_zooms_by_the_drawn_factor():
    image = _square()
    label = (image > 0).astype(np.uint8)
    patch = (32, 32, 16)

    def fires(rng):
        u = rng.random()
        return u < aug.SCALE_PROBABILITY and aug.around_one(rng, *aug.SCALE_RANGE) < 0.8

    seed = _seed_where(fires)
    check = np.random.default_rng(seed)
    check.random()
    s = aug.around_one(check, *aug.SCALE_RANGE)
    # The crop must hold the whole square wherever it lands: use a volume just the region's size.
    region = (round(32 * s), round(32 * s))
    vol = np.zeros(region + (16,), np.float32)
    vol[region[0] // 2 - 4:region[0] // 2 + 4, region[1] // 2 - 4:region[1] // 2 + 4, :] = 1
    out = aug.scaled_crop({"image": vol, "label": (vol > 0).astype(np.uint8)}, patch,
                          np.random.default_rng(seed), random_crop)
    assert out["image"].shape == patch and out["label"].shape == patch
    assert out["label"].dtype == np.uint8 and set(np.unique(out["label"])) <= {0, 1}
    side = np.sqrt(out["label"][..., 0].sum())  # an 8x8 square zoomed by 32 / region
    assert side == pytest.approx(8 * 32 / region[0], abs=1.0)
    assert side > 9  # zoomed in: larger than the 8 voxels it had
    assert np.array_equal(out["image"] > 0.5, out["label"] > 0)  # image and label stay aligned
    del label


def test_scaled_crop_without_the_draw_is_the_plain_crop():
    image = np.random.default_rng(1).random((40, 40, 16)).astype(np.float32)
    seed = _seed_where(lambda rng: rng.random() >= aug.SCALE_PROBABILITY)
    got = aug.scaled_crop({"image": image}, (32, 32, 16), np.random.default_rng(seed), random_crop)
    rng = np.random.default_rng(seed)
    rng.random(), aug.around_one(rng, *aug.SCALE_RANGE)
    want = random_crop({"image": image}, (32, 32, 16), rng)
    assert np.array_equal(got["image"], want["image"])


def test_gamma_keeps_mean_and_sd_and_changes_shape():
    image = np.random.default_rng(2).normal(size=(16, 16, 8)).astype(np.float32)
    out = aug.gamma(image, 1.5)
    assert out.mean() == pytest.approx(image.mean(), abs=1e-4)
    assert out.std() == pytest.approx(image.std(), rel=1e-4)
    assert not np.allclose(out, image, atol=1e-2)
    assert np.allclose(aug.gamma(image, 1.0), image, atol=1e-4)  # gamma 1 is the identity


def test_intensity_without_draws_is_identity_and_with_contrast_keeps_range():
    image = np.random.default_rng(3).normal(size=(16, 16, 8)).astype(np.float32)
    probabilities = (aug.NOISE_PROBABILITY, aug.BRIGHTNESS_PROBABILITY, aug.CONTRAST_PROBABILITY,
                     aug.GAMMA_INVERTED_PROBABILITY, aug.GAMMA_PROBABILITY)
    none = _seed_where(lambda rng: all(d >= p for d, p in zip(rng.random(5), probabilities)))
    assert np.array_equal(aug.intensity(image, np.random.default_rng(none)), image)
    only_contrast = _seed_where(lambda rng: [d < p for d, p in zip(rng.random(5), probabilities)]
                                == [False, False, True, False, False])
    out = aug.intensity(image, np.random.default_rng(only_contrast))
    assert out.min() >= image.min() - 1e-6 and out.max() <= image.max() + 1e-6
    assert out.mean() == pytest.approx(image.mean(), abs=0.05)
    assert not np.allclose(out, image)


def test_train_batches_with_nnunet_augment_are_deterministic_and_aligned():
    label = np.zeros((48, 48, 16), np.uint8)
    label[14:34, 14:34, 2:14] = 1
    image = np.where(label > 0, 2.0, -1.0).astype(np.float32)
    case = LabeledCase("c", image, label, volume_sdf(label, 1))
    cfg = SimpleNamespace(patch=(32, 32, 16), labeled_batch=2, unlabeled_batch=0, iterations=200,
                          augment="mirror", nnunet_augment=True)
    recipe = SimpleNamespace(sdf_normalization="volume")
    batches = TrainBatches([case], [], cfg, recipe, seed=5)
    plain = TrainBatches([case], [], SimpleNamespace(**{**vars(cfg), "nnunet_augment": False}), recipe, seed=5)
    # The level-set target keeps its signs with the label: T <= 0 inside (0 on the inner boundary), T > 0
    # outside (model/levelset.py). A crop that was not scaled holds the case's own values, and there the signs agree
    # exactly. A scaled crop's label is resized by nearest neighbour and T linearly (x-y), so at an inside
    # voxel T mixes its nearest source (<= 0, weight >= 1/4) with 3 neighbours at most 1, 1 and sqrt(2) voxels
    # further out: T <= (1 + 1 + sqrt 2) / 4 of one voxel step outside (the case's smallest positive T).
    values = np.unique(case.sdf)
    step_out = float(values[values > 0].min())
    changed, kept, scaled = 0, 0, 0
    for i in range(60):
        a, b = batches[i], batches[i]
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
        assert a["image"].shape == (2, 1, 32, 32, 16) and a["sdf"].shape == (2, 1, 32, 32, 16)
        for inside, sdf in zip(a["label"].numpy() > 0, a["sdf"].numpy()[:, 0]):
            if np.isin(sdf, values).all():  # not scaled: the case's own values
                kept += 1
                assert (sdf[inside] <= 0).all() and (sdf[~inside] > 0).all()
            else:
                scaled += 1
                assert sdf[inside].max() <= (2 + np.sqrt(2)) / 4 * step_out + 1e-6
        changed += not np.array_equal(a["image"].numpy(), plain[i]["image"].numpy())
    assert changed > 10  # the augmentations do fire
    assert kept > 10 and scaled > 10  # both kinds of crop were checked


def test_cli_flag_sets_the_config_and_is_off_by_default():
    from DTCCore.cli import build_parser
    from DTCCore.cli.train import build_config

    parser = build_parser()
    on = build_config(parser.parse_args(["train", "m.json", "-o", "run", "--nnunet-augment"]))
    off = build_config(parser.parse_args(["train", "m.json", "-o", "run"]))
    assert on.train.nnunet_augment is True and off.train.nnunet_augment is False
