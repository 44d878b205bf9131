"""``--mode auto`` (issue 38 item 4): the mode the studies show wins for a run's length and its model's classes and
dimensionality, with a one-line reason; labeled-only where the rule's mode needs unlabeled scans that the dataset
lacks; the picked mode is the one trained, picked with the classes and dims ``dtc train`` settles on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import blob_volume, tiny_config, write_volume
from DTCCore.cli import main
from DTCCore.config import MODES, UNLABELED_MODES, DTCConfig
from DTCCore.model.checkpoint import load_checkpoint
from DTCCore.training import mode_choice
from DTCCore.training.mode_choice import BudgetRule, budget_minutes, pick_mode

UNKNOWN = {"classes": None, "dims": None}  # a model not known yet
TWO_RULES = (BudgetRule(20.0, "seg", "short runs: evidence A"),
             BudgetRule(None, "copy-paste-teacher", "long runs: evidence B"))
# The teacher for binary 3-D runs of 90 minutes or more, labeled-only for every other run.
SCOPED = (BudgetRule(None, "copy-paste-teacher", "evidence T", from_minutes=90.0, classes=1, dims=3),
          BudgetRule(None, "seg", "evidence S"))


@pytest.mark.parametrize(("minutes", "unlabeled", "mode", "words"), [
    (5.0, 10, "seg", "labeled-only for a 5-minute run: short runs: evidence A"),
    (20.0, 10, "seg", "labeled-only for a 20-minute run: short runs: evidence A"),  # the bound is inclusive
    (20.5, 10, "copy-paste-teacher", "copy-paste teacher for a 20-minute run: long runs: evidence B"),
    (600.0, 3, "copy-paste-teacher", "copy-paste teacher for a 600-minute run: long runs: evidence B"),
    (600.0, 0, "seg", "labeled-only for a 600-minute run: the dataset has no unlabeled scans (copy-paste teacher "
                      "needs them)"),
    (0.5, 0, "seg", "labeled-only for a run under a minute: short runs: evidence A"),
])
def test_the_first_rule_covering_the_length_picks_and_says_why(minutes, unlabeled, mode, words):
    assert pick_mode(minutes, unlabeled, **UNKNOWN, rules=TWO_RULES) == (mode, words)


@pytest.mark.parametrize(("minutes", "classes", "dims", "mode", "run"), [
    (120.0, 1, 3, "copy-paste-teacher", "a 120-minute run of a binary 3-D network"),
    (90.0, 1, 3, "copy-paste-teacher", "a 90-minute run of a binary 3-D network"),  # the lower bound is inclusive
    (89.9, 1, 3, "seg", "an 89-minute run of a binary 3-D network"),  # whole minutes rounded down, never up to 90
    (60.0, 1, 3, "seg", "a 60-minute run of a binary 3-D network"),
    (120.0, 3, 3, "seg", "a 120-minute run of a 3-class 3-D network"),
    (120.0, 1, 2, "seg", "a 120-minute run of a binary 2-D network"),
    (120.0, 3, 2, "seg", "a 120-minute run of a 3-class 2-D network"),
    (120.0, None, 3, "seg", "a 120-minute run of a 3-D network"),  # classes not known: not the binary rule
    (120.0, 1, None, "seg", "a 120-minute run of a binary network"),  # dims not known: not the 3-D rule
    (120.0, None, None, "seg", "a 120-minute run"),
])
def test_a_scoped_rule_covers_only_runs_of_its_kind_of_model(minutes, classes, dims, mode, run):
    evidence = "evidence T" if mode == "copy-paste-teacher" else "evidence S"
    name = "copy-paste teacher" if mode == "copy-paste-teacher" else "labeled-only"
    assert pick_mode(minutes, 5, classes=classes, dims=dims, rules=SCOPED) == (mode, f"{name} for {run}: {evidence}")


def test_a_scoped_rule_needing_unlabeled_scans_falls_back_to_labeled_only_without_them():
    assert pick_mode(120, 0, classes=1, dims=3, rules=SCOPED) == (
        "seg", "labeled-only for a 120-minute run of a binary 3-D network: the dataset has no unlabeled scans "
               "(copy-paste teacher needs them)")
    assert mode_choice.needs_unlabeled_count(120, classes=1, dims=3, rules=SCOPED)
    for classes, dims, minutes in ((3, 3, 120), (1, 2, 120), (1, 3, 60), (None, None, 120)):
        assert not mode_choice.needs_unlabeled_count(minutes, classes=classes, dims=dims, rules=SCOPED)
        assert pick_mode(minutes, 0, classes=classes, dims=dims, rules=SCOPED) == pick_mode(
            minutes, 99, classes=classes, dims=dims, rules=SCOPED)  # so the count may stay unread there


# The teacher for 3-class 2-D runs of 30 minutes or more on at most 3 labeled scans, else SCOPED's rules.
FEW_LABELED = (BudgetRule(None, "copy-paste-teacher", "evidence F", from_minutes=30.0, classes=3, dims=2,
                          max_labeled=3), *SCOPED)


@pytest.mark.parametrize(("labeled", "classes", "dims", "minutes", "mode"), [
    (3, 3, 2, 30.0, "copy-paste-teacher"), (1, 3, 2, 120.0, "copy-paste-teacher"),  # the bound is inclusive
    (4, 3, 2, 120.0, "seg"), (7, 3, 2, 120.0, "seg"),  # more labeled scans than the rule's
    (None, 3, 2, 120.0, "seg"),  # the number not known: only rules for any number
    (3, 3, 3, 120.0, "seg"), (3, 1, 2, 120.0, "seg"), (3, 3, 2, 29.0, "seg"),  # another kind, a shorter run
    (3, 1, 3, 120.0, "copy-paste-teacher"),  # the binary 3-D rule, for any number of labeled scans
])
def test_a_rule_scoped_by_labeled_scans_covers_runs_on_at_most_that_many(labeled, classes, dims, minutes, mode):
    picked, reason = pick_mode(minutes, 5, classes=classes, dims=dims, labeled=labeled, rules=FEW_LABELED)
    assert picked == mode
    said = f" on {labeled} labeled scan{'' if labeled == 1 else 's'}:"  # said only where the rule is scoped by it
    assert (said in reason) == (reason.endswith("evidence F") and labeled is not None), reason
    assert not BudgetRule(None, "seg", "x", max_labeled=3).catch_all


@pytest.mark.parametrize("rules", [mode_choice.RULES, SCOPED, TWO_RULES, FEW_LABELED])
def test_the_dims_are_needed_exactly_where_they_change_the_pick(rules):
    for minutes in (10, 30, 60, 89, 90, 120):
        for classes in (None, 1, 3):
            for labeled in (None, 1, 3, 7):
                picks = {d: pick_mode(minutes, 5, classes=classes, dims=d, labeled=labeled, rules=rules)[0]
                         for d in (None, 2, 3)}
                needed = mode_choice.needs_dims(minutes, classes=classes, labeled=labeled, rules=rules)
                assert needed == (len(set(picks.values())) > 1), (minutes, classes, labeled, picks)
    assert mode_choice.needs_dims(120, classes=1, rules=SCOPED)
    assert not mode_choice.needs_dims(60, classes=1, rules=SCOPED)


KINDS = [(c, d) for c in (None, 1, 2, 3) for d in (None, 2, 3)]


def test_the_shipped_rules_cover_every_run_with_known_modes_in_one_line():
    rules = mode_choice.RULES
    assert rules[-1].catch_all  # any run has a rule
    for rule in rules:
        assert rule.mode in MODES and "\n" not in rule.evidence
    for minutes in (1, 10, 30, 90, 1440):
        for classes, dims in KINDS:
            for unlabeled in (0, 50):
                mode, reason = pick_mode(minutes, unlabeled, classes=classes, dims=dims)
                assert "\n" not in reason and f"{minutes}-minute run" in reason
                assert unlabeled or mode not in UNLABELED_MODES
    # first match wins: every rule is the one picked for some run (none is shadowed by an earlier one)
    lengths = {1.0, 10.0, 30.0, 60.0, 1440.0} | {b for r in rules for b in (r.from_minutes, r.up_to_minutes) if b}
    picked = {mode_choice.rule_for(m, classes=c, dims=d, labeled=n) for m in lengths for c, d in KINDS
              for n in (None, 1, 3, 4, 20)}
    assert picked == set(rules)


@pytest.mark.parametrize(("minutes", "classes", "dims", "labeled", "mode"), [
    (120, 1, 3, 4, "copy-paste-teacher"),  # binary, 3-D, long enough: LA 4 + 76 at ~90 CPU minutes
    (mode_choice.TEACHER_MIN_MINUTES, 1, 3, 40, "copy-paste-teacher"),  # any number of labeled scans
    (120, 3, 3, 3, "seg"), (120, 1, 2, 3, "seg"),  # kinds never measured to win
    (120, 3, 2, 7, "seg"), (120, 3, 2, 4, "seg"),  # 3-class 2-D ACDC with 7 labeled: the teacher was not ahead
    (120, 3, 2, None, "seg"),  # the number of labeled scans not known
    (30, 3, 2, 3, "seg"), (120, 3, 2, 1, "seg"),  # ACDC 3 + 67: not significantly ahead of plain labeled-only
    (60, 1, 3, 4, "seg"), (30, 1, 3, 4, "seg"),  # shorter runs: no unlabeled mode beat labeled-only on LA
    (120, None, None, None, "seg"),  # a model not known yet: the catch-all
])
def test_the_shipped_rules_pick_the_teacher_only_where_it_won(minutes, classes, dims, labeled, mode):
    assert mode_choice.TEACHER_MIN_MINUTES == 90.0  # the LA study's length
    picked, reason = pick_mode(minutes, 50, classes=classes, dims=dims, labeled=labeled)
    assert picked == mode
    assert reason.startswith(mode_choice.MODE_NAMES[mode] + f" for a {int(minutes)}-minute run")
    if mode == "copy-paste-teacher":
        assert "left-atrium" in reason and "83.2" in reason  # why: the study it won
    else:
        assert "cardiac" in reason and "14-30 minutes" in reason  # why not: where it failed, where nothing won


@pytest.mark.parametrize("rules", [TWO_RULES[:1], SCOPED[:1], (), (SCOPED[1], SCOPED[0]),
                                   (BudgetRule(None, "seg", "any length, binary only", classes=1),),
                                   (BudgetRule(None, "seg", "from 1 minute", from_minutes=1.0),)])
def test_the_rules_must_end_with_a_catch_all(rules):
    for classes, dims in ((1, 3), (None, None)):  # even for a run an earlier rule covers
        with pytest.raises(ValueError, match="no rule covers every run"):
            pick_mode(5, 5, classes=classes, dims=dims, rules=rules)
        with pytest.raises(ValueError, match="no rule covers every run"):
            mode_choice.needs_unlabeled_count(5, classes=classes, dims=dims, rules=rules)


def test_a_length_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        pick_mode(0, 5, **UNKNOWN)


def test_the_unlabeled_scans_are_needed_only_where_the_rule_uses_them():
    assert not mode_choice.needs_unlabeled_count(20, **UNKNOWN, rules=TWO_RULES)
    assert mode_choice.needs_unlabeled_count(21, **UNKNOWN, rules=TWO_RULES)
    assert pick_mode(20, 0, **UNKNOWN, rules=TWO_RULES) == pick_mode(20, 99, **UNKNOWN, rules=TWO_RULES)


def test_the_length_is_the_time_limit_else_the_iterations_at_the_measured_step_cost():
    config = DTCConfig()
    config.train.iterations = 600
    assert budget_minutes(config) == pytest.approx(600 * mode_choice.STEP_SECONDS / 60)
    config.train.time_limit_minutes = 45.0
    assert budget_minutes(config) == 45.0
    assert mode_choice.run_minutes(0, 600) == mode_choice.run_minutes(None, 600) == pytest.approx(600 * 0.527 / 60,
                                                                                                   rel=1e-3)


def _dataset(root: Path, unlabeled: int, first_label: int = 1, spacing=(1.0, 1.0, 1.0)) -> Path:
    """Two labeled blob scans (the first one's label value ``first_label``, the other's 1) and ``unlabeled``
    unlabeled ones, ``spacing`` mm apart."""
    rng = np.random.default_rng(5)
    pairs, images = [], []
    for i in range(2 + unlabeled):
        image, label = blob_volume(rng, (40, 36, 24))
        write_volume(root / f"c{i}.nrrd", image, spacing)
        if i < 2:
            write_volume(root / f"c{i}_label.nrrd", label * (first_label if i == 0 else 1), spacing)
            pairs.append({"image": f"c{i}.nrrd", "label": f"c{i}_label.nrrd"})
        else:
            images.append(f"c{i}.nrrd")
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"labeled": pairs, "unlabeled": images}))
    return manifest


@pytest.mark.parametrize("unlabeled", [0, 2])
def test_dtc_train_mode_auto_trains_the_picked_mode_and_prints_why(tmp_path, capsys, monkeypatch, unlabeled):
    rules = (BudgetRule(None, "copy-paste-teacher", "evidence B", classes=1, dims=3), SCOPED[-1])  # any length
    monkeypatch.setattr(mode_choice, "RULES", rules)
    manifest = _dataset(tmp_path / "d", unlabeled)
    cfg = tiny_config(iterations=2)
    args = ["--iterations", "2", "--patch", *map(str, cfg.train.patch), "--base-filters", "2", "--workers", "0",
            "--device", "cpu", "--mode", "auto"]
    assert main(["train", str(manifest), "-o", str(tmp_path / "run"), *args]) == 0
    expected = "copy-paste-teacher" if unlabeled else "seg"  # binary labels, 3-D by default
    minutes = 2 * mode_choice.STEP_SECONDS / 60
    reason = pick_mode(minutes, unlabeled, classes=1, dims=3, rules=rules)[1]
    assert capsys.readouterr().err.splitlines()[0] == f"mode: {expected} ({reason})"
    assert load_checkpoint(tmp_path / "run" / "model.pt")["config"].recipe.mode == expected


@pytest.mark.parametrize(("first_label", "spacing", "extra", "classes", "dims"), [
    (1, (1.0, 1.0, 1.0), [], 1, 3),
    (2, (1.0, 1.0, 1.0), [], 2, 3),  # classes from the labels: set after them, not the default 1
    (1, (1.0, 1.0, 1.0), ["--num-classes", "3"], 3, 3),
    (1, (1.0, 1.0, 1.0), ["--dims", "2"], 1, 2),
    (1, (1.0, 1.0, 5.0), ["--dims", "auto"], 1, 2),  # planned from the scans: slices 5x the pixels -> 2-D
    (1, (1.0, 1.0, 2.0), ["--dims", "auto"], 1, 3),
])
def test_dtc_train_mode_auto_picks_for_the_models_final_classes_and_dims(tmp_path, capsys, monkeypatch, first_label,
                                                                         spacing, extra, classes, dims):
    import DTCCore.training.trainer as trainer

    monkeypatch.setattr(mode_choice, "RULES", SCOPED)
    trained = []
    monkeypatch.setattr(trainer, "train", lambda config, *a, **k: trained.append(config))
    manifest = _dataset(tmp_path / "d", 1, first_label, spacing)
    args = ["--iterations", "2", "--patch", "32", "32", "16", "--device", "cpu", "--mode", "auto", "--time-limit",
            "120", *extra]
    assert main(["train", str(manifest), "-o", str(tmp_path / "run"), *args]) == 0
    (config,) = trained
    assert (config.network.num_classes, config.network.dims) == (classes, dims)
    mode = "copy-paste-teacher" if (classes, dims) == (1, 3) else "seg"
    assert config.recipe.mode == mode
    lines = capsys.readouterr().err.splitlines()
    run = f"a 120-minute run of a {'binary' if classes == 1 else f'{classes}-class'} {dims}-D network"
    assert f"mode: {mode} ({mode_choice.MODE_NAMES[mode]} for {run}: " in lines[0]


@pytest.mark.parametrize(("max_labeled", "mode"), [(2, "copy-paste-teacher"), (1, "seg")])
def test_dtc_train_mode_auto_counts_the_manifests_labeled_scans(tmp_path, capsys, monkeypatch, max_labeled, mode):
    """The manifest's 2 labeled scans decide a rule scoped to at most ``max_labeled``."""
    import DTCCore.training.trainer as trainer

    rules = (BudgetRule(None, "copy-paste-teacher", "evidence F", classes=1, max_labeled=max_labeled), SCOPED[-1])
    monkeypatch.setattr(mode_choice, "RULES", rules)
    trained = []
    monkeypatch.setattr(trainer, "train", lambda config, *a, **k: trained.append(config))
    manifest = _dataset(tmp_path / "d", 1)
    args = ["--iterations", "2", "--patch", "32", "32", "16", "--device", "cpu", "--mode", "auto", "--time-limit", "60"]
    assert main(["train", str(manifest), "-o", str(tmp_path / "run"), *args]) == 0
    assert trained[0].recipe.mode == mode
    line = capsys.readouterr().err.splitlines()[0]
    assert line == f"mode: {mode} ({pick_mode(60, 1, classes=1, dims=3, labeled=2, rules=rules)[1]})"
    assert ("on 2 labeled scans" in line) == (mode == "copy-paste-teacher")


@pytest.mark.parametrize(("number", "article"), [
    (1, "a"), (10, "a"), (100, "a"), (111, "a"), (120, "a"), (1000, "a"),  # "one hundred eleven": a
    (8, "an"), (11, "an"), (18, "an"), (80, "an"), (89, "an"), (800, "an"), (8000, "an"), (11000, "an"),
])
def test_the_reason_line_says_an_before_numbers_spoken_with_a_vowel(number, article):
    assert mode_choice._article(number) == article
    assert pick_mode(float(number), 0, classes=None, dims=None)[1].split(" for ")[1].startswith(f"{article} {number}-")
