"""Training batches: loading the cases of a manifest, random crops, and the batches of each iteration
(augmentation: :mod:`.augment`).

Volumes are (X, Y, Z) arrays; a signed distance map is (C, X, Y, Z) with one channel per foreground
class. Each labeled volume's signed distance (the LSF head's target) is computed once at load, normalised
per volume (``recipe.sdf_normalization == "volume"``, see model/levelset.py); with ``"patch"`` it is recomputed
for every crop with the reference's per-patch formula instead (slow; for comparison only).

A batch is a deterministic function of ``(seed, rank, iteration)`` alone (:class:`TrainBatches`), so
resuming a run, or changing the number of loader workers, never changes the data seen.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from ..config import AUGMENT_MIRROR, AUGMENT_NONE, augment_choice
from ..data.images import case_name, read_image, read_label
from ..data.intensity import normalize
from ..data.manifest import Manifest
from ..data.resample import needs_resampling, resample_label, resize_linear, target_shape
from ..errors import DTCError
from ..planning.dims import model_grid
from . import augment

# Value used to pad each array when a volume is smaller than the patch. Image: 0 = the mean intensity
# after z-scoring (the reference pads its normalised images with 0); label: background; sdf: +1 = far
# outside the object (the normalised signed distance is positive outside, at most 1).
PAD_VALUES = {"image": 0.0, "label": 0, "sdf": 1.0}
# Stream tags that keep the random streams of one (seed, rank) independent of each other.
LABELED_ORDER, UNLABELED_ORDER, CROP_STREAM = 0, 1, 2
_ORDER_CACHE_SIZE = 16  # epoch permutations kept per stream (a batch touches at most 2 epochs)

Progress = Callable[[int, int, str], None]  # (volumes done, volumes in all, name of the last one)


@dataclass
class LabeledCase:
    """A labeled volume: ``image`` float32 (X, Y, Z) z-scored, ``label`` uint8 (X, Y, Z) in 0..C,
    ``sdf`` float32 (C, X, Y, Z) normalised signed distance (negative inside, [-1, 1])."""

    name: str
    image: np.ndarray
    label: np.ndarray
    sdf: np.ndarray


@dataclass
class UnlabeledCase:
    """An unlabeled volume: ``image`` float32 (X, Y, Z) z-scored."""

    name: str
    image: np.ndarray


def volume_sdf(label: np.ndarray, num_classes: int, dims: int = 3,
               spacing: tuple[float, float, float] | None = None) -> np.ndarray:
    """Signed distance of a label map, float32 (C, X, Y, Z): per-volume normalisation in voxel units (3-D), or
    each z-slice's in-plane signed distance normalised per slice, in ``spacing``'s x/y units (``dims=2``)."""
    from ..model.levelset import signed_distance_multiclass

    classes = np.asarray(label > 0) if num_classes == 1 else label
    return np.asarray(signed_distance_multiclass(classes, num_classes, spacing if dims == 2 else None, dims=dims),
                      dtype=np.float32)


def load_cases(
    manifest: Manifest, num_classes: int, progress: Progress | None = None,
    spacing: tuple[float, float, float] | None = None, dims: int = 3,
) -> tuple[list[LabeledCase], list[UnlabeledCase]]:
    """Read, check and normalise every volume of ``manifest``; compute each label's signed distance once.

    Labels must lie on their image's grid with values in 0..num_classes, and hold at least one
    foreground voxel (DTCError otherwise). Unlabeled volumes may have any size. ``progress(done, total,
    name)`` is called after each volume. With ``spacing`` (the model plan, mm) each volume is first
    resampled once to that spacing (images linearly, labels through their signed distances, see
    data/resample.py) and the level-set target is computed on that grid. ``dims=2`` (a 2-D model): the target
    is each slice's in-plane signed distance (:func:`volume_sdf`), and the scans keep their own slices (only
    the plane is resampled, :func:`~DTCCore.planning.dims.model_grid`).
    """
    total = len(manifest.labeled) + len(manifest.unlabeled)
    labeled: list[LabeledCase] = []
    unlabeled: list[UnlabeledCase] = []
    for pair in manifest.labeled:
        image, geometry = read_image(pair.image)
        label = read_label(pair.label, geometry, image.shape, num_classes)
        if not label.any():
            raise DTCError(
                f"label {pair.label} is empty: a labeled example needs at least one foreground voxel; "
                "draw the structure or move the image to 'unlabeled'"
            )
        name = case_name(pair.image)
        grid = model_grid(spacing, geometry.spacing, dims)
        if needs_resampling(geometry.spacing, grid):
            shape = target_shape(image.shape, geometry.spacing, grid)  # type: ignore[arg-type]
            image = resize_linear(image, shape)
            label = resample_label(label, geometry.spacing, shape, num_classes)
            if not label.any():
                raise DTCError(f"label {pair.label} vanishes at the model spacing {spacing} mm: the structure is "
                               "smaller than a voxel there; train with a finer --spacing")
        sdf = volume_sdf(label, num_classes, dims, grid or geometry.spacing)
        labeled.append(LabeledCase(name, normalize(image), label, sdf))
        del image
        if progress is not None:
            progress(len(labeled), total, name)
    for path in manifest.unlabeled:
        image, geometry = read_image(path)
        name = case_name(path)
        grid = model_grid(spacing, geometry.spacing, dims)
        if needs_resampling(geometry.spacing, grid):
            image = resize_linear(image, target_shape(image.shape, geometry.spacing, grid))  # type: ignore[arg-type]
        unlabeled.append(UnlabeledCase(name, normalize(image)))
        del image
        if progress is not None:
            progress(len(labeled) + len(unlabeled), total, name)
    return labeled, unlabeled


def random_crop(arrays: Mapping[str, np.ndarray], patch, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Crop the same random ``patch`` (px, py, pz) from every array (spatial axes = the last three).

    Along an axis where the volume (size s) is smaller than the patch (size p), the volume lands at a
    random offset 0..p-s inside the patch, uniform, the rest filled with ``PAD_VALUES[key]`` (0 for
    unknown keys): the array is padded by p-s on both sides and the crop corner drawn over all valid
    positions. Always padding centred would show the network a thin volume (e.g. a 6-slice cardiac MRI
    in a 16-slice patch) at one position only, and it fails on scans with other slice counts (ACDC,
    our measurement); the reference also moves small volumes, by up to 3 voxels (it pads 3 more and
    draws ``randint(0, w - p)``). Along other axes the corner is uniform over all valid positions, the
    last one included. One draw per axis either way. Returns views where no padding was needed.
    """
    patch = tuple(int(p) for p in patch)
    shapes = {a.shape[-3:] for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"random_crop: arrays have different spatial shapes {sorted(shapes)}")
    shape = shapes.pop()
    deficit = [max(p - s, 0) for p, s in zip(patch, shape)]
    padded = {}
    for key, a in arrays.items():
        if any(deficit):
            width = [(0, 0)] * (a.ndim - 3) + [(d, d) for d in deficit]
            a = np.pad(a, width, mode="constant", constant_values=PAD_VALUES.get(key, 0))
        padded[key] = a
    full = [s + 2 * d for s, d in zip(shape, deficit)]
    corner = [int(rng.integers(0, f - p + 1)) for f, p in zip(full, patch)]
    window = tuple(slice(c, c + p) for c, p in zip(corner, patch))
    return {key: a[(Ellipsis,) + window] for key, a in padded.items()}


def stream_rng(*keys: int) -> np.random.Generator:
    """The random stream of ``keys`` (seed, rank, a stream tag such as ``CROP_STREAM``, then an epoch or iteration):
    the same keys draw the same numbers in any process, which is what makes a resumed run repeat."""
    return np.random.default_rng([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys])


class TrainBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``i`` is the whole batch of training iteration ``i``.

    ``{"image": float32 (Lb+Ub, 1, X, Y, Z), "label": int64 (Lb, X, Y, Z), "sdf": float32 (Lb, C, X, Y, Z)}``
    with the Lb labeled crops first. Lb = ``train_cfg.labeled_batch``, Ub = ``train_cfg.unlabeled_batch``
    (0 when there is no unlabeled volume), (X, Y, Z) = ``train_cfg.patch``.

    The batch is a function of ``(seed, rank, i)`` only. Labeled cases are cycled per epoch: epoch e is a
    permutation drawn from (seed, rank, e) and iteration i takes items ``i*Lb .. i*Lb+Lb-1`` of the
    concatenated epochs; unlabeled volumes likewise with Ub. Crops and augmentation draw from
    (seed, rank, i). Valid indices: ``indices()`` = start_iteration .. start_iteration+num_iterations-1.
    """

    def __init__(self, labeled: list[LabeledCase], unlabeled: list[UnlabeledCase], train_cfg, recipe, seed: int,
                 rank: int = 0, start_iteration: int = 0, num_iterations: int | None = None):
        if not labeled:
            raise DTCError("no labeled case: training needs at least 1 labeled image + label")
        self.labeled = list(labeled)
        self.unlabeled = list(unlabeled)
        self.patch = tuple(int(p) for p in train_cfg.patch)
        self.labeled_batch = int(train_cfg.labeled_batch)
        self.unlabeled_batch = int(train_cfg.unlabeled_batch) if self.unlabeled else 0
        self.patch_sdf = recipe.sdf_normalization == "patch"
        self.augment = augment_choice(getattr(train_cfg, "augment", AUGMENT_MIRROR))
        self.nnunet = bool(getattr(train_cfg, "nnunet_augment", False))
        self.num_classes = int(self.labeled[0].sdf.shape[0])
        self.seed, self.rank = int(seed), int(rank)
        self.start_iteration = int(start_iteration)
        if num_iterations is None:
            num_iterations = int(train_cfg.iterations) - self.start_iteration
        self.num_iterations = max(int(num_iterations), 0)
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return self.start_iteration + self.num_iterations

    def indices(self) -> range:
        """The iterations this dataset serves, in order."""
        return range(self.start_iteration, self.start_iteration + self.num_iterations)

    def _order(self, stream: int, n: int, epoch: int) -> np.ndarray:
        key = (stream, epoch)
        if key not in self._orders:
            if len(self._orders) >= _ORDER_CACHE_SIZE:
                self._orders.clear()
            self._orders[key] = stream_rng(self.seed, self.rank, stream, epoch).permutation(n)
        return self._orders[key]

    def picks(self, stream: int, i: int) -> list[int]:
        """Case indices used by iteration ``i`` for a stream (``LABELED_ORDER`` or ``UNLABELED_ORDER``)."""
        n, per = (len(self.labeled), self.labeled_batch) if stream == LABELED_ORDER else (
            len(self.unlabeled), self.unlabeled_batch)
        out = []
        for p in range(i * per, i * per + per):
            epoch, pos = divmod(p, n)
            out.append(int(self._order(stream, n, epoch)[pos]))
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        if i < 0:
            raise IndexError(i)
        rng = stream_rng(self.seed, self.rank, CROP_STREAM, i)
        images, labels, sdfs = [], [], []
        for c in self.picks(LABELED_ORDER, i):
            case = self.labeled[c]
            arrays = {"image": case.image, "label": case.label}
            if not self.patch_sdf:
                arrays["sdf"] = case.sdf
            arrays = self._crop(arrays, rng)
            images.append(arrays["image"])
            labels.append(arrays["label"])
            if not self.patch_sdf:
                sdfs.append(arrays["sdf"])
        for c in self.picks(UNLABELED_ORDER, i):
            images.append(self._crop({"image": self.unlabeled[c].image}, rng)["image"])
        label = np.stack(labels)
        sdf = self._patch_sdf(label) if self.patch_sdf else np.stack(sdfs)
        return {
            "image": torch.from_numpy(np.stack(images)[:, None].astype(np.float32, copy=False)),
            "label": torch.from_numpy(label.astype(np.int64)),
            "sdf": torch.from_numpy(np.ascontiguousarray(sdf, dtype=np.float32)),
        }

    def _crop(self, arrays: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One training crop of the patch size with its augmentations: (nnU-Net scaling), flips/turns,
        (nnU-Net intensity changes of the image)."""
        if self.nnunet:
            out = augment.scaled_crop(arrays, self.patch, rng, random_crop)
        else:
            out = random_crop(arrays, self.patch, rng)
        if self.augment != AUGMENT_NONE:
            out = augment.flips_and_turns(out, rng, self.augment)
        if self.nnunet:
            out = dict(out, image=augment.intensity(out["image"], rng))
        return out

    def _patch_sdf(self, label: np.ndarray) -> np.ndarray:
        """Reference per-patch signed distance of a label batch (Lb, X, Y, Z) -> (Lb, C, X, Y, Z)."""
        from ..model.levelset import signed_distance_reference

        channels = [np.asarray(signed_distance_reference(label == c), dtype=np.float32)
                    for c in range(1, self.num_classes + 1)]
        return np.stack(channels, axis=1)


def _worker_init(_worker_id: int) -> None:
    """In each batch worker: 1 thread, and a process group of its own (POSIX).

    A cancel signals the trainer's whole process group (the panel's SIGTERM, since Slicer's launcher
    forwards none; Ctrl-C's SIGINT in a terminal). The trainer turns the signal into a checkpoint and a
    clean stop, which then ends the workers; a worker killed by the same signal would instead make the
    loader raise "DataLoader worker killed" before the checkpoint. In their own group the workers keep
    PyTorch's handling (they exit when the trainer ends them, or within seconds of its death: PyTorch's
    worker watchdog).
    """
    torch.set_num_threads(1)  # crops are NumPy work; avoid oversubscribing the cores
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)


def make_loader(dataset: TrainBatches, num_workers: int = 2, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Iterate ``dataset.indices()`` in order, batches built by ``num_workers`` background processes.

    Each item is already a whole batch (``batch_size=None``). Workers prefetch 2 batches each and
    persist; on Linux they are forked, so the volumes are shared with the parent, not copied.
    """
    kwargs: dict = {}
    if num_workers > 0:
        kwargs.update(prefetch_factor=2, persistent_workers=True, worker_init_fn=_worker_init)
        if "fork" in multiprocessing.get_all_start_methods():
            kwargs["multiprocessing_context"] = "fork"
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=dataset.indices(),
                                       num_workers=int(num_workers), pin_memory=bool(pin_memory), **kwargs)
