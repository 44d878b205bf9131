"""``dtc train --iterations N``: the schedule (lr steps, consistency ramp) keeps the recipe's proportions at N."""

from __future__ import annotations

import json

import pytest

from conftest import make_blob_dataset, tiny_config
from DTCCore.cli import build_parser, main
from DTCCore.cli.train import build_config
from DTCCore.config import DTCConfig
from DTCCore.errors import CancelledError, DTCError
from DTCCore.model.losses import ramp_weight
from DTCCore.training.schedule import TimeBudget, lr_at


def _config(*extra: str, manifest: str = "m.json") -> DTCConfig:
    return build_config(build_parser().parse_args(["train", manifest, "-o", "run", *extra]))


def test_iterations_scale_the_recipe_schedule():
    reference = _config()  # no --iterations: the paper's schedule, untouched
    assert reference.to_dict() == DTCConfig().to_dict()
    assert reference.train.lr_steps == (2500, 5000) and reference.recipe.ramp_unit == 150
    short = _config("--iterations", "1000")
    assert short.train.iterations == 1000 and short.train.schedule_fitted
    assert short.train.lr_steps == (417, 833)  # x0.1 at 2500/6000 and 5000/6000 of the run
    assert short.recipe.ramp_unit == 25  # 25 x 40 ramp units: full consistency weight at 1000
    assert lr_at(999, short) == pytest.approx(1e-4) and ramp_weight(999, short.recipe) > 0.99
    assert _config("--iterations", "6000").to_dict() == reference.to_dict()  # the config's own length: unscaled
    # With a time limit the scaled schedule stays unfitted, so the time budget still fits it to what fits.
    timed = _config("--iterations", "1000", "--time-limit", "20")
    assert timed.train.lr_steps == (417, 833) and timed.recipe.ramp_unit == 25
    assert not timed.train.schedule_fitted
    assert TimeBudget(timed, 0.0, 0, agree=int, say=print).active
    with pytest.raises(DTCError, match="--iterations 0"):
        _config("--iterations", "0")


def test_iterations_scale_a_config_files_own_schedule(tmp_path):
    config = tiny_config(iterations=600)
    config.train.lr_steps, config.recipe.ramp_unit = (250, 500), 15
    config.save(tmp_path / "cfg.json")
    fitted = _config("--config", str(tmp_path / "cfg.json"), "--iterations", "60")
    assert fitted.train.lr_steps == (25, 50) and fitted.recipe.ramp_unit == 2  # round(1.5): scaled from 600


def test_train_with_iterations_ends_at_full_consistency_and_decayed_lr(tmp_path, capsys):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=1)
    config = tiny_config(iterations=64, checkpoint_every=1000)  # the recipe's proportions at 64 iterations:
    config.train.lr_steps = (27, 53)  # x0.1 at 5/12 and 10/12
    config.recipe.ramp_unit, config.recipe.consistency_rampup = 8, 8.0  # lambda full at 8 x 8 = 64
    config.save(tmp_path / "cfg.json")
    run = tmp_path / "run"
    assert main(["train", str(manifest), "-o", str(run), "--config", str(tmp_path / "cfg.json"),
                 "--iterations", "16", "--jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    last = [e for e in events if e["event"] == "progress"][-1]
    assert last["iteration"] == 16
    assert last["lr"] == pytest.approx(config.train.lr * 0.01)  # both steps passed
    # The last step (index 15) is one ramp unit short of the end: exp(-5 / 64) = 0.925 of the maximum
    # (unscaled, with ramp unit 8, it was exp(-5 (7/8)^2) = 0.022).
    assert last["lambda"] == pytest.approx(0.925, abs=0.001)
    assert last["lambda"] > 0.9 * config.recipe.consistency
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["iterations"] == 16 and saved["train"]["lr_steps"] == [7, 13]
    assert saved["recipe"]["ramp_unit"] == 2  # 2 x 8 ramp units = 16


def test_resume_says_when_it_keeps_a_fitted_length(tmp_path):
    """A run fitted to 4 iterations, resumed with --iterations 8: it finishes its own 4 and says why."""
    from DTCCore.training.runlog import read_log
    from DTCCore.training.schedule import fit_schedule
    from DTCCore.training.trainer import train

    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=1)
    first = tiny_config(iterations=6000)
    fit_schedule(first, 4)
    calls = {"n": 0}

    def cancel_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(CancelledError):
        train(first, manifest, tmp_path / "run", cancel=cancel_after_two)
    longer = tiny_config(iterations=6000)
    fit_schedule(longer, 8)
    train(longer, manifest, tmp_path / "run", resume=True)
    records = read_log(tmp_path / "run")
    assert [r["iteration"] for r in records if r.get("event") == "done"] == [4]
    said = [r.get("text", "") for r in records if r.get("event") == "message"]
    assert any("fitted to 4 iterations" in t and "--iterations 8 is not applied on --resume" in t for t in said), said
