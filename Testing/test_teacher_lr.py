"""recipe.cp_lr_in_stage2 (``dtc train --teacher-lr stage2``): the lr of a copy-paste-teacher run stays at its start
through stage 1 and its steps fall at the same fractions of stage 2, counted from the iteration the teacher started
(train.stage2_began); with the stage-2 gate the lr waits with the teacher; a resumed run repeats an uninterrupted
one; other modes and the default are unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import cancel_after, tiny_config
from DTCCore.config import DTCConfig
from DTCCore.errors import CancelledError
from DTCCore.model.checkpoint import load_checkpoint
from DTCCore.training.schedule import fit_schedule, lr_at, stage2_lr_steps
from DTCCore.training.trainer import train


def _naive_lr(iteration: int, base: float, gamma: float, steps: list[int]) -> float:
    """The oracle: multiply by gamma once per step already passed, one step at a time."""
    lr = base
    for s in steps:
        if iteration >= s:
            lr *= gamma
    return lr


def _teacher_config(iterations: int, lr_steps: tuple[int, ...], in_stage2: bool | None = True) -> DTCConfig:
    config = DTCConfig()
    config.recipe.mode, config.recipe.cp_lr_in_stage2 = "copy-paste-teacher", in_stage2
    config.train.iterations, config.train.lr_steps = iterations, lr_steps
    return config


def test_the_steps_move_into_stage_two_at_their_fractions_of_it():
    """Hand-computed: 1200 iterations, steps at 500 and 1000 (5/12, 10/12), teacher from 600: steps at 600 + 250
    and 600 + 500. The schedule fitted to 6738 iterations, (2808, 5615), teacher from 4380: 2808/6738 x 2358 =
    982.7 -> 5363, 5615/6738 x 2358 = 1965.0 -> 6345."""
    assert stage2_lr_steps((500, 1000), 1200, 600) == (850, 1100)
    assert stage2_lr_steps((2808, 5615), 6738, 4380) == (5363, 6345)
    config = _teacher_config(1200, (500, 1000))
    for began in (None, 600, 700):
        config.train.stage2_began = began
        expected_steps = [] if began is None else [began + (s * (1200 - began) + 600) // 1200 for s in (500, 1000)]
        for i in range(1200):
            assert lr_at(i, config) == pytest.approx(_naive_lr(i, 0.01, 0.1, expected_steps)), (began, i)


def test_the_default_and_other_modes_keep_the_steps_of_the_whole_run():
    """Off (the default) or in any other mode, a teacher start changes nothing: the steps of the whole run."""
    for mode, in_stage2 in (("copy-paste-teacher", False), ("dtc", True), ("copy-paste", True), ("seg", True)):
        config = _teacher_config(1200, (500, 1000), in_stage2)
        config.recipe.mode = mode
        config.train.stage2_began = 600
        for i in range(1200):
            assert lr_at(i, config) == pytest.approx(_naive_lr(i, 0.01, 0.1, [500, 1000])), (mode, i)


def test_the_default_recipe_follows_the_model_s_classes():
    """Left None, one class gets BCP's LA recipe (stage 1 at 2000 / 17000, whole-run steps) and more classes ACDC
    Stage 13's (stage 1 at 0.65, the steps in stage 2); a value given wins over both."""
    from DTCCore.config import lr_in_stage2, stage1_fraction
    from DTCCore.training.copypaste_step import stage2_start

    config = _teacher_config(1700, (708, 1417), in_stage2=None)
    assert config.recipe.cp_stage1_fraction is None
    assert stage1_fraction(config) == pytest.approx(2000 / 17000) and stage2_start(config) == 200
    assert lr_in_stage2(config) is False
    config.train.stage2_began = 200
    assert lr_at(708, config) == pytest.approx(0.001)  # the whole run's first step
    config.network.num_classes = 3
    assert stage1_fraction(config) == 0.65 and stage2_start(config) == 1105 and lr_in_stage2(config) is True
    config.train.stage2_began = 1105
    assert lr_at(708, config) == pytest.approx(0.01) and lr_at(1104, config) == pytest.approx(0.01)
    first = stage2_lr_steps((708, 1417), 1700, 1105)[0]
    assert first == 1105 + round(708 / 1700 * 595) and lr_at(first, config) == pytest.approx(0.001)
    config.recipe.cp_stage1_fraction = 0.25  # a fraction given (--stage1-fraction): the lr placement by classes still
    assert stage1_fraction(config) == 0.25 and lr_in_stage2(config) is True
    config.recipe.cp_lr_in_stage2 = False
    assert stage1_fraction(config) == 0.25 and lr_in_stage2(config) is False
    config.network.num_classes = 1
    config.recipe.cp_lr_in_stage2 = True
    assert lr_in_stage2(config) is True


def test_a_time_limit_keeps_the_fractions():
    """fit_schedule scales the run's steps with its length, so the steps in stage 2 keep their fractions of it."""
    config = _teacher_config(6000, (2500, 5000))
    fit_schedule(config, 2400)
    assert config.train.lr_steps == (1000, 2000)
    assert stage2_lr_steps(config.train.lr_steps, 2400, 1200) == (1700, 2200)  # 1200 + 5/12, 10/12 of 1200


def _run_config(checkpoint_every: int = 20) -> DTCConfig:
    """20 iterations, stage 1 the first 6, lr steps at 5 and 15 (1/4 and 3/4), the gate checking every 2."""
    config = tiny_config(iterations=20, precise_bn_batches=0, lr_steps=(5, 15), checkpoint_every=checkpoint_every)
    config.recipe.mode, config.recipe.cp_stage1_fraction = "copy-paste-teacher", 0.3
    config.recipe.cp_stage2_gate, config.recipe.cp_lr_in_stage2 = True, True
    return config


@pytest.fixture
def gated(monkeypatch):
    """The model misses class 1 until 10 steps are done (a stand-in check that reads the run's progress events),
    so the gate's checks at 6 and 8 keep the teacher waiting and the one at 10 starts it."""
    from DTCCore.training import copypaste_step

    monkeypatch.setattr(copypaste_step, "STAGE2_GATE_EVERY", 2)
    done = {"steps": 0}
    monkeypatch.setattr(copypaste_step, "unlearned_classes", lambda *args: [1] if done["steps"] < 10 else [])
    seen: list[dict] = []

    def progress(event: dict) -> None:
        if event.get("event") == "progress":
            done["steps"] = int(event["iteration"])
            seen.append(event)

    return done, seen, progress


def test_the_lr_waits_with_the_gated_teacher(tmp_path, blob_manifest, gated):
    """Every step's lr, as logged: 0.01 until the teacher starts at 10, then the steps at 10 + round(1/4 x 10) = 12
    and 10 + round(3/4 x 10) = 18 (the whole run's would be 5 and 15). The start is saved with the config."""
    done, seen, progress = gated
    train(_run_config(), blob_manifest, tmp_path / "run", progress=progress)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_000020.pt")
    assert saved["config"].train.stage2_began == 10 and saved["teacher"] is not None
    logged = {int(e["iteration"]) - 1: float(e["lr"]) for e in seen}
    assert sorted(logged) == list(range(20))
    for i, lr in logged.items():
        assert lr == pytest.approx(_naive_lr(i, 0.01, 0.1, [12, 18])), i


@pytest.mark.parametrize("stop_after", [7, 13])  # while the teacher waits, after it started and the first step
def test_a_resumed_run_repeats_an_uninterrupted_one(tmp_path, blob_manifest, gated, stop_after):
    done, seen, progress = gated
    train(_run_config(), blob_manifest, tmp_path / "full", progress=progress)
    part = tmp_path / "part"
    done["steps"] = 0
    with pytest.raises(CancelledError):
        train(_run_config(checkpoint_every=1), blob_manifest, part, cancel=cancel_after(stop_after), progress=progress)
    assert done["steps"] == stop_after
    seen.clear()
    train(_run_config(checkpoint_every=1), blob_manifest, part, resume=True, progress=progress)
    assert [float(e["lr"]) for e in seen] == pytest.approx(
        [_naive_lr(i, 0.01, 0.1, [12, 18]) for i in range(stop_after, 20)])
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "iter_000020.pt")
    b = load_checkpoint(part / "checkpoints" / "iter_000020.pt")
    assert b["config"].train.stage2_began == 10
    for key in ("model", "teacher"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)


def test_a_new_run_forgets_a_start_from_the_config_it_was_given(tmp_path, blob_manifest, gated):
    """A config copied from a finished run carries its train.stage2_began; a new run starts without a teacher, so
    its lr stays 0.01 until its own teacher starts."""
    done, seen, progress = gated
    config = _run_config()
    config.train.stage2_began = 2
    train(config, blob_manifest, tmp_path / "run", progress=progress)
    assert [float(e["lr"]) for e in seen][:12] == pytest.approx([0.01] * 12)


def test_the_flag_sets_the_recipe():
    from DTCCore.cli import build_parser
    from DTCCore.cli.train import build_config

    parser = build_parser()
    base = ["train", "m.json", "-o", "run", "--mode", "copy-paste-teacher"]
    assert build_config(parser.parse_args([*base, "--teacher-lr", "stage2"])).recipe.cp_lr_in_stage2 is True
    assert build_config(parser.parse_args([*base, "--teacher-lr", "run"])).recipe.cp_lr_in_stage2 is False
    assert build_config(parser.parse_args(base)).recipe.cp_lr_in_stage2 is None  # by the model's classes
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--teacher-lr", "late"])
    older = DTCConfig().to_dict()  # a run saved before the option: no such keys
    del older["recipe"]["cp_lr_in_stage2"], older["train"]["stage2_began"]
    restored = DTCConfig.from_dict(older)
    assert restored.recipe.cp_lr_in_stage2 is None and restored.train.stage2_began is None
    older["recipe"]["cp_stage1_fraction"] = 0.25  # a saved run's explicit fraction is kept
    assert DTCConfig.from_dict(older).recipe.cp_stage1_fraction == 0.25


def test_a_config_saved_before_the_option_keeps_the_whole_run_steps():
    """Configs saved before recipe.cp_lr_in_stage2 hold their stage-1 fraction and no such key: a 3-class run of
    theirs resumes with its lr steps in the whole run, as it began; only the default pair moves them."""
    from DTCCore.config import lr_in_stage2

    older = DTCConfig().to_dict()
    older["network"]["num_classes"], older["recipe"]["mode"] = 3, "copy-paste-teacher"
    older["recipe"]["cp_stage1_fraction"] = 2000 / 17000  # the float every config used to save
    del older["recipe"]["cp_lr_in_stage2"], older["train"]["stage2_began"]
    saved = DTCConfig.from_dict(older)
    assert lr_in_stage2(saved) is False
    saved.train.stage2_began = 100
    assert lr_at(2500, saved) == pytest.approx(0.001)  # the saved steps (2500, 5000) of the whole run
    older["recipe"]["cp_stage1_fraction"] = None
    assert lr_in_stage2(DTCConfig.from_dict(older)) is True


def test_a_resume_does_not_move_steps_that_began_in_stage_two(tmp_path, blob_manifest):
    """A run whose lr steps fall in a stage 2 that has begun keeps its length on --resume, with a note: a longer run
    would move its steps, some already passed, and raise the lr again."""
    def config(iterations: int) -> DTCConfig:
        c = tiny_config(iterations=iterations, precise_bn_batches=0, lr_steps=(5, 8), checkpoint_every=1)
        c.recipe.mode, c.recipe.cp_stage1_fraction, c.recipe.cp_lr_in_stage2 = "copy-paste-teacher", 0.3, True
        return c

    run = tmp_path / "run"
    with pytest.raises(CancelledError):
        train(config(10), blob_manifest, run, cancel=cancel_after(6))
    train(config(20), blob_manifest, run, resume=True)
    final = load_checkpoint(run / "model.pt")
    assert final["iteration"] == 10 and final["config"].train.stage2_began == 3
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    notes = [e["text"] for e in events if e["event"] == "message"]
    assert any("--iterations 20 is not applied on --resume" in n and "stage 2, from iteration 3" in n for n in notes)


@pytest.mark.parametrize("dims", [2, 3])
def test_a_time_limit_re_times_a_late_stage_two_whose_steps_fall_in_it(monkeypatch, dims):
    """Stage 1 at 0.65 (the multi-class default) starts the teacher after REFIT_BEFORE (0.35) of the run: with the lr
    steps in stage 2 none has passed yet, so stage 2 is still re-timed and the run fits the hour at stage 2's real
    pace (before, the first fit's guess stood, and on ACDC's 2-D plan, where a stage-2 step costs 2.4 stage-1 steps,
    not 1.4, a run overran its limit). The first fit guesses by the network's dims."""
    from DTCCore.training import schedule, two_stage_budget
    from DTCCore.training.two_stage_budget import (
        STAGE2_COST_RATIO,
        STAGE2_COST_RATIO_2D,
        TwoStageBudget,
        two_stage_iterations,
    )

    clock = {"now": 0.0}
    monkeypatch.setattr(two_stage_budget.time, "monotonic", lambda: clock["now"])
    config = tiny_config(iterations=6000, precise_bn_batches=0, lr_steps=(2500, 5000), time_limit_minutes=60.0)
    config.network.dims = dims
    config.recipe.mode, config.recipe.cp_stage1_fraction = "copy-paste-teacher", 0.65
    config.recipe.cp_lr_in_stage2 = True
    said: list = []
    budget = TwoStageBudget(config, 0.0, 0, agree=lambda v: v, say=said.append,
                            in_stage2=lambda: config.train.stage2_began is not None)
    ratio = STAGE2_COST_RATIO_2D if dims == 2 else STAGE2_COST_RATIO
    iteration = 0
    while iteration < config.train.iterations and len(said) < 2:
        if config.train.stage2_began is None and iteration >= round(0.65 * config.train.iterations):
            config.train.stage2_began = iteration  # what copypaste_step.start_stage2 does
        clock["now"] += 2.4 if config.train.stage2_began is not None else 1.0  # 1 s a stage-1 step, 2.4 s stage 2
        iteration += 1
        budget.after_step(iteration)
        if iteration == schedule.CALIBRATION_SKIP + schedule.CALIBRATION_ITERATIONS:
            assert config.train.iterations == two_stage_iterations(3580.0, 15, lambda t: round(0.65 * t), 1.0, ratio)
    began = config.train.stage2_began
    assert began is not None and began > two_stage_budget.REFIT_BEFORE * config.train.iterations
    assert len(said) == 2 and "re-timed in stage 2" in said[1]
    assert config.train.iterations == iteration + int((3600.0 - clock["now"] - 5.0) // 2.4)  # the hour, exactly
    assert min(stage2_lr_steps(config.train.lr_steps, config.train.iterations, began)) > iteration
