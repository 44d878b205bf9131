"""BatchNorm after training: statistics recomputed for the final weights ("precise BN"), and BatchNorm
folded into the preceding convolutions for inference (:func:`fold_batchnorm`).

BatchNorm layers keep an exponential average of batch statistics while training. With the reference's
learning rate (0.01, momentum 0.9) the weights move fast, and the average lags the current weights:
we measured, on an LA model at iteration 500 (lr 0.01, batch 2 + 2), eval-mode Dice 0.02-0.63 on
training crops with the stored statistics and 0.65-0.82 with statistics recomputed for the same weights
(bench/RESULTS.md). The reference hides this by ending at lr 1e-4 (6000 iterations); short fine-tunes
never reach a small learning rate. So when training ends at a learning rate above
``trainer.PRECISE_BN_ABOVE_LR`` the trainer recomputes the statistics of ``model.pt`` over a few
training batches with the final weights (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021,
section 3: precise BN). Checkpoints used for ``--resume`` keep the running averages, so a resumed run is
unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

PRECISE_BN_BATCHES = 25  # our choice: 100 crops at batch 4; enough for stable statistics, ~1 s on a GPU


def _running_stats(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(running_mean, running_var, num_batches_tracked)`` of a BatchNorm that tracks running statistics."""
    mean, var, count = bn.running_mean, bn.running_var, bn.num_batches_tracked
    assert mean is not None and var is not None and count is not None, "BatchNorm without running statistics"
    return mean, var, count


@torch.no_grad()
def recompute_batchnorm_stats(
    model: nn.Module, images: Iterable[torch.Tensor], amp_dtype: torch.dtype | None = None
) -> int:
    """Replace every BatchNorm running mean/variance of ``model`` by the average over ``images``.

    images: batches ``(N, C_in, X, Y, Z)`` already on the model's device. Dropout is off (as at
    inference); BatchNorm layers see each batch in training mode with a cumulative average
    (``momentum=None``). The model's mode and momenta are restored. Returns the number of batches used
    (0 leaves the model untouched).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    was_training = model.training
    saved = []
    for bn in bns:
        mean, var, count = _running_stats(bn)
        saved.append((mean.clone(), var.clone(), count.clone(), bn.momentum))
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    used = 0
    try:
        for image in images:
            device_type = image.device.type
            with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(image)
            used += 1
    finally:
        for bn, (mean, var, count, momentum) in zip(bns, saved):
            bn.momentum = momentum
            if used == 0:
                running_mean, running_var, num_batches = _running_stats(bn)
                running_mean.copy_(mean)
                running_var.copy_(var)
                num_batches.copy_(count)
        model.train(was_training)
    return used


# Convolutions whose following BatchNorm can be folded into them (3-D networks, and the 2-D ones of planning/dims.py).
_FOLDABLE = (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d, nn.ConvTranspose2d)


def _weight_rank(bn: nn.Module) -> int:
    """The weight rank of the convolutions a BatchNorm follows: 5 for BatchNorm3d, 4 for BatchNorm2d."""
    return 5 if isinstance(bn, nn.BatchNorm3d) else 4


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm (3-D or 2-D) that follows a (transposed) convolution in an
    ``nn.Sequential`` folded into that convolution's weights and bias (replaced by Identity).

    Eval-mode BatchNorm is a per-channel affine map, so the result is the same up to float rounding
    (~1e-6) while a full pass over every activation is saved: 3.5 s instead of 4.5 s for a whole LA
    volume on a 2-core CPU (our measurement, bench/RESULTS.md). ``model`` itself is not changed.
    """
    import copy

    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for seq in folded.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            items = list(seq._modules.items())
            for (_, conv), (name, bn) in zip(items, items[1:]):
                if not (isinstance(conv, _FOLDABLE) and isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm3d))
                        and bn.track_running_stats and conv.bias is not None and conv.weight.dim() == _weight_rank(bn)):
                    continue
                running_mean, running_var, _ = _running_stats(bn)
                gamma = bn.weight if bn.affine else torch.ones_like(running_var)
                beta = bn.bias if bn.affine else torch.zeros_like(running_mean)
                scale = gamma / torch.sqrt(running_var + bn.eps)
                # Conv weight (out, in, k...); transposed conv weight (in, out / groups, k...).
                transposed = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))
                shape = [1] * conv.weight.dim()
                shape[1 if transposed else 0] = -1
                if transposed and conv.groups != 1:
                    continue
                conv.weight.mul_(scale.view(*shape))
                conv.bias.copy_((conv.bias - running_mean) * scale + beta)
                seq._modules[name] = nn.Identity()
    return folded
