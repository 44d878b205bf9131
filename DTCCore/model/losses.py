"""The DTC losses (the semantics of the reference code's ``train_la_dtc.py``, github.com/HiLab-git/DTC).

    total = Dice(seg_prob[labeled], y) + beta * MSE(lsf[labeled], T(y))
            + lambda(t) * mean((T^-1(lsf) - seg_prob)^2)     (whole batch: labeled and unlabeled)

Ablation modes (paper Table 1): ``seg`` (Dice only), ``lsf`` (beta * MSE only), ``seg+lsf`` (both, no
consistency), ``dtc`` (all three). Outside ``dtc`` the unlabeled items of the batch take no part in the
total (the consistency value is still reported, computed without gradient, for the curves).

Foreground probability: sigmoid of the single channel (``num_classes == 1``, the reference), or
``softmax(seg_logits)[:, 1:]`` for C > 1 classes; level-set channel c is paired with class c + 1.
All loss arithmetic runs in float32, also under autocast.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from ..config import DTC_MODES, RecipeConfig
from ..errors import DTCError
from .levelset import inverse_transform
from .network import foreground_probability

DICE_SMOOTH = 1e-5  # reference losses.dice_loss: smooth = 1e-5 in numerator and denominator
RAMP_SHARPNESS = 5.0  # reference ramps.sigmoid_rampup: exp(-5 (1 - t/L)^2)


def dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reference soft Dice loss, 0-dim tensor.

    prob, target: (N, C, X, Y, Z) foreground probabilities and 0/1 targets (any shape with a channel axis
    1 works; a tensor without a channel axis may be passed with ``prob[:, None]``). Per class c:
    ``1 - (2 sum(p y) + 1e-5) / (sum(p^2) + sum(y^2) + 1e-5)``, sums over the batch and space; the result
    is the mean over the C classes (C = 1: exactly the reference).
    """
    if prob.shape != target.shape:
        raise ValueError(f"dice_loss: prob {tuple(prob.shape)} and target {tuple(target.shape)} differ")
    target = target.to(prob.dtype)
    dims = [0] + list(range(2, prob.ndim))
    intersect = (prob * target).sum(dims)
    z_sum = (prob * prob).sum(dims)
    y_sum = (target * target).sum(dims)
    per_class = 1.0 - (2.0 * intersect + DICE_SMOOTH) / (z_sum + y_sum + DICE_SMOOTH)
    return per_class.mean()


def lsf_loss(lsf: torch.Tensor, sdf: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted level sets and T(y), same shapes; 0-dim tensor."""
    return F.mse_loss(lsf, sdf.to(lsf.dtype))


def consistency_loss(seg_prob: torch.Tensor, lsf: torch.Tensor, k: float) -> torch.Tensor:
    """Dual-task consistency ``mean((T^-1(lsf) - seg_prob)^2)`` over every element; no detach.

    seg_prob, lsf: (N, C, X, Y, Z) foreground probabilities and level sets (paired by channel).
    """
    if seg_prob.shape != lsf.shape:
        raise ValueError(f"consistency_loss: seg_prob {tuple(seg_prob.shape)} and lsf {tuple(lsf.shape)} differ")
    return torch.mean((inverse_transform(lsf, k) - seg_prob) ** 2)


def ramp_weight(iteration: int, recipe: RecipeConfig) -> float:
    """lambda(t) = consistency * exp(-5 (1 - t/L)^2), t = clip(iteration // ramp_unit, 0, L).

    L = ``recipe.consistency_rampup`` (reference 40) in units of ``recipe.ramp_unit`` iterations (reference
    150), so the weight reaches ``recipe.consistency`` at iteration 6000; L == 0 -> no ramp.
    """
    length = float(recipe.consistency_rampup)
    if length == 0.0:
        return float(recipe.consistency)
    t = min(max(float(int(iteration) // int(recipe.ramp_unit)), 0.0), length)
    phase = 1.0 - t / length
    return float(recipe.consistency) * math.exp(-RAMP_SHARPNESS * phase * phase)


def no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """A context in which ``device_type``'s autocast is off (losses in fp32 under a bf16 forward pass)."""
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        return contextlib.nullcontext()


def compute_losses(
    seg_logits: torch.Tensor,
    lsf: torch.Tensor,
    label: torch.Tensor,
    sdf: torch.Tensor,
    n_labeled: int,
    iteration: int,
    recipe: RecipeConfig,
    mode: str | None = None,
) -> dict[str, torch.Tensor]:
    """All DTC losses of one batch; returns 0-dim float32 tensors ``total, dice, lsf, consistency, lambda``.

    seg_logits (N, Cs, X, Y, Z), lsf (N, Cl, X, Y, Z): network outputs; Cs = 1 and Cl = 1 for one class,
    Cs = C + 1 and Cl = C for C > 1 classes. label (n_labeled, X, Y, Z) long in 0..C; sdf
    (n_labeled, Cl, X, Y, Z) float, T of each class. The first ``n_labeled`` batch items are labeled.
    ``mode`` (default ``recipe.mode``) picks the terms; ``lambda`` is the consistency weight applied to the
    total (0 outside ``dtc``), ``consistency`` is always the value over the whole batch.
    """
    mode = recipe.mode if mode is None else mode
    if mode not in DTC_MODES:  # the copy-paste modes have their own losses (copypaste_loss.py)
        raise DTCError(f"unknown mode {mode!r} for these losses; use one of {', '.join(DTC_MODES)}")
    n = seg_logits.shape[0]
    n_lsf = lsf.shape[1]
    if not 1 <= n_labeled <= n or label.shape[0] != n_labeled or sdf.shape[0] != n_labeled:
        raise ValueError(
            f"compute_losses: n_labeled={n_labeled}, batch {n}, label {tuple(label.shape)}, sdf {tuple(sdf.shape)}"
        )
    expected_seg = 1 if n_lsf == 1 else n_lsf + 1
    if seg_logits.shape[1] != expected_seg or sdf.shape[1] != n_lsf:
        raise ValueError(
            f"compute_losses: seg channels {seg_logits.shape[1]}, lsf channels {n_lsf}, sdf {tuple(sdf.shape)} mismatch"
        )

    with no_autocast(seg_logits.device.type):
        seg_logits = seg_logits.float()
        lsf = lsf.float()
        prob = foreground_probability(seg_logits)  # (N, C, X, Y, Z)
        classes = torch.arange(1, n_lsf + 1, device=label.device).view(1, n_lsf, *([1] * (label.ndim - 1)))
        target = (label.unsqueeze(1) == classes).float()  # (n_lab, C, X, Y, Z) one-hot of classes 1..C

        dice = dice_loss(prob[:n_labeled], target)
        lsf_term = lsf_loss(lsf[:n_labeled], sdf.float())
        weight = ramp_weight(iteration, recipe) if mode == "dtc" else 0.0
        if mode == "dtc":
            consistency = consistency_loss(prob, lsf, recipe.k)
        else:
            with torch.no_grad():
                consistency = consistency_loss(prob, lsf, recipe.k)

        beta = float(recipe.beta)
        if mode == "seg":
            total = dice
        elif mode == "lsf":
            total = beta * lsf_term
        elif mode == "seg+lsf":
            total = dice + beta * lsf_term
        else:
            total = dice + beta * lsf_term + weight * consistency

    return {
        "total": total,
        "dice": dice,
        "lsf": lsf_term,
        "consistency": consistency,
        "lambda": torch.tensor(weight, dtype=torch.float32, device=seg_logits.device),
    }
