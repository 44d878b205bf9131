"""The EMA teacher of mode "copy-paste-teacher": a copy of the student whose weights follow the student's slowly.

Source: BCP (github.com/DeepMed-Lab-ECNU/BCP). Student and teacher both start from the weights at the end of
stage 1 (LA_BCP_train.py ``self_train`` loads the stage-1 model into ``model`` and ``ema_model``). After every
stage-2 optimizer step, each teacher parameter becomes ``alpha * teacher + (1 - alpha) * student`` with
``alpha = EMA_ALPHA`` (BCP_utils.py ``update_ema_variables(model, ema_model, 0.99)``, no warm-up).

BatchNorm statistics: ACDC_BCP_train.py ``update_model_ema`` averages the whole state dict, running statistics
included; we do the same (floating buffers averaged, counters copied), so the teacher is a usable model in
evaluation mode (e.g. to measure its pseudo-labels on whole scans). The teacher's pseudo-labels during training
come from a forward pass in training mode, as the reference's (``ema_model.train()``): BatchNorm normalises
with the batch's statistics and dropout is on. :func:`teacher_forward` leaves its running statistics as they
were (the reference's pass updates them, but it never uses them).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch

EMA_ALPHA = 0.99  # BCP LA_BCP_train.py and ACDC_BCP_train.py: EMA decay 0.99


def make_teacher(student: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``student`` (the bare network) without gradients."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, alpha: float = EMA_ALPHA) -> None:
    """``teacher = alpha * teacher + (1 - alpha) * student`` for every parameter and floating buffer (in
    place); integer buffers (BatchNorm's batch counter) are copied from the student."""
    mine: dict[str, torch.Tensor] = {**dict(teacher.named_parameters()), **dict(teacher.named_buffers())}
    theirs: dict[str, torch.Tensor] = {**dict(student.named_parameters()), **dict(student.named_buffers())}
    if mine.keys() != theirs.keys():
        raise ValueError("ema_update: teacher and student have different weights")
    for name, t in mine.items():
        s = theirs[name].detach()
        if t.is_floating_point():
            t.mul_(alpha).add_(s.to(t.dtype), alpha=1.0 - alpha)
        else:
            t.copy_(s)


@torch.no_grad()
def teacher_forward(teacher: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The teacher's segmentation logits on ``image`` (N, 1, X, Y, Z), in training mode (module docstring),
    its running statistics left unchanged."""
    saved = [b.clone() for b in teacher.buffers()]
    teacher.train()
    seg, _ = teacher(image)
    for buffer, before in zip(teacher.buffers(), saved):
        buffer.copy_(before)
    return seg


def restore_teacher(student: torch.nn.Module, state: Mapping[str, torch.Tensor] | None) -> torch.nn.Module | None:
    """The teacher of a checkpoint (its ``"teacher"`` state), built like ``student``; None when it has none."""
    if state is None:
        return None
    from ..model.checkpoint import float32_state

    teacher = make_teacher(student)
    teacher.load_state_dict(float32_state(state))
    return teacher
