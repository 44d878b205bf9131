"""``--time-limit``: the schedule scaled to the iterations that fit, stored so that a resume keeps it."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_config
from DTCCore.config import DTCConfig
from DTCCore.errors import CancelledError, DTCError
from DTCCore.model.checkpoint import load_checkpoint
from DTCCore.model.losses import ramp_weight
from DTCCore.training.schedule import (
    CALIBRATION_ITERATIONS,
    CALIBRATION_SKIP,
    fit_schedule,
    iterations_in_budget,
    lr_at,
)
from DTCCore.training.trainer import train


def test_fit_schedule_keeps_the_recipe_proportions():
    config = DTCConfig()  # reference: 6000 iterations, lr x0.1 at 2500 and 5000, lambda unit 150 x 40
    fit_schedule(config, 600)
    assert config.train.iterations == 600 and config.train.schedule_fitted
    assert config.train.lr_steps == (250, 500)
    assert config.recipe.ramp_unit == 15
    assert lr_at(249, config) == pytest.approx(0.01) and lr_at(250, config) == pytest.approx(0.001)
    assert lr_at(599, config) == pytest.approx(1e-4)
    assert ramp_weight(599, config.recipe) == pytest.approx(1.0, abs=0.01)  # full weight at the end
    assert ramp_weight(300, config.recipe) < 0.6


def test_iterations_in_budget():
    # 600 s limit, 100 s used for 20 iterations, 2 s per iteration, 10 s kept: 245 more.
    assert iterations_in_budget(600, 100, 20, 2.0, 10) == 265
    assert iterations_in_budget(60, 100, 20, 2.0, 10) == 21  # over budget: one more step, then finish


def read_events(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_time_limited_run_fits_its_schedule_and_a_resume_keeps_it(blob_manifest, tmp_path, monkeypatch):
    # The budget arithmetic is tested above; here the fitted total is fixed, so the test does not depend on
    # this machine's speed, and the trainer's call is checked.
    calls = []

    def budget(limit_s, elapsed_s, done, seconds_per_iteration, reserve_s):
        calls.append((limit_s, elapsed_s, done, seconds_per_iteration, reserve_s))
        return 24

    monkeypatch.setattr("DTCCore.training.schedule.iterations_in_budget", budget)
    config = tiny_config(iterations=6000, time_limit_minutes=0.25, checkpoint_every=10_000)
    config.train.lr_steps = (2500, 5000)
    config.recipe.ramp_unit = 150
    run = tmp_path / "run"
    stop_at = CALIBRATION_SKIP + CALIBRATION_ITERATIONS + 2
    seen = []

    def cancel() -> bool:
        return len(seen) >= stop_at

    def listen(record):
        if record["event"] == "progress":
            seen.append(record)

    with pytest.raises(CancelledError):
        train(config, blob_manifest, run, cancel=cancel, progress=listen)
    events = read_events(run)
    fitted = [e for e in events if e["event"] == "message" and e["text"].startswith("time limit")]
    assert len(fitted) == 1
    (limit_s, elapsed_s, done, per_iteration, reserve_s), = calls
    assert limit_s == 15.0 and done == CALIBRATION_SKIP + CALIBRATION_ITERATIONS
    assert 0 < per_iteration < elapsed_s and reserve_s > 0
    saved = load_checkpoint(sorted((run / "checkpoints").glob("iter_*.pt"))[-1])["config"]
    assert saved.train.schedule_fitted
    total = saved.train.iterations
    assert total == 24
    assert saved.train.lr_steps == (round(2500 * total / 6000), round(5000 * total / 6000))
    assert saved.recipe.ramp_unit == max(1, round(150 * total / 6000))
    # The lr used at every logged step follows the fitted schedule from the fit on.
    for e in seen[CALIBRATION_SKIP + CALIBRATION_ITERATIONS:]:
        assert e["lr"] == pytest.approx(lr_at(e["iteration"] - 1, saved))

    # Resume with another limit and iteration count on the command line: the run's schedule is kept.
    again = tiny_config(iterations=50, time_limit_minutes=5.0)
    model = train(again, blob_manifest, run, resume=True)
    final = load_checkpoint(model)
    assert final["iteration"] == total
    assert final["config"].train.iterations == total and final["config"].train.lr_steps == saved.train.lr_steps
    assert [e for e in read_events(run) if e["event"] == "message" and e["text"].startswith("time limit")] == fitted


def test_bad_time_limit_is_refused():
    config = DTCConfig()
    config.train.time_limit_minutes = 0
    with pytest.raises(DTCError, match="time limit"):
        config.validate()


def test_the_budget_is_re_timed_once_early_in_the_run(blob_manifest, tmp_path, monkeypatch):
    # First fit: 120 iterations; re-timed at 15 + 18 = 33 (before 35 % of the run) to 40 iterations.
    answers = [120, 40]
    calls = []

    def budget(limit_s, elapsed_s, done, seconds_per_iteration, reserve_s):
        calls.append(done)
        return answers[len(calls) - 1]

    monkeypatch.setattr("DTCCore.training.schedule.iterations_in_budget", budget)
    config = tiny_config(iterations=6000, time_limit_minutes=5.0, checkpoint_every=10_000)
    config.train.lr_steps = (2500, 5000)
    model = train(config, blob_manifest, tmp_path / "run")
    fitted = load_checkpoint(model)["config"]
    assert calls == [CALIBRATION_SKIP + CALIBRATION_ITERATIONS, CALIBRATION_SKIP + CALIBRATION_ITERATIONS + 18]
    assert fitted.train.iterations == 40 and load_checkpoint(model)["iteration"] == 40
    assert fitted.train.lr_steps == (round(round(2500 * 120 / 6000) * 40 / 120),
                                     round(round(5000 * 120 / 6000) * 40 / 120))
