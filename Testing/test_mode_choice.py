"""``--mode auto`` (issue 38 item 4): the mode the studies show wins for a run's length, with a one-line reason;
labeled-only where the rule's mode needs unlabeled scans that the dataset lacks; the picked mode is the one trained."""

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

TWO_RULES = (BudgetRule(20.0, "seg", "short runs: evidence A"),
             BudgetRule(None, "copy-paste-teacher", "long runs: evidence B"))


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
    assert pick_mode(minutes, unlabeled, TWO_RULES) == (mode, words)


def test_the_shipped_rules_cover_every_length_with_known_modes_in_one_line():
    rules = mode_choice.RULES
    assert rules[-1].up_to_minutes is None  # any length has a rule
    bounds = [r.up_to_minutes for r in rules[:-1]]
    assert bounds == sorted(bounds)  # first match wins: a later, shorter bound would never be reached
    for rule in rules:
        assert rule.mode in MODES
    for minutes in (1, 10, 30, 90, 1440):
        for unlabeled in (0, 50):
            mode, reason = pick_mode(minutes, unlabeled)
            assert "\n" not in reason and f"{minutes}-minute run" in reason
            assert unlabeled or mode not in UNLABELED_MODES


def test_a_length_must_be_positive_and_covered_by_a_rule():
    with pytest.raises(ValueError, match="positive"):
        pick_mode(0, 5)
    with pytest.raises(ValueError, match="no rule covers a 25-minute run"):
        pick_mode(25, 5, TWO_RULES[:1])


def test_the_unlabeled_scans_are_needed_only_where_the_rule_uses_them():
    assert not mode_choice.needs_unlabeled_count(20, TWO_RULES)
    assert mode_choice.needs_unlabeled_count(21, TWO_RULES)
    assert pick_mode(20, 0, TWO_RULES) == pick_mode(20, 99, TWO_RULES)  # so the count may stay unread there


def test_the_length_is_the_time_limit_else_the_iterations_at_the_measured_step_cost():
    config = DTCConfig()
    config.train.iterations = 600
    assert budget_minutes(config) == pytest.approx(600 * mode_choice.STEP_SECONDS / 60)
    config.train.time_limit_minutes = 45.0
    assert budget_minutes(config) == 45.0
    assert mode_choice.run_minutes(0, 600) == mode_choice.run_minutes(None, 600) == pytest.approx(600 * 0.527 / 60,
                                                                                                   rel=1e-3)


def _dataset(root: Path, unlabeled: int) -> Path:
    rng = np.random.default_rng(5)
    pairs, images = [], []
    for i in range(2 + unlabeled):
        image, label = blob_volume(rng, (40, 36, 24))
        write_volume(root / f"c{i}.nrrd", image)
        if i < 2:
            write_volume(root / f"c{i}_label.nrrd", label)
            pairs.append({"image": f"c{i}.nrrd", "label": f"c{i}_label.nrrd"})
        else:
            images.append(f"c{i}.nrrd")
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"labeled": pairs, "unlabeled": images}))
    return manifest


@pytest.mark.parametrize("unlabeled", [0, 2])
def test_dtc_train_mode_auto_trains_the_picked_mode_and_prints_why(tmp_path, capsys, monkeypatch, unlabeled):
    monkeypatch.setattr(mode_choice, "RULES", (BudgetRule(None, "copy-paste-teacher", "evidence B"),))
    manifest = _dataset(tmp_path / "d", unlabeled)
    cfg = tiny_config(iterations=2)
    args = ["--iterations", "2", "--patch", *map(str, cfg.train.patch), "--base-filters", "2", "--workers", "0",
            "--device", "cpu", "--mode", "auto"]
    assert main(["train", str(manifest), "-o", str(tmp_path / "run"), *args]) == 0
    expected = "copy-paste-teacher" if unlabeled else "seg"
    minutes = 2 * mode_choice.STEP_SECONDS / 60
    assert capsys.readouterr().err.splitlines()[0] == f"mode: {expected} ({pick_mode(minutes, unlabeled)[1]})"
    assert load_checkpoint(tmp_path / "run" / "model.pt")["config"].recipe.mode == expected
