"""Test-time augmentation: average a dual-task network's outputs over transformed copies of its input.

nnU-Net's test-time mirroring: the input window is flipped along a set of axes, the network run on
each flipped copy, each output flipped back, and the outputs averaged. Only transforms the model was
trained with are used. A model trained with flips (``config.AUGMENT_FLIP_AXES`` of its ``train.augment``:
"mirror", "reference") averages over its flips: no flip, x, y, x and y. A model trained without
mirroring ("no-mirror") was never shown a mirror image, and for side-dependent labels a flipped copy
would vote for the wrong side; it averages over the in-plane turns it was trained with instead
(:func:`tta_turns`: 0/90/180/270 degrees on a square patch, 0/180 otherwise), which keep a left
structure left. "none" averages over nothing. At most 4 copies: up to 4x the time.

Averaging space. :func:`DTCCore.sliding_window.sliding_window` applies a sigmoid (1 channel) or softmax
(several) to the segmentation output of the model it runs. The average that matters is that of the
probabilities (nnU-Net averages softmax outputs), so :class:`MirroredModel` averages probabilities and
returns them as logits whose sigmoid / softmax gives back exactly that mean: ``logit(mean p)`` for one
channel, ``log(mean p)`` for a softmax. The level sets (tanh outputs) are averaged directly.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from .config import AUGMENT_FLIP_AXES, AUGMENT_NO_MIRROR, augment_choice

SPATIAL_OFFSET = 2  # network tensors are (B, C, X, Y, Z): spatial axis a is tensor dim a + 2


def mirror_axes(augment: object) -> tuple[int, ...]:
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


def probabilities_to_logits(prob: torch.Tensor) -> torch.Tensor:
    """Inverse of sliding_window's activation: (B, 1, ...) -> ``logit(p)``; (B, C>1, ...) -> ``log(p)``.

    ``sigmoid(logit(p)) == p`` and ``softmax(log(p)) == p`` when the channels sum to 1 (up to rounding);
    p = 0 or 1 give -inf / +inf, which the activations map back to 0 / 1.
    """
    if prob.shape[1] == 1:
        return torch.logit(prob)
    return torch.log(prob)


class MirroredModel(nn.Module):
    """Wrap a model returning ``(seg_logits (B, Cs, X, Y, Z), lsf (B, Cl, X, Y, Z))``; return the same pair
    averaged over the input flipped along every subset of ``axes`` (spatial: 0 = x, 1 = y, 2 = z), each
    turned in-plane by each ``k`` of ``turns`` (rot90 by k x 90 degrees, x towards y, before the flips).

    The segmentation output is the mean probability (sigmoid if Cs == 1, softmax otherwise) expressed as
    logits (see the module docstring); the level set is the plain mean. With no axes and no turn but 0
    the wrapped model's outputs are returned unchanged.
    """

    def __init__(self, model: nn.Module, axes: Sequence[int], turns: Sequence[int] = (0,)) -> None:
        super().__init__()
        self.model = model
        self.axes = tuple(int(a) for a in axes)
        self.turns = tuple(int(k) for k in turns)
        if any(a not in (0, 1, 2) for a in self.axes) or len(set(self.axes)) != len(self.axes):
            raise ValueError(f"mirror axes must be distinct spatial axes 0, 1, 2; got {self.axes}")
        if not self.turns or any(k not in (0, 1, 2, 3) for k in self.turns) or len(set(self.turns)) != len(self.turns):
            raise ValueError(f"turns must be distinct quarter turns 0..3; got {self.turns}")

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.axes and self.turns == (0,):
            return self.model(image)
        plane = (SPATIAL_OFFSET, SPATIAL_OFFSET + 1)
        prob_sum: torch.Tensor | None = None
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
            prob = torch.sigmoid(seg) if seg.shape[1] == 1 else torch.softmax(seg, dim=1)
            prob_sum = prob if prob_sum is None else prob_sum + prob
            lsf_sum = lsf if lsf_sum is None else lsf_sum + lsf
        assert prob_sum is not None and lsf_sum is not None
        n = float(len(copies))
        return probabilities_to_logits(prob_sum / n), lsf_sum / n
