"""One training step of the copy-paste modes ("copy-paste", "copy-paste-teacher"; config.MODES), for the trainer.

A step takes the trainer's batch (the labeled crops first, then for the teacher mode as many unlabeled crops),
draws the step's paste box, builds the mixed images and targets (copypaste.py), runs the student once on all the
mixed images and computes the losses (copypaste_loss.py). The trainer then steps the optimizer and, in stage 2,
moves the teacher (teacher.py).

Stages of "copy-paste-teacher": iterations ``0 .. S-1`` are stage 1, ``S = round(config.stage1_fraction *
train.iterations)`` (:func:`stage2_start`), so fitting the schedule to ``--iterations`` or ``--time-limit``
scales both stages. Stage 2 begins by copying the student into the teacher; once a run has a teacher it stays in
stage 2, also when a time limit later refits the run's length (the boundary never moves back), and a resumed run
gets its teacher from the checkpoint. With ``recipe.cp_stage2_gate`` stage 1 goes on past ``S`` until the model
finds every class of its labeled crops (:func:`start_stage2`). "copy-paste" is stage 1 for the whole run.

Randomness: the box comes from its own stream of ``(seed, rank, iteration)``; the teacher's dropout from its own
seed, derived from the student's, so a resumed run and a step redone in fp32 draw the same.

Deviations from BCP's code, with why:
- the student sees the two directions' mixed images in one forward pass, and the teacher both unlabeled halves
  in one (the reference calls each network twice: BatchNorm statistics per half): one forward per backward, as
  DistributedDataParallel requires, and less overhead;
- one continuous schedule over both stages (SGD and its momentum go on; lr steps at fractions of the whole
  run, or with config.lr_in_stage2 at those fractions of stage 2, from the iteration the teacher starts,
  ``train.stage2_began``), where LA's reference restarts SGD and its lr steps for stage 2; stage 2 starts from
  the last stage-1 weights, where the reference takes the stage-1 snapshot of best Dice on its test scans.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..config import STAGE2_GATE_EVERY, STAGE2_GATE_LAST, TEACHER_MODE, stage1_fraction
from ..runtime.precision import autocast
from .copypaste import draw_box, pseudo_label, stage1_mix, stage2_mix
from .copypaste_loss import copy_paste_losses
from .teacher import make_teacher, teacher_forward

BOX_STREAM = 3  # stream tag of the box draws (training/batches.py uses 0, 1, 2 for its own streams of (seed, rank))
TEACHER_SEED_OFFSET = 2**62  # teacher dropout seed = student's + 2**62: never an iteration's student seed


def stage2_iteration(fraction: float, iterations: int) -> int:
    """The first stage-2 iteration of a run of ``iterations`` whose first ``fraction`` is stage 1."""
    return int(round(float(fraction) * int(iterations)))


def stage2_start(config) -> int:
    """The first stage-2 iteration of a "copy-paste-teacher" run of ``config``."""
    return stage2_iteration(stage1_fraction(config), config.train.iterations)


def in_stage2(run: Any) -> bool:
    """True when the run has a teacher or the step at ``run.iteration`` is past stage 1's fraction (module
    docstring); with ``recipe.cp_stage2_gate`` such a step stays a stage-1 step while the teacher waits
    (:func:`start_stage2`)."""
    if run.config.recipe.mode != TEACHER_MODE:
        return False
    return run.teacher is not None or run.iteration >= stage2_start(run.config)


def box_rng(seed: int, rank: int, iteration: int) -> np.random.Generator:
    """The random stream of one step's paste box."""
    return np.random.default_rng([int(k) & 0xFFFFFFFFFFFFFFFF for k in (seed, rank, BOX_STREAM, iteration)])


def forward_backward(run: Any, image: torch.Tensor, label: torch.Tensor, amp: torch.dtype | None,
                     seed: int) -> dict[str, torch.Tensor]:
    """Mixed images and targets, the student's forward pass under ``amp`` (None: fp32), the losses, fresh
    gradients. image (Lb + Ub, 1, X, Y, Z), label (Lb, X, Y, Z); ``seed`` seeds the student's dropout."""
    t, dims = run.config.train, int(run.config.network.dims)
    n_lab, h = int(t.labeled_batch), int(t.labeled_batch) // 2
    box = draw_box(tuple(t.patch), dims, box_rng(t.seed, run.ctx.rank, run.iteration))
    if run.teacher is None and in_stage2(run):
        start_stage2(run, image[:n_lab], label, amp)
    if run.teacher is not None:
        torch.manual_seed(seed + TEACHER_SEED_OFFSET)
        with autocast(run.device, amp):
            teacher_logits = teacher_forward(run.teacher, image[n_lab:])
        pseudo = pseudo_label(teacher_logits, dims).to(label.device)
        mixed, target, from_labeled = stage2_mix(image[:n_lab], label, image[n_lab:], pseudo, box)
        groups = [slice(0, h), slice(h, 2 * h)]
    else:
        mixed, target = stage1_mix(image[:n_lab], label, box)
        from_labeled = torch.ones(target.shape, dtype=torch.bool, device=target.device)
        groups = [slice(0, h)]
    if run.device.type == "cuda":
        mixed = mixed.contiguous(memory_format=torch.channels_last_3d)
    torch.manual_seed(seed)  # the student's dropout, resumable
    with autocast(run.device, amp):
        seg, lsf = run.train_model(mixed)
    losses = copy_paste_losses(seg.float(), lsf.float(), target, from_labeled, groups, run.iteration,
                               run.config.recipe, dims)
    run.optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    return losses


def gate_last(config) -> int:
    """The iteration by which stage 2 starts under ``recipe.cp_stage2_gate`` whatever its check says:
    ``STAGE2_GATE_LAST`` of the run, or the fraction's start if that is later (then the teacher never waits)."""
    return max(stage2_start(config), stage2_iteration(STAGE2_GATE_LAST, config.train.iterations))


def start_stage2(run: Any, image: torch.Tensor, label: torch.Tensor, amp: torch.dtype | None) -> None:
    """Make the teacher (a copy of the student) at a step past stage 1's fraction, and log what it does not find
    (:func:`missing_classes_message`). With ``recipe.cp_stage2_gate`` the teacher waits while the model misses a
    class of its labeled crops ``image`` (Lb, 1, X, Y, Z) / ``label`` (Lb, X, Y, Z) on any process: checked at the
    fraction and every ``STAGE2_GATE_EVERY`` iterations after, until :func:`gate_last`; every process asks the others
    at the same iterations. The check's iterations depend only on the run's iteration, so a resumed run waits as an
    uninterrupted one, and a step redone (in fp32 after a bf16 overflow) does not check again."""
    i, first, last = int(run.iteration), stage2_start(run.config), gate_last(run.config)
    gate = bool(run.config.recipe.cp_stage2_gate)
    if gate and i < last and ((i - first) % STAGE2_GATE_EVERY or getattr(run, "gate_waited", -1) == i):
        return  # between two checks, or this step's check said wait
    candidate = make_teacher(run.model)
    missing = unlearned_classes(candidate, image, label, int(run.config.network.dims), run.device, amp)
    if gate and i < last and run.ctx.any(bool(missing)):
        run.gate_waited = i
        if i == first:
            what = "class " + ", ".join(map(str, missing)) if missing else "every class"  # else: another process's
            run.log.message(f"iteration {i + 1}: the teacher waits: the model does not yet find {what} of its labeled "
                            f"crops (checked every {STAGE2_GATE_EVERY} iterations, until iteration {last + 1})")
        return
    run.teacher = candidate
    run.config.train.stage2_began = i  # recipe.cp_lr_in_stage2's lr steps start here (saved with the config)
    run.stage2_clock = (time.monotonic(), run.iteration)
    if missing:
        run.log.message(missing_classes_message(i, missing, gated=gate))
    elif gate and i >= last and i > first:
        run.log.message(f"iteration {i + 1}: the teacher starts: the gate's last iteration ({STAGE2_GATE_LAST:g} of "
                        "the run)")
    elif gate and i > first:
        run.log.message(f"iteration {i + 1}: the teacher starts: the model finds every class of its labeled crops")


def unlearned_classes(teacher: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, dims: int,
                      device: torch.device, amp: torch.dtype | None) -> list[int]:
    """The classes of ``label`` (Lb, X, Y, Z) that the new teacher's pseudo-label of ``image`` (Lb, 1, X, Y, Z), its
    own labeled crops, has not one voxel of: those it would teach the student are absent from the unlabeled scans.
    The random state is left as it was (the check draws dropout), so a run with the check trains as one without."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with autocast(device, amp):
            predicted = pseudo_label(teacher_forward(teacher, image), dims)
    present = set(torch.unique(label).tolist()) - {0}
    return sorted(c for c in present if not bool((predicted == c).any()))


def missing_classes_message(iteration: int, missing: list[int], gated: bool = False) -> str:
    """The warning when the teacher starts at step ``iteration`` (0-based) while the model misses the classes
    ``missing`` of its labeled crops (:func:`unlearned_classes`); ``gated``: at the stage-2 gate's last iteration.
    Measured on ACDC's 2-D plan (bench/results/copy-paste-teacher-acdc.md, ACDC Stage 13): a stage 1 of 1227 iterations
    ended before the model found any class, the teacher's pseudo-labels were all background, and the right
    ventricle never appeared."""
    names = ", ".join(str(c) for c in missing)
    return (f"iteration {iteration + 1}: the teacher starts, but the model does not yet find class {names} on its "
            f"labeled crops, so its pseudo-labels will mark {'it' if len(missing) == 1 else 'them'} absent on the "
            + ("unlabeled scans; the gate waited as long as it may: train longer" if gated else
               "unlabeled scans; give stage 1 more of the run (--stage1-fraction, --stage2-gate) or train longer"))


def eta_seconds(run: Any, elapsed: float) -> float:
    """Seconds left for a "copy-paste-teacher" run: stage-1 steps at the pace measured so far, stage-2 steps at
    their own measured pace, or, before stage 2, ``stage2_cost_ratio`` times the stage-1 pace."""
    from .two_stage_budget import stage2_cost_ratio

    total, i = int(run.config.train.iterations), int(run.iteration)
    per_step = elapsed / max(i - run.start, 1)
    if run.teacher is None:
        switch = min(max(i, stage2_start(run.config)), total)
        return per_step * (switch - i) + per_step * stage2_cost_ratio(run.config) * (total - switch)
    clock = run.stage2_clock
    if clock is not None and i > clock[1]:
        per_step = (time.monotonic() - clock[0]) / (i - clock[1])
    return per_step * (total - i)
