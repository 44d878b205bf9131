"""The losses of the copy-paste modes: BCP's weighted Dice + cross-entropy on the mixed images, and our DTC terms.

Per group of mixed images (stage 1: the labeled mix; stage 2: each direction on its own, as the reference's
``loss_l + loss_u``), with ``G`` = the pixels that came from a labeled crop (ground truth) and ``P`` the others
(teacher pseudo-label), BCP_utils.py ``mix_loss``::

    loss = (w_G Dice_G + w_P Dice_P + w_G CE_G + w_P CE_P) / 2,      w_G = 1.0, w_P = 0.5

Dice_R is LA's ``mask_DiceLoss`` restricted to region R: per crop and per class, background included,
``1 - mean((2 sum_R p y + 1e-5) / (sum_R (p + y) + 1e-5))``; CE_R the per-pixel cross-entropy averaged over R
(``(CE * mask).sum() / (mask.sum() + 1e-16)``). In stage 1 every pixel is ground truth (P empty: its terms are
exactly 0), which is LA's stage-1 loss ``(CE + Dice) / 2`` on the mixed label.

Deviations: one class is our sigmoid head, its classes (1 - p, p) and binary cross-entropy, the same as the
reference's 2-channel softmax. ACDC's 2-D code uses a batch-summed squared-denominator Dice and in stage 1 the
region-split form with both weights 1; we use LA's forms for 2-D networks too (per crop = per stack of slices).

Ours on top (``recipe.cp_levelset``, ``recipe.cp_consistency``): ``+ beta * (w_G MSE_G + w_P MSE_P)`` between
the level-set head and T(mixed target) (model/levelset.py's signed distance of each mixed crop, per slice for 2-D,
normalised over the crop since the target exists only there), and ``+ lambda(t) * consistency`` (DTC's
dual-task consistency over every mixed pixel, losses.consistency_loss, lambda as in mode "dtc").
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import RecipeConfig
from ..model.losses import consistency_loss, no_autocast, ramp_weight
from ..model.network import foreground_probability, seg_probability
from .copypaste import LABELED_WEIGHT, PSEUDO_WEIGHT

MASK_DICE_SMOOTH = 1e-5  # BCP utils/losses.py mask_DiceLoss(smooth=1e-5)
MASK_MEAN_EPS = 1e-16  # BCP_utils.py mix_loss: (CE * mask).sum() / (mask.sum() + 1e-16)


def class_probabilities(seg_logits: torch.Tensor) -> torch.Tensor:
    """(N, Cs, ...) logits -> (N, K, ...) probabilities of every class, background first: K = 2 for one
    sigmoid channel (1 - p, p), else the softmax's Cs channels."""
    prob = seg_probability(seg_logits)
    return torch.cat([1.0 - prob, prob], dim=1) if prob.shape[1] == 1 else prob


def one_hot(target: torch.Tensor, classes: int) -> torch.Tensor:
    """int (N, X, Y, Z) in 0..classes-1 -> float (N, classes, X, Y, Z)."""
    return F.one_hot(target.long(), classes).movedim(-1, 1).float()


def masked_dice(prob: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCP's ``mask_DiceLoss``: prob, target (N, K, X, Y, Z) (target one-hot), mask (N, X, Y, Z) 0/1 ->
    ``1 - mean over n, k of (2 sum(m p y) + s) / (sum(m (p + y)) + s)``, s = 1e-5; 0-dim."""
    m = mask.unsqueeze(1).to(prob.dtype)
    dims = tuple(range(2, prob.ndim))
    inter = (prob * target * m).sum(dims)
    union = ((prob + target) * m).sum(dims)
    return 1.0 - ((2.0 * inter + MASK_DICE_SMOOTH) / (union + MASK_DICE_SMOOTH)).mean()


def pixel_cross_entropy(seg_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy (N, X, Y, Z): binary with logits for one channel, softmax otherwise."""
    if seg_logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(seg_logits[:, 0], target.to(seg_logits.dtype), reduction="none")
    return F.cross_entropy(seg_logits, target.long(), reduction="none")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(values * mask).sum() / (mask.sum() + 1e-16)``; values (N, X, Y, Z) or (N, C, X, Y, Z) (mean over C too)."""
    m = mask.to(values.dtype)
    if values.ndim == m.ndim + 1:
        values = values.mean(dim=1)
    return (values * m).sum() / (m.sum() + MASK_MEAN_EPS)


def level_set_target(target: torch.Tensor, num_classes: int, dims: int) -> torch.Tensor:
    """T of each mixed target crop: int (N, X, Y, Z) -> float32 (N, C, X, Y, Z) on the target's device
    (levelset.signed_distance_multiclass in voxel units over the crop; per slice for ``dims == 2``)."""
    from ..model.levelset import signed_distance_multiclass

    labels = target.detach().cpu().numpy()
    sdf = np.stack([signed_distance_multiclass(labels[n], num_classes, None, dims=dims) for n in range(len(labels))])
    return torch.from_numpy(sdf).to(target.device)


def copy_paste_losses(seg_logits: torch.Tensor, lsf: torch.Tensor, target: torch.Tensor, from_labeled: torch.Tensor,
                      groups: list[slice], iteration: int, recipe: RecipeConfig, dims: int) -> dict[str, torch.Tensor]:
    """The losses of one copy-paste step; 0-dim float32 tensors ``total, dice, ce, lsf, consistency, lambda``.

    seg_logits (N, Cs, X, Y, Z), lsf (N, C, X, Y, Z): the student's outputs on the N mixed images; target int
    (N, X, Y, Z) the mixed targets; from_labeled bool (N, X, Y, Z) (copypaste.stage2_mix); ``groups``: the item
    ranges whose losses are taken apart and added (module docstring). ``dice`` and ``ce`` are the weighted sums
    over groups and regions (total = (dice + ce) / 2 + ...); ``lsf`` is 0 when ``recipe.cp_levelset`` is off (not
    computed); ``consistency`` is always the value, ``lambda`` the weight it has in the total (0 when off).
    """
    with no_autocast(seg_logits.device.type):
        seg_logits, lsf = seg_logits.float(), lsf.float()
        prob = class_probabilities(seg_logits)
        onehot = one_hot(target, prob.shape[1])
        ce_map = pixel_cross_entropy(seg_logits, target)
        sdf = level_set_target(target, lsf.shape[1], dims) if recipe.cp_levelset else None
        zero = seg_logits.new_zeros(())
        dice, ce, lsf_term = zero, zero, zero
        for items in groups:
            for region, weight in ((from_labeled[items], LABELED_WEIGHT), (~from_labeled[items], PSEUDO_WEIGHT)):
                dice = dice + weight * masked_dice(prob[items], onehot[items], region)
                ce = ce + weight * masked_mean(ce_map[items], region)
                if sdf is not None:
                    lsf_term = lsf_term + weight * masked_mean((lsf[items] - sdf[items]) ** 2, region)
        weight = ramp_weight(iteration, recipe) if recipe.cp_consistency else 0.0
        if recipe.cp_consistency:
            consistency = consistency_loss(foreground_probability(seg_logits), lsf, recipe.k)
        else:
            with torch.no_grad():
                consistency = consistency_loss(foreground_probability(seg_logits), lsf, recipe.k)
        total = (dice + ce) / 2.0 + weight * consistency
        if sdf is not None:
            total = total + float(recipe.beta) * lsf_term
    return {"total": total, "dice": dice, "ce": ce, "lsf": lsf_term, "consistency": consistency,
            "lambda": torch.tensor(weight, dtype=torch.float32, device=seg_logits.device)}
