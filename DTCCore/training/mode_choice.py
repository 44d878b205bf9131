"""``--mode auto``: the training mode that our equal-CPU-time studies show wins for a run of a given length.

    mode, reason = pick_mode(budget_minutes(config), unlabeled_scans=12)
    # ("seg", "labeled-only for a 10-minute run: at equal CPU time, unlabeled scans have beaten it only ...")

The panel's fine-tune and training from scratch use it by default, and show the one-line reason; ``dtc train
--mode auto`` prints the same line. ``dtc train`` without ``--mode`` keeps the paper's recipe (``dtc``).

The rule follows the studies' tables (bench/results/few-labels.md): for each length of run, the arm with the
best test Dice at equal process CPU time, final checkpoints, paired per scan. Where no arm beat labeled-only
significantly, labeled-only is picked: it is the cheapest, and the safest. A run's minutes are compared with the
studies' CPU minutes of one-thread training: a run on several cores does more in its minutes than the study arm of
that length, so the pick errs toward the shorter budget's mode. Pure Python (no torch): the Slicer module imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import UNLABELED_MODES, DTCConfig

AUTO_MODE = "auto"
# CPU seconds of one labeled-only training step on the bundled model's plan (2.0 mm, 48 x 48 x 32 crops, one quiet
# core, fp32): the 4-labeled few-label study's 1900 iterations in 16.7 CPU minutes (bench/results/few-labels.md). It
# turns an iteration count into minutes when a run has no time limit.
STEP_SECONDS = 16.7 * 60 / 1900
MODE_NAMES = {"seg": "labeled-only", "dtc": "DTC", "copy-paste": "labeled-only with copy-paste",
              "copy-paste-teacher": "copy-paste teacher"}


@dataclass(frozen=True)
class BudgetRule:
    """Runs up to ``up_to_minutes`` (None: any length) train ``mode``; ``evidence``: why, from the studies."""

    up_to_minutes: float | None
    mode: str
    evidence: str


# First match wins (``up_to_minutes`` inclusive). Evidence (bench/results/few-labels.md, acdc.md; equal process CPU
# time, final checkpoints, paired per test scan):
# - about 17-30 CPU minutes: DTC against labeled-only on LA 16 labeled + 64 unlabeled: 88.06 against 87.46, within
#   noise; LA 8 + 72: labeled-only higher on 16 of 20 scans (p = 0.027); LA 4 + 76: p = 0.62; ACDC 2-D 14 + 56, 29
#   CPU minutes: DTC lower on 19 of 20 (p < 0.001); the annotation loop's fine-tunes: labeled-only ahead in every
#   round.
# - about 90 CPU minutes, LA 4 + 76 (binary, 3-D): the copy-paste teacher beat labeled-only + copy-paste on both
#   seeds (83.16 against 76.87, p = 0.001; 84.09 against 76.56, p = 0.002).
# - about 30 CPU minutes, ACDC 2-D 7 + 63 (3 classes): the copy-paste teacher failed, 32.84 against 70.96 (lower on
#   all 20 patients, the right ventricle never found), for a cause not yet found. The rules know only a run's
#   length, not its classes or plan, so the teacher is not picked at any length until that failure is understood.
RULES: tuple[BudgetRule, ...] = (
    BudgetRule(None, "seg", "at equal CPU time, unlabeled scans have beaten it only in one setting so far (the "
                            "copy-paste teacher, 4 labeled left-atrium scans, 90 minutes), and failed on cardiac MRI"),
)


def run_minutes(time_limit_minutes: float | None, iterations: int) -> float:
    """A run's length in minutes: its time limit (None or 0: none), else its iterations at :data:`STEP_SECONDS`."""
    if time_limit_minutes:
        return float(time_limit_minutes)
    return int(iterations) * STEP_SECONDS / 60.0


def budget_minutes(config: DTCConfig) -> float:
    """:func:`run_minutes` of a config (``train.time_limit_minutes``, ``train.iterations``)."""
    return run_minutes(config.train.time_limit_minutes, config.train.iterations)


def rule_for(minutes: float, rules: tuple[BudgetRule, ...] | None = None) -> BudgetRule:
    """The first rule of ``rules`` (default :data:`RULES`) that covers a run of ``minutes``."""
    if minutes <= 0:
        raise ValueError(f"a run's length must be positive, got {minutes} minutes")
    rule = next((r for r in (RULES if rules is None else rules)
                 if r.up_to_minutes is None or minutes <= r.up_to_minutes), None)
    if rule is None:
        raise ValueError(f"no rule covers a {minutes:g}-minute run: end the rules with one for any length (None)")
    return rule


def needs_unlabeled_count(minutes: float, rules: tuple[BudgetRule, ...] | None = None) -> bool:
    """Whether :func:`pick_mode`'s answer for ``minutes`` depends on the unlabeled scans (the panel reads the
    dataset's manifest only then)."""
    return rule_for(minutes, rules).mode in UNLABELED_MODES


def pick_mode(minutes: float, unlabeled_scans: int, rules: tuple[BudgetRule, ...] | None = None) -> tuple[str, str]:
    """(mode, one-line reason) for a run of ``minutes`` on a dataset with ``unlabeled_scans`` unlabeled scans.

    A rule that picks a mode needing unlabeled scans (``config.UNLABELED_MODES``) falls back to labeled-only
    when there are none, and says so. ``rules``: default :data:`RULES`."""
    rule = rule_for(minutes, rules)
    length = f"a {minutes:.0f}-minute run" if minutes >= 1 else "a run under a minute"
    if rule.mode in UNLABELED_MODES and unlabeled_scans == 0:
        return "seg", (f"labeled-only for {length}: the dataset has no unlabeled scans "
                       f"({MODE_NAMES[rule.mode]} needs them)")
    return rule.mode, f"{MODE_NAMES.get(rule.mode, rule.mode)} for {length}: {rule.evidence}"
