"""``--mode auto``: the training mode that our equal-CPU-time studies show wins for a run of a given length, on a
model of a given kind (its foreground classes and its network's dimensionality).

    mode, reason = pick_mode(budget_minutes(config), unlabeled_scans=12, classes=1, dims=3)
    # ("seg", "labeled-only for a 10-minute run of a binary 3-D network: at equal CPU time no unlabeled mode ...")

The panel's fine-tune and training from scratch use it by default, and show the one-line reason; ``dtc train
--mode auto`` prints the same line. ``dtc train`` without ``--mode`` keeps the paper's recipe (``dtc``).

The rules follow the studies' tables (bench/results/few-labels.md, copy-paste-teacher.md,
copy-paste-teacher-acdc.md, acdc.md): for each length of run and kind of model, the arm with the best test Dice at
equal process CPU time, final checkpoints, paired per scan. Where no arm beat labeled-only significantly,
labeled-only is picked: it is the cheapest, and the safest. A rule scoped to a kind of model (``classes``, ``dims``)
is picked only for a model known to be of that kind: a run whose model is not known yet (None) gets a rule for any
model. A run's minutes are compared with the studies' CPU minutes of one-thread training: a run on several cores
does more in its minutes than the study arm of that length, so the pick errs toward the shorter budget's mode. Pure
Python (no torch): the Slicer module imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import TEACHER_MODE, UNLABELED_MODES, DTCConfig

AUTO_MODE = "auto"
# CPU seconds of one labeled-only training step on the bundled model's plan (2.0 mm, 48 x 48 x 32 crops, one quiet
# core, fp32): the 4-labeled few-label study's 1900 iterations in 16.7 CPU minutes (bench/results/few-labels.md). It
# turns an iteration count into minutes when a run has no time limit.
STEP_SECONDS = 16.7 * 60 / 1900
MODE_NAMES = {"seg": "labeled-only", "dtc": "DTC", "copy-paste": "labeled-only with copy-paste",
              TEACHER_MODE: "copy-paste teacher"}
# The shortest run the copy-paste teacher is picked for on a binary 3-D network: the LA 4-labeled study's budget,
# about 90 CPU minutes (bench/results/copy-paste-teacher.md), where it won on both seeds; at 14-30 minutes no
# unlabeled mode won significantly on LA (at about 17 CPU minutes the teacher was the top arm on both seeds, +3.62
# points over labeled-only + copy-paste seed-averaged, p = 0.19).
TEACHER_MIN_MINUTES = 90.0


@dataclass(frozen=True)
class BudgetRule:
    """Runs of ``from_minutes`` to ``up_to_minutes`` (both inclusive; None: no bound) of a model with ``classes``
    foreground classes (None: any; 1: binary models only) and a ``dims``-D network (None: any; 3: 3-D networks
    only), on at most ``max_labeled`` labeled scans (None: any number), train ``mode``; ``evidence``: why, from the
    studies (one line)."""

    up_to_minutes: float | None
    mode: str
    evidence: str
    from_minutes: float | None = None
    classes: int | None = None
    dims: int | None = None
    max_labeled: int | None = None

    @property
    def catch_all(self) -> bool:
        """Whether the rule covers every run: no bound on the length, no scope on the model or its data."""
        return all(v is None for v in (self.up_to_minutes, self.from_minutes, self.classes, self.dims,
                                       self.max_labeled))


# First match wins. Evidence (bench/results/few-labels.md, copy-paste-teacher.md, copy-paste-teacher-acdc.md,
# acdc.md; equal process CPU time, final checkpoints, paired per test scan):
# - about 14-30 CPU minutes, LA (binary, 3-D) and ACDC (3 classes, 2-D) with 4-16 and 3-14 labeled scans: no
#   unlabeled mode beat labeled-only significantly. DTC
#   against labeled-only on LA 16 labeled + 64 unlabeled: 88.06 against 87.46, within noise; LA 8 + 72:
#   labeled-only higher on 16 of 20 scans (p = 0.027); LA 4 + 76: p = 0.62; ACDC 2-D 14 + 56, 29 CPU minutes: DTC
#   lower on 19 of 20 (p < 0.001); the annotation loop's fine-tunes: labeled-only ahead in every round.
# - about 90 CPU minutes, LA 4 + 76 (binary, 3-D network): the copy-paste teacher beat labeled-only + copy-paste on
#   both seeds (83.16 against 76.87, p = 0.001; 84.09 against 76.56, p = 0.002); seed-averaged +6.91 points, higher
#   on 16 of 20 scans, p < 0.001. It also beat DTC (+4.87, p = 0.001; +7.18, p = 0.002) and plain labeled-only
#   (74.17, seed 1337), which had saturated. At the curve's short budget (14-20 CPU minutes, two seeds) it
#   was the top arm on both seeds but not significantly ahead: +3.62 over the control seed-averaged (p = 0.19).
# - about 30 CPU minutes, ACDC 2-D 7 + 63 (3 classes, 2-D network): the copy-paste teacher failed, 32.84 against
#   70.96. Cause: its stage 1 (the first 25 % of the run, 1227 iterations) ended before the student segmented any
#   class (0 % validation Dice at iterations 1000 and 1500, BatchNorm statistics recomputed; the labeled-only
#   control found the LV by iteration 2000, the myocardium by 3000, the RV by 4000), so the teacher's
#   pseudo-labels were all background and taught the student that the classes are absent; the RV never appeared.
#   With stage 1 at 65 % and lr 0.01 through it (chosen on validation) it no longer failed but was not ahead: 77.40 /
#   75.22 against 70.96 / 77.87 on two seeds, +1.90, p = 0.55.
# - about 30 CPU minutes, ACDC 2-D 3 + 67 (3 classes, 2-D network), the teacher with Stage 13's recipe (its default
#   for multi-class models): 79.09 / 75.46 against plain labeled-only's 69.72 / 72.92 on seeds 1337 / 2, +5.96
#   seed-averaged but higher on only 9 of 20 patients (p = 0.26), with 28 % more CPU; it beat the weaker
#   labeled-only arm, labeled-only + copy-paste, by 7.64 (p < 0.001). At 7 labeled plain labeled-only (76.49 %,
#   seed 1337) and DTC (79.31 %) were level with the teacher (77.40 %). From 2026-12-08 to this measurement the
#   teacher was picked for 3-class 2-D models on <= 3 labeled scans; with the better labeled-only arm it is not.
# So the teacher is picked only where it won: binary 3-D networks given TEACHER_MIN_MINUTES or more.
RULES: tuple[BudgetRule, ...] = (
    BudgetRule(None, TEACHER_MODE, "it beat labeled-only + copy-paste on left-atrium MRI (4 labeled + 76 unlabeled, "
                                   "binary, 3-D, 90 CPU minutes): 83.2 vs 76.9 and 84.1 vs 76.6 % Dice, two seeds, "
                                   "p <= 0.002",
               from_minutes=TEACHER_MIN_MINUTES, classes=1, dims=3),
    BudgetRule(None, "seg", "at equal CPU time no unlabeled mode beat it significantly in runs of 14-30 minutes on "
                            "left-atrium MRI (binary, 3-D) or cardiac MRI (3 classes, 2-D, 3-14 labeled); the "
                            "copy-paste teacher, ahead on left-atrium runs of 90 minutes, was not on that cardiac MRI"),
)


def run_minutes(time_limit_minutes: float | None, iterations: int) -> float:
    """A run's length in minutes: its time limit (None or 0: none), else its iterations at :data:`STEP_SECONDS`."""
    if time_limit_minutes:
        return float(time_limit_minutes)
    return int(iterations) * STEP_SECONDS / 60.0


def budget_minutes(config: DTCConfig) -> float:
    """:func:`run_minutes` of a config (``train.time_limit_minutes``, ``train.iterations``)."""
    return run_minutes(config.train.time_limit_minutes, config.train.iterations)


def covers(rule: BudgetRule, minutes: float, classes: int | None, dims: int | None,
           labeled: int | None = None) -> bool:
    """Whether ``rule`` covers a run of ``minutes`` of a model with ``classes`` foreground classes and a ``dims``-D
    network on ``labeled`` labeled scans (None: not known, covered only by a rule for any)."""
    return ((rule.from_minutes is None or minutes >= rule.from_minutes)
            and (rule.up_to_minutes is None or minutes <= rule.up_to_minutes)
            and (rule.classes is None or rule.classes == classes)
            and (rule.dims is None or rule.dims == dims)
            and (rule.max_labeled is None or (labeled is not None and labeled <= rule.max_labeled)))


def rule_for(minutes: float, *, classes: int | None, dims: int | None, labeled: int | None = None,
             rules: tuple[BudgetRule, ...] | None = None) -> BudgetRule:
    """The first rule of ``rules`` (default :data:`RULES`) that covers a run of ``minutes`` of a model with
    ``classes`` foreground classes and a ``dims``-D network on ``labeled`` labeled scans (None: not known).
    ValueError unless the rules end with a catch-all (:attr:`BudgetRule.catch_all`)."""
    if minutes <= 0:
        raise ValueError(f"a run's length must be positive, got {minutes} minutes")
    rules = RULES if rules is None else rules
    if not rules or not rules[-1].catch_all:
        raise ValueError("no rule covers every run: end the rules with one for any length, classes and dims "
                         "(None everywhere)")
    return next(r for r in rules if covers(r, minutes, classes, dims, labeled))


def needs_unlabeled_count(minutes: float, *, classes: int | None, dims: int | None, labeled: int | None = None,
                          rules: tuple[BudgetRule, ...] | None = None) -> bool:
    """Whether :func:`pick_mode`'s answer for this run depends on the unlabeled scans (the panel reads the
    dataset's manifest only then)."""
    return rule_for(minutes, classes=classes, dims=dims, labeled=labeled, rules=rules).mode in UNLABELED_MODES


def needs_dims(minutes: float, *, classes: int | None, labeled: int | None = None,
               rules: tuple[BudgetRule, ...] | None = None) -> bool:
    """Whether :func:`pick_mode`'s answer for a run of ``minutes`` of a ``classes``-class model on ``labeled``
    labeled scans depends on its network's dimensionality (the panel plans a new network from the scans' headers
    only then): the first rule that covers the run whatever its dims is scoped by dims."""
    rule_for(minutes, classes=classes, dims=None, labeled=labeled, rules=rules)  # the same checks
    return next(r for r in (RULES if rules is None else rules)
                if covers(r, minutes, classes, r.dims, labeled)).dims is not None


def pick_mode(minutes: float, unlabeled_scans: int, *, classes: int | None, dims: int | None,
              labeled: int | None = None, rules: tuple[BudgetRule, ...] | None = None) -> tuple[str, str]:
    """(mode, one-line reason) for a run of ``minutes`` of a model with ``classes`` foreground classes and a
    ``dims``-D network (None: not known yet) on a dataset with ``labeled`` labeled scans (None: not known; only a
    rule scoped by that number reads it) and ``unlabeled_scans`` unlabeled scans.

    The reason says which mode, for what run and why. A rule that picks a mode needing unlabeled scans
    (``config.UNLABELED_MODES``) falls back to labeled-only when there are none, and says so. ``rules``: default
    :data:`RULES`."""
    rule = rule_for(minutes, classes=classes, dims=dims, labeled=labeled, rules=rules)
    run = _run_words(minutes, classes, dims, labeled if rule.max_labeled is not None else None)
    if rule.mode in UNLABELED_MODES and unlabeled_scans == 0:
        return "seg", (f"labeled-only for {run}: the dataset has no unlabeled scans "
                       f"({MODE_NAMES[rule.mode]} needs them)")
    return rule.mode, f"{MODE_NAMES.get(rule.mode, rule.mode)} for {run}: {rule.evidence}"


def _run_words(minutes: float, classes: int | None, dims: int | None, labeled: int | None = None) -> str:
    """The run in words, e.g. "a 120-minute run of a binary 3-D network", "... on 3 labeled scans" when
    ``labeled`` is given; only what is known is said. Whole minutes are rounded down, so a run said to be of N
    minutes is covered by a rule from N minutes."""
    length = f"{_article(int(minutes))} {int(minutes)}-minute run" if minutes >= 1 else "a run under a minute"
    kind = [w for w in ("binary" if classes == 1 else f"{classes}-class" if classes else "",
                        f"{dims}-D" if dims else "") if w]
    article = _article(classes) if classes and classes > 1 else "a"
    words = f"{length} of {article} {' '.join(kind)} network" if kind else length
    if labeled is not None:
        words += f" on {labeled} labeled scan{'' if labeled == 1 else 's'}"
    return words


def _article(number: int) -> str:
    """"an" before a number spoken with a vowel first (8, 11, 18, 80-89, 800-899, 11000-11999, ...), else "a"."""
    spoken_lead = number
    while spoken_lead >= 1000:  # "eleven thousand", "eighty thousand": the thousands are spoken first
        spoken_lead //= 1000
    return "an" if str(spoken_lead).startswith("8") or spoken_lead in (11, 18) else "a"
