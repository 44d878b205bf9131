"""The copy-paste modes in the trainer: stages, teacher in checkpoints, resume equals an uninterrupted run,
cancel, a 2-D multi-class run, --time-limit over two stages; and the DTC modes' runs unchanged by them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import cancel_after, make_blob_dataset, tiny_config, write_volume
from DTCCore.config import DTCConfig
from DTCCore.errors import CancelledError, DTCError
from DTCCore.model.checkpoint import find_latest_checkpoint, list_checkpoints, load_checkpoint, load_model
from DTCCore.training.trainer import RANK_SEED_STRIDE, SEED_STRIDE, train
from DTCCore.training.two_stage_budget import STAGE2_COST_RATIO, TwoStageBudget, two_stage_iterations


def _config(mode: str, iterations: int = 6, fraction: float = 0.5, **train):
    config = tiny_config(iterations=iterations, **{"precise_bn_batches": 0, **train})  # (model.pt not compared)
    config.recipe.mode = mode
    config.recipe.cp_stage1_fraction = fraction
    return config


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _plain_loop_weights(config: DTCConfig, manifest) -> dict:
    """The DTC recipe written out as a bare loop (what training/trainer.py documents): seeded network, SGD, the batches
    of data.TrainBatches, dropout reseeded per iteration, losses.compute_losses. Weights after the last step."""
    from DTCCore.data.manifest import load_manifest
    from DTCCore.model.losses import compute_losses
    from DTCCore.model.network import build_network
    from DTCCore.training.batches import TrainBatches, load_cases
    from DTCCore.training.schedule import lr_at

    t = config.train
    labeled, unlabeled = load_cases(load_manifest(manifest), config.network.num_classes)
    if config.recipe.mode != "dtc":
        unlabeled = []
    torch.manual_seed(t.seed)
    model = build_network(config.network).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    batches = TrainBatches(labeled, unlabeled, t, config.recipe, seed=t.seed)
    for i in range(t.iterations):
        batch = batches[i]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(i, config)
        torch.manual_seed(t.seed * SEED_STRIDE + 0 * RANK_SEED_STRIDE + i)
        seg, lsf = model(batch["image"])
        losses = compute_losses(seg, lsf, batch["label"], batch["sdf"], t.labeled_batch, i, config.recipe)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
    return model.state_dict()


@pytest.mark.parametrize("mode", ["dtc", "seg"])
def test_dtc_and_seg_runs_are_the_plain_recipe_bit_for_bit(tmp_path, blob_manifest, mode):
    """No regression from the new modes: a dtc or seg run's weights equal the recipe's bare loop exactly, so no
    extra random draw, data change or loss term entered these modes."""
    config = _config(mode, iterations=3, lr_steps=(2,))
    train(config, blob_manifest, tmp_path / "run")
    _same(load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_000003.pt")["model"],
          _plain_loop_weights(config, blob_manifest))


def test_stage_two_starts_at_its_fraction_and_the_teacher_enters_the_checkpoints(tmp_path, blob_manifest):
    events: list = []
    train(_config("copy-paste-teacher", iterations=6, fraction=0.5, checkpoint_every=1), blob_manifest,
          tmp_path / "run", progress=events.append)
    assert events[0]["unlabeled"] == 2
    teachers = {it: load_checkpoint(path).get("teacher") for it, path in list_checkpoints(tmp_path / "run")}
    # iterations 0..2 are stage 1 (round(0.5 * 6) = 3); the teacher is made at the start of step 3
    assert [it for it, state in sorted(teachers.items()) if state is not None] == [4, 5, 6]
    student = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_000004.pt")["model"]
    assert not all(torch.equal(student[k], teachers[4][k]) for k in student)  # the EMA lags the student
    progress = [e for e in events if e["event"] == "progress"]
    assert all(set(e["losses"]) == {"total", "dice", "lsf", "consistency", "ce"} for e in progress)
    assert all(np.isfinite(list(e["losses"].values())).all() and e["eta_s"] >= 0 for e in progress)
    model = load_checkpoint(tmp_path / "run" / "model.pt")
    assert "teacher" not in model  # model.pt holds the student only


def test_copy_paste_mode_is_stage_one_throughout_and_never_reads_unlabeled_scans(tmp_path, blob_manifest):
    events: list = []
    train(_config("copy-paste", iterations=4), blob_manifest, tmp_path / "cp", progress=events.append)
    assert events[0]["unlabeled"] == 0
    assert all(load_checkpoint(p).get("teacher") is None for _, p in list_checkpoints(tmp_path / "cp"))
    # the teacher mode with stage 1 for the whole run takes exactly the same steps (same crops, same boxes)
    train(_config("copy-paste-teacher", iterations=4, fraction=1.0), blob_manifest, tmp_path / "cpt")
    _same(load_checkpoint(tmp_path / "cp" / "checkpoints" / "iter_000004.pt")["model"],
          load_checkpoint(tmp_path / "cpt" / "checkpoints" / "iter_000004.pt")["model"])


@pytest.mark.parametrize("stop_after", [2, 5])  # in stage 1 (the teacher is made after the resume), in stage 2
def test_a_resumed_copy_paste_teacher_run_repeats_an_uninterrupted_one(tmp_path, blob_manifest, stop_after):
    full = tmp_path / "full"
    train(_config("copy-paste-teacher", iterations=7, fraction=0.45), blob_manifest, full)
    part = tmp_path / "part"
    with pytest.raises(CancelledError):
        train(_config("copy-paste-teacher", iterations=7, fraction=0.45), blob_manifest, part,
              cancel=cancel_after(stop_after))
    latest = find_latest_checkpoint(part)
    assert latest is not None and latest[1]["iteration"] == stop_after
    assert (latest[1].get("teacher") is not None) == (stop_after > 3)  # round(0.45 * 7) = 3
    train(_config("copy-paste-teacher", iterations=7, fraction=0.45), blob_manifest, part, resume=True)
    a = load_checkpoint(full / "checkpoints" / "iter_000007.pt")
    b = load_checkpoint(part / "checkpoints" / "iter_000007.pt")
    _same(a["model"], b["model"])
    _same(a["teacher"], b["teacher"])


@pytest.mark.parametrize("stop_after", [4, 8])  # while the teacher waits, after it started
def test_a_resumed_gated_run_repeats_an_uninterrupted_one(tmp_path, blob_manifest, monkeypatch, stop_after):
    """With recipe.cp_stage2_gate the teacher waits on the gate's grid (the fraction, then every STAGE2_GATE_EVERY
    iterations) while a class is missing, and a run resumed in the wait or after it repeats an uninterrupted one.
    The model is made to miss class 1 for its first 6 steps and to find it after (a stand-in check, which reads the
    steps done from the run's progress events)."""
    from DTCCore.training import copypaste_step

    monkeypatch.setattr(copypaste_step, "STAGE2_GATE_EVERY", 2)
    done = {"steps": 0}
    monkeypatch.setattr(copypaste_step, "unlearned_classes", lambda *args: [1] if done["steps"] < 6 else [])

    def progress(event: dict) -> None:
        if event.get("event") == "progress":
            done["steps"] = int(event["iteration"])

    def config():
        c = _config("copy-paste-teacher", iterations=10, fraction=0.3, checkpoint_every=1)
        c.recipe.cp_stage2_gate = True
        return c

    full = tmp_path / "full"
    train(config(), blob_manifest, full, progress=progress)
    started = min(it for it, path in list_checkpoints(full) if load_checkpoint(path).get("teacher") is not None) - 1
    assert started == 7  # round(0.3 * 10) = 3: the checks at 3 and 5 miss class 1, the one at 7 finds it
    part = tmp_path / "part"
    done["steps"] = 0
    with pytest.raises(CancelledError):
        train(config(), blob_manifest, part, cancel=cancel_after(stop_after), progress=progress)
    assert done["steps"] == stop_after
    train(config(), blob_manifest, part, resume=True, progress=progress)
    a = load_checkpoint(full / "checkpoints" / "iter_000010.pt")
    b = load_checkpoint(part / "checkpoints" / "iter_000010.pt")
    _same(a["model"], b["model"])
    _same(a["teacher"], b["teacher"])


def test_cancel_writes_a_checkpoint_with_the_teacher(tmp_path, blob_manifest):
    with pytest.raises(CancelledError, match="resume"):
        train(_config("copy-paste-teacher", iterations=50, fraction=0.0), blob_manifest, tmp_path / "run",
              cancel=cancel_after(2))
    path, payload = find_latest_checkpoint(tmp_path / "run")
    assert payload["iteration"] == 2 and payload["optimizer"] is not None and payload["teacher"] is not None
    load_model(path)


def test_a_tiny_2d_multiclass_run_in_both_copy_paste_modes(tmp_path):
    rng = np.random.default_rng(2)
    data, labeled, unlabeled = tmp_path / "data", [], []
    x, y = np.meshgrid(np.arange(40), np.arange(36), indexing="ij")
    for i in range(4):
        label = np.zeros((40, 36, 5), np.uint8)
        for k in range(5):
            cx, cy = rng.uniform(12, 28), rng.uniform(12, 24)
            label[:, :, k][((x - cx) / 9) ** 2 + ((y - cy) / 8) ** 2 <= 1] = 1
            label[:, :, k][((x - cx) / 4) ** 2 + ((y - cy) / 4) ** 2 <= 1] = 2
        image = (100 + 40 * label + rng.normal(0, 8, label.shape)).astype(np.float32)
        write_volume(data / f"c{i}.nrrd", image, (1.0, 1.0, 6.0))
        if i < 2:
            write_volume(data / f"c{i}_label.nrrd", label, (1.0, 1.0, 6.0))
            labeled.append({"image": f"c{i}.nrrd", "label": f"c{i}_label.nrrd"})
        else:
            unlabeled.append(f"c{i}.nrrd")
    manifest = data / "manifest.json"
    manifest.write_text(json.dumps({"labeled": labeled, "unlabeled": unlabeled}))
    for mode in ("copy-paste", "copy-paste-teacher"):
        config = _config(mode, iterations=4, fraction=0.5)
        config.network.dims, config.network.pools, config.network.num_classes = 2, (4, 4, 0), 2
        config.train.patch = (32, 32, 2)
        events: list = []
        train(config, manifest, tmp_path / mode, progress=events.append)
        assert events[-1]["event"] == "done"
        assert all(np.isfinite(list(e["losses"].values())).all() for e in events if e["event"] == "progress")
        final = load_checkpoint(tmp_path / mode / "checkpoints" / "iter_000004.pt")
        assert (final.get("teacher") is not None) == (mode == "copy-paste-teacher")
        model, cfg = load_model(tmp_path / mode / "model.pt")
        assert cfg.network.dims == 2 and cfg.network.num_classes == 2


def test_the_teacher_mode_refuses_a_manifest_without_unlabeled_scans(tmp_path):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=0)
    with pytest.raises(DTCError, match="--mode copy-paste"):
        train(_config("copy-paste-teacher"), manifest, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, message", [
    ({"labeled_batch": 3, "unlabeled_batch": 3}, "must be even"),
    ({"unlabeled_batch": 4}, "must equal labeled_batch"),
])
def test_copy_paste_batches_are_checked(change, message):
    config = _config("copy-paste-teacher")
    for k, v in change.items():
        setattr(config.train, k, v)
    with pytest.raises(DTCError, match=message):
        config.validate()


def test_the_stage_one_fraction_is_checked():
    with pytest.raises(DTCError, match="cp_stage1_fraction"):
        DTCConfig.from_dict({"recipe": {"mode": "copy-paste-teacher", "cp_stage1_fraction": 1.5}})


def test_two_stage_iterations_fill_the_time_left():
    # 100 s left, half the run stage 1 at 1 s a step, stage 2 at 3 s: T = 50 (25 + 25 x 3 = 100); T = 51 -> 101 s.
    half = lambda total: round(0.5 * total)  # noqa: E731
    assert two_stage_iterations(100.0, 0, half, 1.0, 3.0) == 50
    # already 10 steps done, stage 2 started at 10 (frozen): 30 more stage-2 steps fit
    assert two_stage_iterations(90.0, 10, lambda total: 10, 1.0, 3.0) == 40
    # over budget: one more step
    assert two_stage_iterations(-5.0, 20, half, 1.0, 3.0) == 21


def test_the_two_stage_budget_times_each_stage_and_refits_once_in_stage_two(monkeypatch):
    from DTCCore.training import schedule, two_stage_budget

    clock = {"now": 0.0}
    monkeypatch.setattr(two_stage_budget.time, "monotonic", lambda: clock["now"])
    config = _config("copy-paste-teacher", iterations=6000, fraction=0.1, time_limit_minutes=60.0)
    config.train.precise_bn_batches = 0
    config.train.lr_steps = (2500, 5000)
    said: list = []
    from DTCCore.training.copypaste_step import stage2_start

    state = {"stage2": False}
    budget = TwoStageBudget(config, 0.0, 0, agree=lambda v: v, say=said.append, in_stage2=lambda: state["stage2"])
    iteration = 0
    while iteration < config.train.iterations and len(said) < 2:
        state["stage2"] = state["stage2"] or iteration >= stage2_start(config)
        clock["now"] += 3.0 if state["stage2"] else 1.0  # stage-2 steps cost 3 s, stage-1 steps 1 s
        iteration += 1
        budget.after_step(iteration)
        if len(said) == 1 and iteration == schedule.CALIBRATION_SKIP + schedule.CALIBRATION_ITERATIONS:
            # first fit at 15 steps / 15 s, stage 1 timed at 1 s, stage 2 guessed at STAGE2_COST_RATIO s:
            # 3600 - 15 - 5 s left = 0.1 T x 1 + 0.9 T x ratio (minus the 15 steps done in stage 1)
            expected = two_stage_iterations(3580.0, 15, lambda total: round(0.1 * total), 1.0, STAGE2_COST_RATIO)
            assert config.train.iterations == expected and not budget.active
    assert len(said) == 2 and "re-timed in stage 2" in said[1]
    # re-timed at 15 stage-2 steps (3 s each): the rest of the hour at 3 s a step
    assert config.train.iterations == iteration + int((3600.0 - clock["now"] - 5.0) // 3.0)


def test_a_time_limited_teacher_run_fits_both_stages_and_a_resume_keeps_them(tmp_path, blob_manifest, monkeypatch):
    calls = []

    def budget(left_s, done, stage2_from, stage1_s, stage2_s):
        calls.append((done, stage2_from(20)))
        return 20

    monkeypatch.setattr("DTCCore.training.two_stage_budget.two_stage_iterations", budget)
    config = _config("copy-paste-teacher", iterations=6000, fraction=0.5, time_limit_minutes=5.0,
                     checkpoint_every=10_000)
    config.train.lr_steps = (2500, 5000)
    run = tmp_path / "run"
    model = train(config, blob_manifest, run)
    fitted = load_checkpoint(model)
    assert calls[0] == (15, 10) and fitted["iteration"] == 20 and fitted["config"].train.iterations == 20
    assert fitted["config"].train.lr_steps == (round(2500 * 20 / 6000), round(5000 * 20 / 6000))
    assert len(calls) == 1  # the stage-2 re-time (at 15 + 15 = 30) would come after 35 % of the run: skipped
    messages = [json.loads(line)["text"] for line in (run / "log.jsonl").read_text().splitlines()
                if json.loads(line)["event"] == "message"]
    assert any("stage 2 from 15" in m for m in messages)  # stage 1 already ran 15 of its 10 steps: switch now
    teachers = {it: load_checkpoint(p).get("teacher") is not None for it, p in list_checkpoints(run)}
    assert teachers == {20: True}
    # a resume with another limit keeps the fitted run (and its teacher): nothing left to do
    again = _config("copy-paste-teacher", iterations=50, fraction=0.5, time_limit_minutes=9.0)
    assert load_checkpoint(train(again, blob_manifest, run, resume=True))["iteration"] == 20


class _FixedTeacher(torch.nn.Module):
    """A stand-in teacher whose segmentation is the label map it was given (softmax logits, 3 classes + background),
    and which draws random numbers as dropout would."""

    def __init__(self, prediction: torch.Tensor):
        super().__init__()
        self.prediction = prediction

    def forward(self, image):
        torch.rand(7)  # dropout's draw
        logits = 10.0 * torch.nn.functional.one_hot(self.prediction, 4).movedim(-1, 1).float()
        return logits, torch.zeros_like(logits[:, 1:])


def test_the_start_of_stage_two_names_the_classes_the_teacher_does_not_find_yet():
    """ACDC's failure (bench/results/copy-paste-teacher-acdc.md, ACDC Stage 12): a teacher that finds no right ventricle
    would teach that it is absent. The check names the labeled crops' classes missing from the teacher's
    pseudo-labels (oracle: set difference of the label maps), and leaves the random state as it was."""
    from DTCCore.training.copypaste_step import missing_classes_message, unlearned_classes

    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.integers(0, 4, (2, 12, 10, 3)))  # classes 1, 2, 3 present
    prediction = label.clone()
    prediction[prediction == 1] = 0  # the teacher misses class 1 ...
    prediction[prediction == 3] = 2  # ... and class 3
    image = torch.zeros(2, 1, 12, 10, 3)
    oracle = sorted(set(np.unique(label.numpy())) - set(np.unique(prediction.numpy())) - {0})
    state = torch.get_rng_state()
    missing = unlearned_classes(_FixedTeacher(prediction), image, label, 2, torch.device("cpu"), None)
    assert missing == oracle == [1, 3]
    assert torch.equal(torch.get_rng_state(), state)
    text = missing_classes_message(99, missing)
    assert text.startswith("iteration 100: the teacher starts") and "class 1, 3" in text and "them absent" in text
    assert unlearned_classes(_FixedTeacher(label), image, label, 2, torch.device("cpu"), None) == []  # finds all


def _gate_run(gate: bool, fraction: float, prediction: torch.Tensor):
    """A stand-in run for copypaste_step.start_stage2: 1000 iterations, 3 classes in 2-D, a student whose
    segmentation is ``prediction`` (change ``run.model.prediction`` to teach it), its log in ``run.said``."""
    from types import SimpleNamespace

    config = DTCConfig()
    config.network.num_classes, config.network.dims = 3, 2
    config.train.iterations, config.recipe.mode = 1000, "copy-paste-teacher"
    config.recipe.cp_stage1_fraction, config.recipe.cp_stage2_gate = fraction, gate
    said: list[str] = []
    return SimpleNamespace(model=_FixedTeacher(prediction), teacher=None, config=config, device=torch.device("cpu"),
                           iteration=0, stage2_clock=None, ctx=SimpleNamespace(any=bool),
                           log=SimpleNamespace(message=said.append), said=said)


def _steps_until_teacher(run, image, label, iterations) -> int | None:
    """Call start_stage2 at each of ``iterations`` (as the trainer does past the fraction, until a teacher exists);
    the iteration it made the teacher at, or None."""
    from DTCCore.training.copypaste_step import start_stage2

    for i in iterations:
        run.iteration = i
        start_stage2(run, image, label, None)
        if run.teacher is not None:
            return i
    return None


def test_the_stage_two_gate_waits_for_every_class_on_its_grid_and_until_its_last_iteration():
    """recipe.cp_stage2_gate: the teacher starts at the first check (the fraction, then every STAGE2_GATE_EVERY
    iterations) where the model finds every class of its labeled crops, at the latest at STAGE2_GATE_LAST of the run;
    without the gate it starts at the fraction whatever the model finds (and says what it misses)."""
    from DTCCore.config import STAGE2_GATE_EVERY, STAGE2_GATE_LAST

    label = torch.from_numpy(np.random.default_rng(1).integers(0, 4, (2, 12, 10, 3)))
    image = torch.zeros(2, 1, 12, 10, 3)
    blind = label.clone()
    blind[blind == 2] = 0  # the model misses class 2
    first = 250  # round(0.25 * 1000)
    run = _gate_run(False, 0.25, blind)
    assert _steps_until_teacher(run, image, label, [first]) == first  # no gate: the fraction
    assert len(run.said) == 1 and "does not yet find class 2" in run.said[0] and "teacher starts" in run.said[0]

    run = _gate_run(True, 0.25, blind)
    assert _steps_until_teacher(run, image, label, range(first, first + STAGE2_GATE_EVERY + 7)) is None
    assert len(run.said) == 1 and "teacher waits" in run.said[0] and "class 2" in run.said[0]  # said once
    run.model.prediction = label  # it learns class 2 between two checks:
    start = first + 2 * STAGE2_GATE_EVERY
    assert _steps_until_teacher(run, image, label, range(first + STAGE2_GATE_EVERY + 7, 1000)) == start
    assert "finds every class" in run.said[-1]
    assert torch.equal(run.teacher.prediction, label)  # the teacher is the student of that step

    last = int(round(STAGE2_GATE_LAST * 1000))
    run = _gate_run(True, 0.23, blind)  # a grid from 230 that misses 800: the last iteration starts it anyway
    assert (last - 230) % STAGE2_GATE_EVERY
    assert _steps_until_teacher(run, image, label, range(230, 1000)) == last
    assert "teacher starts" in run.said[-1] and "class 2" in run.said[-1]

    run = _gate_run(True, 0.25, label)  # a model that finds every class starts the teacher at the fraction
    assert _steps_until_teacher(run, image, label, [first]) == first and run.said == []


def test_every_process_is_asked_at_each_check_and_one_that_misses_a_class_keeps_the_teacher_waiting():
    """The gate's ctx.any is a collective: every process calls it at each check, also one that finds every class
    itself (a call skipped on one process would hang the others); another process's miss keeps the teacher waiting
    until the gate's last iteration, and the log says so. A step redone (fp32 after a bf16 overflow) asks no more."""
    from DTCCore.config import STAGE2_GATE_EVERY, STAGE2_GATE_LAST
    from DTCCore.training.copypaste_step import start_stage2

    label = torch.from_numpy(np.random.default_rng(1).integers(0, 4, (2, 12, 10, 3)))
    image = torch.zeros(2, 1, 12, 10, 3)
    run = _gate_run(True, 0.25, label)  # this process finds every class
    asked: list[int] = []

    def another_process_misses(flag: bool) -> bool:
        asked.append(run.iteration)
        return True

    run.ctx.any = another_process_misses
    run.iteration = 250
    start_stage2(run, image, label, None)
    start_stage2(run, image, label, None)  # the same step redone
    assert asked == [250] and run.teacher is None and len(run.said) == 1
    assert "teacher waits" in run.said[0] and "every class" in run.said[0]
    last = int(round(STAGE2_GATE_LAST * 1000))
    assert _steps_until_teacher(run, image, label, range(251, 1000)) == last
    assert asked == list(range(250, last, STAGE2_GATE_EVERY))
    assert "the gate's last iteration" in run.said[-1]


def test_the_stage_two_gate_is_refused_with_a_time_limit():
    config = _config("copy-paste-teacher", iterations=10, time_limit_minutes=5.0)
    config.recipe.cp_stage2_gate = True
    with pytest.raises(DTCError, match="--stage2-gate cannot be combined with --time-limit.*--iterations"):
        config.validate()
    config.train.time_limit_minutes = None
    config.validate()


def test_the_stage_two_gate_flag_sets_the_recipe_and_is_off_by_default():
    from DTCCore.cli import build_parser
    from DTCCore.cli.train import build_config

    parser = build_parser()
    base = ["train", "m.json", "-o", "run", "--mode", "copy-paste-teacher"]
    assert build_config(parser.parse_args([*base, "--stage2-gate"])).recipe.cp_stage2_gate is True
    assert build_config(parser.parse_args(base)).recipe.cp_stage2_gate is False
    older = DTCConfig().to_dict()  # a run saved before the gate existed: its config has no such key
    del older["recipe"]["cp_stage2_gate"]
    assert DTCConfig.from_dict(older).recipe.cp_stage2_gate is False
