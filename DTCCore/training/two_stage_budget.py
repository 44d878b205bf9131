"""``--time-limit`` for "copy-paste-teacher": a schedule fitted over two stages whose steps cost differently.

A stage-1 step runs the student on half the labeled crops; a stage-2 step runs the teacher on the unlabeled
crops and the student on twice as many mixed images (copypaste_step.py), so it costs ``STAGE2_COST_RATIO``
times more. Timing the first iterations (stage 1) alone, as :class:`~DTCCore.training.schedule.TimeBudget` does, would
overrun the limit. :class:`TwoStageBudget` times each stage on its own steps (after ``CALIBRATION_SKIP`` steps of
warm-up) and fits the run's length T so that the stage-1 steps left, at their pace, and the stage-2 steps, at
theirs, fill the time left (:func:`two_stage_iterations`); stage 1 stays ``config.stage1_fraction`` of T.
The first fit (after ``CALIBRATION_ITERATIONS`` timed steps of stage 1) uses :func:`stage2_cost_ratio` x the
stage-1 pace for stage 2; once stage 2 has been timed the run is fitted once more, with its measured pace (if that
is before ``REFIT_BEFORE`` of the run, as TimeBudget's re-timing, so the lr steps do not move back; with the lr steps
in stage 2, before the first of them). Like every fit it rescales the consistency ramp with the run, so a re-fit late
in the run moves lambda(t) along its ramp at once (the ramp still ends with the run). A resumed run keeps its fitted
length: the time left to a new launch is not the time left to the run. The fit puts
stage 2 at the fraction, so ``recipe.cp_stage2_gate`` (a teacher that may start later, its stage 2 timed too late to
refit) is refused with a time limit (config.py).
"""

from __future__ import annotations

import time
from typing import Callable

from ..config import DTCConfig, lr_in_stage2, stage1_fraction
from .schedule import CALIBRATION_ITERATIONS, CALIBRATION_SKIP, REFIT_BEFORE, fit_schedule, stage2_lr_steps

# Seconds of a stage-2 step over a stage-1 step: 1.40 and 1.34 measured (CPU time, 8 and 4 steps) with
# bench/speed/mode_step_cost.py on the 2.0 mm LA plan (48x48x32, base 16), one thread, level set and consistency on
# (bench/RESULTS.md, "Cost per step of every mode"). Only a first guess: the run re-times stage 2 itself.
STAGE2_COST_RATIO = 1.4
# The same for a 2-D network: 0.429 / 0.180 CPU s = 2.38 on ACDC's 2-D plan (128x128x4, base 8; mode_step_cost.py
# --plan acdc-2d, bench/results/copy-paste-acdc/step_costs_acdc2d.json): a stage-1 step pastes half as many crops.
STAGE2_COST_RATIO_2D = 2.38


def stage2_cost_ratio(config: DTCConfig) -> float:
    """The first guess of a stage-2 step's cost in stage-1 steps for ``config``'s network (:data:`STAGE2_COST_RATIO`,
    :data:`STAGE2_COST_RATIO_2D`)."""
    return STAGE2_COST_RATIO_2D if int(config.network.dims) == 2 else STAGE2_COST_RATIO


def two_stage_iterations(left_s: float, done: int, stage2_from: Callable[[int], int], stage1_s: float,
                         stage2_s: float) -> int:
    """The largest run length T >= ``done + 1`` whose steps ``done .. T-1`` take at most ``left_s`` seconds,
    steps before ``stage2_from(T)`` (the first stage-2 step of a run of T) at ``stage1_s`` each, the others at
    ``stage2_s``. The time is non-decreasing in T, so a bisection finds it."""
    def cost(total: int) -> float:
        switch = min(max(done, stage2_from(total)), total)
        return stage1_s * (switch - done) + stage2_s * (total - switch)

    low = done + 1
    high = done + 2 + int(max(left_s, 0.0) / max(min(stage1_s, stage2_s), 1e-9))
    if cost(low) > left_s:
        return low
    while high - low > 1:  # cost(low) <= left_s < cost(high)
        mid = (low + high) // 2
        low, high = (mid, high) if cost(mid) <= left_s else (low, mid)
    return low


class TwoStageBudget:
    """Fits a "copy-paste-teacher" run to ``train.time_limit_minutes`` (module docstring); the interface of
    :class:`~DTCCore.training.schedule.TimeBudget`: ``active`` until the first fit, :meth:`after_step` after each step.
    ``in_stage2()`` says whether the step just done was a stage-2 step (the run has a teacher)."""

    def __init__(self, config: DTCConfig, began: float, start_iteration: int, agree: Callable[[int], int],
                 say: Callable[[str], None], in_stage2: Callable[[], bool]) -> None:
        t = config.train
        self.config, self.began, self.agree, self.say, self.in_stage2 = config, began, agree, say, in_stage2
        self.active = t.time_limit_minutes is not None and not t.schedule_fitted
        self.limit_s = (t.time_limit_minutes or 0.0) * 60.0
        self._stage: bool | None = None  # the stage of the steps being timed (True: stage 2)
        self._stage_began = start_iteration  # steps done when that stage's first step began
        self._timer = 0.0
        self._retime_stage2 = False  # after a first fit in stage 1: fit again once stage 2 is timed

    def after_step(self, iteration: int) -> None:
        """``iteration`` steps are done."""
        if not (self.active or self._retime_stage2):
            return
        now, stage2 = time.monotonic(), self.in_stage2()
        if stage2 != self._stage:
            self._stage, self._stage_began = stage2, iteration - 1
        steps = iteration - self._stage_began
        if steps == CALIBRATION_SKIP:
            self._timer = now
        elif steps == CALIBRATION_SKIP + CALIBRATION_ITERATIONS:
            pace = (now - self._timer) / CALIBRATION_ITERATIONS
            if self.active:
                ratio = stage2_cost_ratio(self.config)
                stage1_s, stage2_s = (pace / ratio, pace) if stage2 else (pace, pace * ratio)
                self._fit(iteration, stage1_s, stage2_s, f"time limit {self.config.train.time_limit_minutes:g} min")
                self.active, self._retime_stage2 = False, not stage2
            elif stage2:
                self._retime_stage2 = False
                if iteration < self.refit_before():
                    self._fit(iteration, pace, pace, "time limit re-timed in stage 2")

    def refit_before(self) -> float:
        """The iteration before which stage 2's re-fit may still move the lr steps without moving one already
        passed back: ``REFIT_BEFORE`` of the run, or for steps that fall in stage 2 (config.lr_in_stage2) the first
        of them (a teacher that starts after ``REFIT_BEFORE``, as with stage 1 at 0.65, is still re-timed)."""
        t = self.config.train
        if lr_in_stage2(self.config) and t.stage2_began is not None:
            return float(min(stage2_lr_steps(t.lr_steps, t.iterations, t.stage2_began), default=t.iterations))
        return REFIT_BEFORE * t.iterations

    def _fit(self, iteration: int, stage1_s: float, stage2_s: float, what: str) -> None:
        from .copypaste_step import stage2_iteration

        t, fraction = self.config.train, stage1_fraction(self.config)
        started = self.in_stage2()

        def stage2_from(total: int) -> int:
            return iteration if started else stage2_iteration(fraction, total)

        reserve = 5.0 + t.precise_bn_batches * stage2_s / 2  # final save + BatchNorm pass (as TimeBudget)
        left = self.limit_s - (time.monotonic() - self.began) - reserve
        total = self.agree(two_stage_iterations(left, iteration, stage2_from, stage1_s, stage2_s))
        fit_schedule(self.config, total)
        switch = min(max(iteration, stage2_from(total)), total) if t.stage2_began is None else t.stage2_began
        steps = t.lr_steps
        if lr_in_stage2(self.config):  # the steps fall in stage 2, from where the teacher starts (schedule.lr_at)
            steps = stage2_lr_steps(t.lr_steps, total, switch)
        self.say(f"{what}: {stage1_s:.2f} s per stage-1 step, {stage2_s:.2f} s per stage-2 step, {total} "
                 f"iterations, stage 2 from {switch} (lr steps at {', '.join(map(str, steps))})")
