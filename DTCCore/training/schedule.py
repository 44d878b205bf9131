"""The training schedule: the learning-rate steps, and fitting the schedule to a time limit.

``lr_at`` is the reference's step schedule. With ``train.time_limit_minutes`` the :class:`TimeBudget`
times the first iterations, scales the whole schedule (iterations, lr steps, consistency ramp) to the
iterations that fit, and re-times it once early in the run; the fitted schedule is stored in the config
(``train.schedule_fitted``), so a resumed run keeps it.
"""

from __future__ import annotations

import time
from typing import Callable

from ..config import TEACHER_MODE, DTCConfig, lr_in_stage2

# Iterations timed to fit the schedule (the first ones are warm-up: allocator, thread pools).
CALIBRATION_SKIP = 3
CALIBRATION_ITERATIONS = 12
# The budget is re-timed once, this fraction of the run after the first fit (other work on a shared CPU
# makes the first iterations unrepresentative: measured here, 4.4 vs 19.7 s per iteration for two runs
# started together), if that is before REFIT_BEFORE of the run (the first lr step is at 42 %).
REFIT_AFTER, REFIT_BEFORE = 0.15, 0.35
UNBOUNDED_ITERATIONS = 10**9  # batches a time-limited run may draw before its schedule is fitted


def lr_at(iteration: int, config: DTCConfig) -> float:
    """Step schedule: ``lr * gamma^(number of steps passed)`` (reference: x0.1 every 2500 iterations). A
    "copy-paste-teacher" run whose lr steps fall in stage 2 (config.lr_in_stage2) keeps ``lr`` until its teacher
    starts and then takes the steps of :func:`stage2_lr_steps`."""
    t = config.train
    steps = t.lr_steps
    if config.recipe.mode == TEACHER_MODE and lr_in_stage2(config):
        if t.stage2_began is None or iteration < t.stage2_began:
            return t.lr
        steps = stage2_lr_steps(t.lr_steps, t.iterations, t.stage2_began)
    return t.lr * t.lr_gamma ** sum(iteration >= s for s in steps)


def stage2_lr_steps(lr_steps: tuple[int, ...], iterations: int, began: int) -> tuple[int, ...]:
    """A run's lr steps moved into its stage 2 (iterations ``began .. iterations - 1``) at the same fractions: a
    step at ``s`` of ``iterations`` moves to ``began + round(s / iterations * (iterations - began))``. E.g. the
    steps fitted to 6738 iterations, (2808, 5615), with stage 2 from 4380: (5363, 6345)."""
    span = max(0, int(iterations) - int(began))
    return tuple(int(began) + int(round(s / max(1, int(iterations)) * span)) for s in lr_steps)


def fit_schedule(config: DTCConfig, iterations: int) -> None:
    """Scale the recipe's schedule to ``iterations`` in place (``--time-limit``).

    The learning-rate steps and the consistency ramp keep their places as fractions of the run (reference:
    x0.1 at 2500/6000 and 5000/6000, lambda full at 6000/6000), so a short run still decays its learning
    rate and reaches full consistency weight. Sets ``train.schedule_fitted`` so a resume keeps it.
    """
    t = config.train
    iterations = max(1, int(iterations))
    scale = iterations / t.iterations
    t.lr_steps = tuple(max(1, int(round(s * scale))) for s in t.lr_steps)
    config.recipe.ramp_unit = max(1, int(round(config.recipe.ramp_unit * scale)))
    t.iterations = iterations
    t.schedule_fitted = True


def iterations_in_budget(limit_s: float, elapsed_s: float, done: int, seconds_per_iteration: float,
                         reserve_s: float) -> int:
    """Total iterations of a run that has used ``elapsed_s`` of ``limit_s`` for ``done`` iterations and
    runs ``seconds_per_iteration`` from now on, keeping ``reserve_s`` for the final save. At least ``done + 1``."""
    left = limit_s - elapsed_s - reserve_s
    return max(done + 1, done + int(left // max(seconds_per_iteration, 1e-9)))


class TimeBudget:
    """Fits ``config``'s schedule to ``train.time_limit_minutes`` while the run goes (see module docstring).

    ``active`` is True until the first fit; call :meth:`after_step` after every iteration. ``agree`` makes
    every process of a distributed run use rank 0's number (``DistContext.broadcast``); ``say`` logs.
    """

    def __init__(self, config: DTCConfig, began: float, start_iteration: int,
                 agree: Callable[[int], int], say: Callable[[str], None]) -> None:
        t = config.train
        self.config, self.began, self.start = config, began, start_iteration
        self.agree, self.say = agree, say
        self.active = t.time_limit_minutes is not None and not t.schedule_fitted
        self.limit_s = (t.time_limit_minutes or 0.0) * 60.0
        self._timer = 0.0
        self._refit: tuple[int, int, float] | None = None  # (iteration to re-time at, fit iteration, fit time)

    def after_step(self, iteration: int) -> None:
        """``iteration`` steps are done."""
        now = time.monotonic()
        if self.active and iteration - self.start == CALIBRATION_SKIP:
            self._timer = now
        elif self.active and iteration - self.start == CALIBRATION_SKIP + CALIBRATION_ITERATIONS:
            total = self._fit(iteration, (now - self._timer) / CALIBRATION_ITERATIONS, "time limit "
                              f"{self.config.train.time_limit_minutes:g} min")
            self.active = False
            again = iteration + max(CALIBRATION_ITERATIONS, int(REFIT_AFTER * total))
            self._refit = (again, iteration, now) if again < REFIT_BEFORE * total else None
        elif self._refit is not None and iteration == self._refit[0]:
            self._fit(iteration, (now - self._refit[2]) / (iteration - self._refit[1]), "time limit re-timed")
            self._refit = None

    def _fit(self, iteration: int, per_iteration: float, what: str) -> int:
        t = self.config.train
        reserve = 5.0 + t.precise_bn_batches * per_iteration / 2  # final save + BatchNorm pass
        total = self.agree(iterations_in_budget(self.limit_s, time.monotonic() - self.began, iteration,
                                                per_iteration, reserve))
        fit_schedule(self.config, total)
        self.say(f"{what}: {per_iteration:.2f} s per iteration, {total} iterations "
                 f"(lr steps at {', '.join(map(str, t.lr_steps))})")
        return total
