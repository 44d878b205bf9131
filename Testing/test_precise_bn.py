"""Precise BatchNorm: statistics recomputed for the final weights, dropout off, state restored."""

from __future__ import annotations

import torch
from torch import nn

from DTCCore.model.batchnorm import recompute_batchnorm_stats


def test_statistics_are_the_average_over_the_batches_without_dropout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout3d(0.5), nn.BatchNorm3d(3, momentum=0.1))
    model.train()
    batches = [torch.randn(2, 3, 4, 4, 4) * (i + 1) + i for i in range(4)]
    used = recompute_batchnorm_stats(model, iter(batches))
    bn = model[1]
    assert used == 4
    # oracle: with momentum=None BatchNorm keeps the plain average of the per-batch statistics
    means = torch.stack([b.mean(dim=(0, 2, 3, 4)) for b in batches])
    variances = torch.stack([b.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for b in batches])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)  # dropout would have rescaled inputs
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)
    assert bn.momentum == 0.1 and model.training and bn.training


def test_no_batches_leaves_the_model_untouched():
    model = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))
    model[1].running_mean.fill_(0.7)
    model.eval()
    assert recompute_batchnorm_stats(model, iter([])) == 0
    assert torch.all(model[1].running_mean == 0.7) and not model.training
