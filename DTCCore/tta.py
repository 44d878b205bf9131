"""Test-time mirroring: average a dual-task network's outputs over flipped copies of its input.

nnU-Net's test-time augmentation: the input window is flipped along a set of axes, the network run on
each flipped copy, each output flipped back, and the outputs averaged. Only the flips the model was
trained with are used (``config.AUGMENT_FLIP_AXES`` of its ``train.augment``): a model trained without
mirroring ("no-mirror", "none") was never shown a mirror image, and for side-dependent labels a flipped
copy would vote for the wrong side.

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

from .config import AUGMENT_FLIP_AXES, augment_choice

SPATIAL_OFFSET = 2  # network tensors are (B, C, X, Y, Z): spatial axis a is tensor dim a + 2


def mirror_axes(augment: object) -> tuple[int, ...]:
    """Spatial axes (0 = x, 1 = y, 2 = z) a model trained with augmentation ``augment`` was flipped along."""
    return tuple(AUGMENT_FLIP_AXES[augment_choice(augment)])


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
    averaged over the input flipped along every subset of ``axes`` (spatial: 0 = x, 1 = y, 2 = z).

    The segmentation output is the mean probability (sigmoid if Cs == 1, softmax otherwise) expressed as
    logits (see the module docstring); the level set is the plain mean. With no axes the wrapped model's
    outputs are returned unchanged.
    """

    def __init__(self, model: nn.Module, axes: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.axes = tuple(int(a) for a in axes)
        if any(a not in (0, 1, 2) for a in self.axes) or len(set(self.axes)) != len(self.axes):
            raise ValueError(f"mirror axes must be distinct spatial axes 0, 1, 2; got {self.axes}")

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.axes:
            return self.model(image)
        prob_sum: torch.Tensor | None = None
        lsf_sum: torch.Tensor | None = None
        sets = flip_sets(self.axes)
        for flips in sets:
            dims = [a + SPATIAL_OFFSET for a in flips]
            seg, lsf = self.model(torch.flip(image, dims) if dims else image)
            seg, lsf = seg.float(), lsf.float()
            if dims:
                seg, lsf = torch.flip(seg, dims), torch.flip(lsf, dims)
            prob = torch.sigmoid(seg) if seg.shape[1] == 1 else torch.softmax(seg, dim=1)
            prob_sum = prob if prob_sum is None else prob_sum + prob
            lsf_sum = lsf if lsf_sum is None else lsf_sum + lsf
        assert prob_sum is not None and lsf_sum is not None
        n = float(len(sets))
        return probabilities_to_logits(prob_sum / n), lsf_sum / n
