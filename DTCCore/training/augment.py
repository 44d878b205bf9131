"""Training augmentation of a crop: flips and quarter turns (``train.augment``, :func:`flips_and_turns`), and
nnU-Net's scaling and intensity augmentations on top (``train.nnunet_augment``).

With ``nnunet_augment``, each training crop may be, independently:

- **scaled** in the x-y plane (z untouched, like our other augmentations: thick-slice scans): a region of
  ``round(patch * s)`` voxels is cropped and resized to the patch (image and signed distance linearly,
  label by nearest neighbour); s < 1 zooms in, s > 1 out;
- given **Gaussian noise**, a **multiplicative brightness** change, a **contrast** change (range kept) and
  **gamma** changes (one on the inverted image), each with nnU-Net's probability and range.

Probabilities and ranges are nnU-Net v2's defaults (``nnUNetTrainer.get_training_transforms``,
batchgeneratorsv2): scaling (0.7, 1.4) p 0.2; noise variance (0, 0.1) p 0.1; brightness (0.75, 1.25)
p 0.15; contrast (0.75, 1.25) p 0.15; gamma (0.7, 1.5) p 0.1 on the inverted image and p 0.3 on the
image, both keeping the crop's mean and standard deviation. Ranges around 1 are drawn as nnU-Net's
``BGContrast`` does: below or above 1 with equal chance, uniform on that side. Not reproduced: its
Gaussian blur and low-resolution simulation, and its rotations by arbitrary angles.

The random draws come from the iteration's own generator, so a batch stays a function of (seed, rank,
iteration).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AUGMENT_MIRROR, AUGMENT_NO_MIRROR, AUGMENT_REFERENCE, augment_choice
from ..data.resample import resize_linear

SCALE_PROBABILITY, SCALE_RANGE = 0.2, (0.7, 1.4)  # nnU-Net v2 SpatialTransform p_scaling, scaling
NOISE_PROBABILITY, NOISE_VARIANCE = 0.1, (0.0, 0.1)  # nnU-Net v2 GaussianNoiseTransform
BRIGHTNESS_PROBABILITY, BRIGHTNESS_RANGE = 0.15, (0.75, 1.25)  # nnU-Net v2 MultiplicativeBrightnessTransform
CONTRAST_PROBABILITY, CONTRAST_RANGE = 0.15, (0.75, 1.25)  # nnU-Net v2 ContrastTransform, preserve_range
GAMMA_INVERTED_PROBABILITY, GAMMA_PROBABILITY = 0.1, 0.3  # nnU-Net v2: two GammaTransforms, retain stats
GAMMA_RANGE = (0.7, 1.5)  # nnU-Net v2 GammaTransform gamma
_EPS = 1e-7  # batchgenerators' epsilon in gamma's range division
MIRROR_PROBABILITY = 0.5  # "mirror" augmentation: chance of a flip per in-plane axis (nnU-Net MirrorTransform p 0.5)

Crop = Callable[[Mapping[str, np.ndarray], tuple, np.random.Generator], "dict[str, np.ndarray]"]


def flips_and_turns(arrays: Mapping[str, np.ndarray], rng: np.random.Generator,
                    mode: str = AUGMENT_REFERENCE) -> dict[str, np.ndarray]:
    """One random in-plane transform of the spatial axes (last three, x y z), the same for every array
    (image (X, Y, Z), label (X, Y, Z), sdf (C, X, Y, Z)). Returns contiguous copies of the same shapes.

    ``mode`` (config.AUGMENT_CHOICES; booleans of older configs accepted; the default is what this function
    did before the choice existed, TrainBatches always passes ``train.augment``):

    - ``"reference"``: the reference RandomRotFlip: rot90 by k in 0..3 in the x-y plane, then a flip
      along x or y. Every draw is a reflection (the scan's own orientation never appears).
    - ``"mirror"``: rot90 by k in 0..3 where X == Y (else k = 0; rot180 is then the x+y flip), then x and
      y each flipped with probability 0.5 (nnU-Net mirroring). The identity is among the draws.
    - ``"no-mirror"``: rot90 by k in 0..3 where X == Y, else k in {0, 2}; never a flip (keeps left/right).
    - ``"none"``: the arrays unchanged (still contiguous copies).

    A rotation by 90/270 degrees swaps X and Y, so when X != Y (non-square patch) only k in {0, 2} is
    used (rot180 keeps the shape): the batch shape never changes. The draws per call are always the same
    number for a mode, so a batch stays a function of (seed, rank, iteration).
    """
    mode = augment_choice(mode)
    shapes = {a.shape[-3:] for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"flips_and_turns: arrays have different spatial shapes {sorted(shapes)}")
    x, y, _ = shapes.pop()
    flips: tuple[int, ...] = ()
    k = 0
    if mode == AUGMENT_REFERENCE:
        k = int(rng.integers(0, 4))
        if x != y:
            k = 2 * (k % 2)
        flips = (int(rng.integers(0, 2)),)
    elif mode == AUGMENT_MIRROR:
        k = int(rng.integers(0, 4)) if x == y else 0
        draws = rng.random(2)
        flips = tuple(axis for axis in (0, 1) if draws[axis] < MIRROR_PROBABILITY)
    elif mode == AUGMENT_NO_MIRROR:
        k = int(rng.integers(0, 4))
        if x != y:
            k = 2 * (k % 2)
    out = {}
    for key, a in arrays.items():
        a = np.rot90(a, k, axes=(a.ndim - 3, a.ndim - 2))
        for axis in flips:
            a = np.flip(a, axis=a.ndim - 3 + axis)
        out[key] = np.ascontiguousarray(a)
    return out


def around_one(rng: np.random.Generator, low: float, high: float) -> float:
    """nnU-Net's BGContrast draw: with probability 0.5 uniform on (low, 1), else on (1, high)."""
    below, u = rng.random(2)
    return float(low + u * (1.0 - low)) if below < 0.5 else float(1.0 + u * (high - 1.0))


def scaled_crop(arrays: Mapping[str, np.ndarray], patch, rng: np.random.Generator, crop: Crop) -> dict[str, np.ndarray]:
    """``crop(arrays, patch, rng)``, but with probability SCALE_PROBABILITY the x-y size of the crop is
    ``round(patch * s)`` (s in SCALE_RANGE, z unchanged), resized back to ``patch``: "image" and "sdf"
    (any leading channel axes) linearly, "label" by nearest neighbour. Returns arrays of the patch size."""
    patch = tuple(int(p) for p in patch)
    u, s = rng.random(), around_one(rng, *SCALE_RANGE)
    if u >= SCALE_PROBABILITY:
        return crop(arrays, patch, rng)
    region = (max(1, round(patch[0] * s)), max(1, round(patch[1] * s)), patch[2])
    out = {}
    for key, a in crop(arrays, region, rng).items():
        if key == "label":
            t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
            out[key] = F.interpolate(t, size=patch, mode="nearest-exact")[0, 0].numpy().astype(a.dtype)
        else:
            out[key] = resize_linear(a, patch)
    return out


def intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """nnU-Net's noise, brightness, contrast and gamma augmentations of one crop, float32 (X, Y, Z)."""
    image = np.asarray(image, dtype=np.float32)
    draws = rng.random(5)
    noise_sd = float(np.sqrt(rng.uniform(*NOISE_VARIANCE)))
    noise = rng.standard_normal(image.shape).astype(np.float32) if draws[0] < NOISE_PROBABILITY else None
    brightness = around_one(rng, *BRIGHTNESS_RANGE)
    contrast = around_one(rng, *CONTRAST_RANGE)
    gammas = around_one(rng, *GAMMA_RANGE), around_one(rng, *GAMMA_RANGE)
    out = image.copy()
    if noise is not None:
        out += noise_sd * noise
    if draws[1] < BRIGHTNESS_PROBABILITY:
        out *= brightness
    if draws[2] < CONTRAST_PROBABILITY:
        low, high, mean = out.min(), out.max(), out.mean()
        out = np.clip((out - mean) * contrast + mean, low, high)
    if draws[3] < GAMMA_INVERTED_PROBABILITY:
        out = -gamma(-out, gammas[0])
    if draws[4] < GAMMA_PROBABILITY:
        out = gamma(out, gammas[1])
    return out.astype(np.float32, copy=False)


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    """batchgenerators' gamma with retained statistics: the range mapped to [0, 1], raised to ``g``, mapped
    back, then shifted and scaled to the input's mean and standard deviation."""
    low, span = float(image.min()), float(image.max() - image.min())
    mean, sd = float(image.mean()), float(image.std())
    out = np.power((image - low) / (span + _EPS), g) * span + low
    return (out - out.mean()) / (out.std() + 1e-8) * sd + mean
