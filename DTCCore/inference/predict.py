"""Whole-volume prediction: normalise, sliding window, label, level set, dual-task disagreement.

``predict_volume`` is what the CLI ``segment`` command and the Slicer module call. It runs
:func:`DTCCore.inference.sliding_window.sliding_window` with the run's inference settings, falls back to fewer
windows per pass and then to the CPU when the GPU runs out of memory, and returns every output on the
input grid (x, y, z). The sliding window blends what its model returns; here that model is the network
wrapped in :class:`ProbabilityOutputs` (the segmentation activation per window, so probabilities are
blended) and, with ``infer.tta``, in :class:`DTCCore.inference.tta.FlipTurnAverage` around that.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..config import DTCConfig
from ..data.intensity import normalize
from ..data.resample import needs_resampling, resize_linear, target_shape
from ..errors import DTCError
from ..model.batchnorm import fold_batchnorm
from ..model.network import DualTaskVNet, seg_probability
from ..planning.dims import check_slice_axis, model_grid
from ..planning.pools import size_multiples
from ..protocol import OUTSIDE_LEVELSET
from ..runtime.precision import autocast_dtype
from .sliding_window import WHOLE_VOLUME_MAX_VOXELS, sliding_window, strides_from_overlap, whole_volume_patch

__all__ = ["Prediction", "ProbabilityOutputs", "predict_volume", "sliding_window", "fold_batchnorm"]

# Inference copies (BatchNorm folded, channels-last) per caller's model, reused while none of the model's
# tensors changed (their in-place version counters and identities): the copy costs ~0.1-0.6 s a call.
_INFERENCE_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()



@dataclass
class Prediction:
    """Outputs of :func:`predict_volume` on the input grid (X, Y, Z), float32 unless stated.

    probability: foreground probability (X, Y, Z) for one class; (C+1, X, Y, Z) softmax for C > 1 classes.
    levelset: level-set head output in [-1, 1], negative inside: (X, Y, Z) or (C, X, Y, Z).
    levelset_probability: ``sigmoid(-k * levelset)``, same shape as ``levelset``.
    disagreement: |probability - levelset_probability| (X, Y, Z); multi-class: maximum over classes.
    label: uint8 (X, Y, Z), 0 = background, c = foreground class c.
    device: where the windows actually ran (after any out-of-memory fallback), e.g. "cuda:0" or "cpu".
    """

    probability: np.ndarray
    levelset: np.ndarray
    levelset_probability: np.ndarray
    disagreement: np.ndarray
    label: np.ndarray
    device: str = ""


class ProbabilityOutputs(nn.Module):
    """Wrap a model returning ``(seg_logits (B, Cs, X, Y, Z), lsf (B, Cl, X, Y, Z))``; return
    ``(seg_probability(seg_logits) (B, Cs, X, Y, Z), lsf (B, Cl, X, Y, Z))``, both cast to float32 first.

    The activation (:func:`DTCCore.model.network.seg_probability`: sigmoid for one channel, softmax over the
    channels otherwise) taken per window, so that the sliding window blends probabilities and test-time
    augmentation averages them. The wrapper takes the wrapped model's train/eval mode, so
    ``sliding_window``'s restoring of the mode leaves that model as it was.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg, lsf = self.model(image)
        return seg_probability(seg.float()), lsf.float()


def predict_volume(
    model: nn.Module,
    image_xyz: np.ndarray,
    config: DTCConfig,
    device: torch.device | str = "cpu",
    roi: tuple[slice, slice, slice] | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    spacing: Sequence[float] | None = None,
) -> Prediction:
    """Segment one volume with a dual-task network.

    Args:
        model: a ``DualTaskVNet`` (or any module returning ``(seg_logits, lsf)``); moved to ``device``.
        image_xyz: (X, Y, Z) intensities, any real dtype (used as float32).
        config: the run's config: ``train.patch`` is the window, ``infer`` the sliding-window settings,
            ``infer.precision`` the forward passes' precision (runtime/precision.py: "auto" is bf16 on CUDA and on
            CPUs with native bf16), ``recipe.k`` the inverse transform,
            ``recipe.mode == "lsf"`` takes the label from the level set (that ablation has no seg head).
        device: where to run; on GPU out-of-memory the windows per pass are halved down to 1, then the
            CPU is used (each step reported through ``log``).
        roi: optional (x, y, z) slices; only this box is normalised and predicted. Outside it: probability
            0 (multi-class: background 1), label 0, level set +1, disagreement 0.
        progress: ``progress(done, total)`` windows, forwarded to the sliding window.
        log: receives one plain-English line per fallback step.
        spacing: the scan's voxel size (mm, x y z). A model with a plan spacing (``config.plan.spacing``)
            predicts on its own grid: the (ROI of the) scan is resampled there linearly, and the
            probabilities and level sets come back to the scan's grid linearly and are thresholded there
            (see data/resample.py). Required for such a model unless the scan already has its spacing.

    Returns:
        :class:`Prediction` with every array on the input grid.
    """
    image = np.asarray(image_xyz)
    if image.ndim != 3:
        raise DTCError(f"image has shape {image.shape}; expected a single 3-D volume (X, Y, Z)")
    region = _check_roi(roi, image.shape)
    crop = image[region]
    if crop.size == 0:
        raise DTCError(f"the region of interest {region} is empty; choose a box inside the {image.shape} volume")

    plan_spacing = config.plan.spacing
    if plan_spacing is not None and spacing is None:
        raise DTCError(f"this model works at {_mm(plan_spacing)}: give the scan's spacing to resample it")
    dims = int(config.network.dims)
    if dims == 2 and spacing is not None:
        check_slice_axis(spacing)  # a 2-D model's slices must be the scan's slices
        plan_spacing = model_grid(plan_spacing, spacing, dims)  # in-plane only: the scan keeps its slices
    resample = spacing is not None and needs_resampling(spacing, plan_spacing)
    if resample:
        crop = resize_linear(crop, target_shape(crop.shape, spacing, plan_spacing))  # type: ignore[arg-type]
    normalized = np.ascontiguousarray(normalize(crop), dtype=np.float32)
    seg, lsf, used = _run_with_fallback(model, normalized, config, torch.device(device), progress, log)
    if resample:
        inner_shape = tuple(s.stop - s.start for s in region)
        seg, lsf = resize_linear(seg, inner_shape), resize_linear(lsf, inner_shape)
    inner = _crop_outputs(seg, lsf, config)

    num_classes = config.network.num_classes
    shape = image.shape
    if num_classes == 1:
        probability = np.zeros(shape, np.float32)
        levelset = np.full(shape, OUTSIDE_LEVELSET, np.float32)
    else:
        probability = np.zeros((num_classes + 1,) + shape, np.float32)
        probability[0] = 1.0  # outside the ROI is background with certainty
        levelset = np.full((num_classes,) + shape, OUTSIDE_LEVELSET, np.float32)
    disagreement = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    channel_region = (slice(None),) + region
    probability[region if num_classes == 1 else channel_region] = inner["probability"]
    levelset[region if num_classes == 1 else channel_region] = inner["levelset"]
    disagreement[region] = inner["disagreement"]
    label[region] = inner["label"]

    from ..model.levelset import inverse_transform

    return Prediction(
        probability=probability,
        levelset=levelset,
        levelset_probability=np.asarray(inverse_transform(levelset, config.recipe.k), dtype=np.float32),
        disagreement=disagreement,
        label=label,
        device=str(used),
    )


def _mm(spacing: Sequence[float]) -> str:
    return "x".join(f"{float(v):g}" for v in spacing) + " mm"


def _check_roi(roi: tuple[slice, slice, slice] | None, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """Validate ``roi`` against ``shape`` and return three slices with explicit bounds and step 1."""
    if roi is None:
        return tuple(slice(0, d) for d in shape)  # type: ignore[return-value]
    if len(roi) != 3 or not all(isinstance(s, slice) for s in roi):
        raise DTCError("the region of interest must be three (x, y, z) slices")
    out = []
    for s, d in zip(roi, shape):
        start, stop, step = s.indices(d)
        if step != 1:
            raise DTCError("the region of interest must be a box (slices with step 1)")
        out.append(slice(start, max(start, stop)))
    return tuple(out)  # type: ignore[return-value]


def _crop_outputs(seg: np.ndarray, lsf: np.ndarray, config: DTCConfig) -> dict[str, np.ndarray]:
    """Turn blended probabilities (Cs, ...) and level sets (Cl, ...) into probability, level set, disagreement,
    label."""
    from ..model.levelset import inverse_transform

    num_classes = config.network.num_classes
    expected = (1, 1) if num_classes == 1 else (num_classes + 1, num_classes)
    if (seg.shape[0], lsf.shape[0]) != expected:
        raise DTCError(
            f"the model outputs {seg.shape[0]} segmentation and {lsf.shape[0]} level-set channels but the "
            f"config says num_classes={num_classes}; use the config saved with this model"
        )
    lsp = np.asarray(inverse_transform(lsf, config.recipe.k), dtype=np.float32)
    threshold = config.infer.threshold
    if num_classes == 1:
        probability, levelset, lsp = seg[0], lsf[0], lsp[0]
        disagreement = np.abs(probability - lsp)
        source = lsp if config.recipe.mode == "lsf" else probability
        label = (source > threshold).astype(np.uint8)  # reference: probability > 0.5
    else:
        probability, levelset = seg, lsf
        disagreement = np.abs(seg[1:] - lsp).max(axis=0)
        if config.recipe.mode == "lsf":
            label = np.where(lsp.max(axis=0) > threshold, lsp.argmax(axis=0) + 1, 0).astype(np.uint8)
        else:
            label = seg.argmax(axis=0).astype(np.uint8)
    if config.infer.largest_component:
        from .postprocess import largest_component_per_class

        label = largest_component_per_class(label, num_classes)
    return {
        "probability": probability.astype(np.float32, copy=False),
        "levelset": levelset.astype(np.float32, copy=False),
        "disagreement": disagreement.astype(np.float32, copy=False),
        "label": label,
    }


def inference_copy(model: DualTaskVNet) -> nn.Module:
    """The eval-mode copy of ``model`` that inference runs (the caller's model is untouched): BatchNorm
    folded into the convolutions, channels-last weights. Cached per model until one of its parameters or
    buffers is replaced or changed in place (a training step, ``load_state_dict``)."""
    state = tuple((id(t), t._version, t.device) for t in itertools.chain(model.parameters(), model.buffers()))
    cached = _INFERENCE_COPIES.get(model)
    if cached is not None and cached[0] == state:
        return cached[1]
    # Module.to takes memory_format at run time; torch's type overloads leave it out
    layout = torch.channels_last if model.dims == 2 else torch.channels_last_3d
    folded = fold_batchnorm(model).to(memory_format=layout)  # type: ignore[call-overload]
    _INFERENCE_COPIES[model] = (state, folded)
    return folded


def window_stride(config: DTCConfig) -> tuple[int, int, int] | None:
    """The sliding window's stride (voxels, x y z): ``infer.stride``, or None (from ``infer.overlap``). A 2-D
    model's slices are independent, so its windows overlap in the plane only: z stride = patch z."""
    if config.infer.stride is not None:
        return tuple(int(s) for s in config.infer.stride)  # type: ignore[return-value]
    if int(config.network.dims) != 2:
        return None
    patch = tuple(int(p) for p in config.train.patch)
    return strides_from_overlap(patch, config.infer.overlap)[:2] + (patch[2],)  # type: ignore[return-value]


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc)
    )


def _run_with_fallback(
    model: nn.Module,
    image: np.ndarray,
    config: DTCConfig,
    device: torch.device,
    progress: Callable[[int, int], None] | None,
    log: Callable[[str], None] | None,
) -> tuple[np.ndarray, np.ndarray, torch.device]:
    """Sliding window over ``image`` (X, Y, Z); returns (seg probability (Cs, X, Y, Z), lsf (Cl, X, Y, Z),
    device used)."""
    infer = config.infer
    batch = max(1, int(infer.batch_windows))
    patch, stride = tuple(config.train.patch), window_stride(config)
    if infer.whole_volume:
        whole = whole_volume_patch(image.shape, patch, size_multiples(config.network.pools))
        if math.prod(whole) <= WHOLE_VOLUME_MAX_VOXELS:
            patch, stride = whole, whole  # one forward pass (see InferConfig.whole_volume)
        else:
            _say(log, f"volume too large for one pass ({math.prod(whole)} voxels padded); using windows")
    current = device
    model.to(device)
    if isinstance(model, DualTaskVNet):
        model = inference_copy(model)
    model = ProbabilityOutputs(model)  # the windows' probabilities are blended (and averaged below)
    if infer.tta:  # test-time augmentation over the flips or turns the model was trained with (inference/tta.py)
        from .tta import FlipTurnAverage, tta_flip_axes, tta_turns

        augment = config.train.augment
        model = FlipTurnAverage(model, tta_flip_axes(augment),
                                tta_turns(augment, config.train.patch, config.network.pools))
    try:
        while True:
            try:
                tensor = torch.from_numpy(image)[None, None].to(current)
                amp_dtype = autocast_dtype(config.infer.precision, current)
                seg, lsf = sliding_window(
                    model, tensor, patch, stride=stride, overlap=infer.overlap,
                    blend=infer.blend, batch_windows=batch, amp_dtype=amp_dtype, progress=progress,
                )
                return seg[0].cpu().numpy(), lsf[0].cpu().numpy(), current
            except RuntimeError as exc:
                if not _is_out_of_memory(exc):
                    raise
            tensor = seg = lsf = None  # type: ignore[assignment]  # free before retrying
            if current.type == "cuda":
                torch.cuda.empty_cache()
            where = "CPU" if current.type == "cpu" else "GPU"
            if patch != tuple(config.train.patch):
                _say(log, f"{where} out of memory in one whole-volume pass; retrying with windows")
                patch, stride = tuple(config.train.patch), window_stride(config)
            elif batch > 1:
                _say(log, f"{where} out of memory with {batch} windows per pass; retrying with {batch // 2}")
                batch //= 2
            elif current.type != "cpu":
                _say(log, f"{where} out of memory with 1 window per pass; retrying on the CPU (slower)")
                current = torch.device("cpu")
                model.to(current)
            else:
                raise DTCError(
                    "out of memory on the CPU even with 1 window per pass; close other programs or "
                    "segment a smaller region of interest"
                )
    finally:
        if current != device:
            model.to(device)  # leave the caller's model where it was asked to be


def _say(log: Callable[[str], None] | None, message: str) -> None:
    if log is not None:
        log(message)
