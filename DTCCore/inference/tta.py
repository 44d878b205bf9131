"""Test-time augmentation: average a dual-task network's outputs over transformed copies of its input.

Each copy of the input window is flipped along a set of axes or turned in the x-y plane, the network
run on it, its outputs transformed back, and the outputs averaged. Only transforms the model was trained
with are used. A model trained with flips (``config.AUGMENT_FLIP_AXES`` of its ``train.augment``:
"mirror", "reference") averages over its flips: no flip, x, y, x and y (nnU-Net's test-time mirroring).
A model trained without mirroring ("no-mirror") was never shown a mirror image, and for side-dependent
labels a flipped copy would vote for the wrong side; it averages over the in-plane turns it was trained
with instead (:func:`tta_turns`: 0/90/180/270 degrees on a square patch, 0/180 otherwise), which keep a
left structure left. "none" averages over nothing. At most 4 copies: up to 4x the time. The config key
(``infer.tta``) and ``dtc segment --mirror`` keep their old names; ``--tta`` is the new one.

Averaging space. :class:`FlipTurnAverage` averages whatever the model it wraps returns, in float32.
nnU-Net v2 averages the network's raw outputs, the logits
(``nnUNetPredictor._internal_maybe_mirror_and_predict`` in ``nnunetv2/inference/predict_from_raw_data.py``,
github.com/MIC-DKFZ/nnUNet: it sums ``self.network(...)`` over the flips, then divides by their number,
and blends the windows' logits too). Here :func:`DTCCore.inference.predict.predict_volume` wraps the network in
:class:`DTCCore.inference.predict.ProbabilityOutputs` before this class, so the average is that of the
probabilities (the mean of the sigmoids / softmaxes of the copies), and of the level sets (tanh outputs)
directly. That is what this engine averaged before its sliding window stopped applying the activation;
averaging logits instead would change its segmentations (the bundled model's too: it has test-time
augmentation on).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from ..config import AUGMENT_FLIP_AXES, AUGMENT_NO_MIRROR, augment_choice

SPATIAL_OFFSET = 2  # network tensors are (B, C, X, Y, Z): spatial axis a is tensor dim a + 2


def tta_flip_axes(augment: object) -> tuple[int, ...]:
    """Spatial axes (0 = x, 1 = y, 2 = z) a model trained with augmentation ``augment`` was flipped along."""
    return tuple(AUGMENT_FLIP_AXES[augment_choice(augment)])


def tta_turns(augment: object, patch: Sequence[int], pools: Sequence[int]) -> tuple[int, ...]:
    """In-plane turns ``k`` (rot90 by k x 90 degrees, x towards y) a model without flips averages over.

    Only "no-mirror" models get turns (a model with flips averages over its flips; see the module
    docstring). ``data.augment`` draws k in 0..3 on a square x-y ``patch`` and k in {0, 2} otherwise;
    a quarter turn also swaps the window's x and y sizes, which the network accepts only when both axes
    have the same size multiple (equal ``pools[0]`` and ``pools[1]``), else k in {0, 2} too.
    """
    if augment_choice(augment) != AUGMENT_NO_MIRROR:
        return (0,)
    square = int(patch[0]) == int(patch[1]) and int(pools[0]) == int(pools[1])
    return (0, 1, 2, 3) if square else (0, 2)


def flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes``, the empty one (no flip) first: 2^len(axes) sets of spatial axes."""
    axes = tuple(int(a) for a in axes)
    return [s for n in range(len(axes) + 1) for s in itertools.combinations(axes, n)]


class FlipTurnAverage(nn.Module):
    """Wrap a model returning ``(seg (B, Cs, X, Y, Z), lsf (B, Cl, X, Y, Z))``; return the same pair
    averaged over the input flipped along every subset of ``axes`` (spatial: 0 = x, 1 = y, 2 = z), each
    turned in-plane by each ``k`` of ``turns`` (rot90 by k x 90 degrees, x towards y, before the flips).

    Each copy's outputs are flipped and turned back, cast to float32, summed and divided by the number of
    copies: the mean in the space the wrapped model returns (probabilities when it is a
    :class:`DTCCore.inference.predict.ProbabilityOutputs`; see the module docstring). With no axes and no turn
    but 0 the wrapped model's outputs are returned unchanged. The wrapper takes the wrapped model's
    train/eval mode, so ``sliding_window``'s restoring of the mode leaves that model as it was.
    """

    def __init__(self, model: nn.Module, axes: Sequence[int], turns: Sequence[int] = (0,)) -> None:
        super().__init__()
        self.model = model
        self.training = model.training
        self.axes = tuple(int(a) for a in axes)
        self.turns = tuple(int(k) for k in turns)
        if any(a not in (0, 1, 2) for a in self.axes) or len(set(self.axes)) != len(self.axes):
            raise ValueError(f"flip axes must be distinct spatial axes 0, 1, 2; got {self.axes}")
        if not self.turns or any(k not in (0, 1, 2, 3) for k in self.turns) or len(set(self.turns)) != len(self.turns):
            raise ValueError(f"turns must be distinct quarter turns 0..3; got {self.turns}")

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.axes and self.turns == (0,):
            return self.model(image)
        plane = (SPATIAL_OFFSET, SPATIAL_OFFSET + 1)
        seg_sum: torch.Tensor | None = None
        lsf_sum: torch.Tensor | None = None
        copies = [(k, flips) for k in self.turns for flips in flip_sets(self.axes)]
        for k, flips in copies:
            dims = [a + SPATIAL_OFFSET for a in flips]
            x = torch.rot90(image, k, plane) if k else image
            seg, lsf = self.model(torch.flip(x, dims) if dims else x)
            seg, lsf = seg.float(), lsf.float()
            if dims:
                seg, lsf = torch.flip(seg, dims), torch.flip(lsf, dims)
            if k:
                seg, lsf = torch.rot90(seg, -k, plane), torch.rot90(lsf, -k, plane)
            seg_sum = seg if seg_sum is None else seg_sum + seg
            lsf_sum = lsf if lsf_sum is None else lsf_sum + lsf
        assert seg_sum is not None and lsf_sum is not None
        n = float(len(copies))
        return seg_sum / n, lsf_sum / n
