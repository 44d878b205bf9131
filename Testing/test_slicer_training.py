"""Fine-tune from the panel's logic through the real process runner (a `python -m DTCCore train` child)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import slicer

from slicer_harness.fixtures import dtc_module, slicer_scene, tiny_model  # noqa: F401

# isort: split
# DTCSegmentationLib is importable once slicer_harness.fixtures has put the module folder on sys.path
from DTCCore.errors import DTCError  # noqa: E402
from DTCSegmentationLib import models
from DTCSegmentationLib.curves import LossCurve  # noqa: E402
from DTCSegmentationLib.jobs import trainjob as training  # noqa: E402  (importable once dtc_module put it on sys.path)

SHAPE_KJI = (18, 20, 22)


def _volume(name, seed, with_blob=True, spacing=(0.9, 1.1, 1.6)):
    rng = np.random.default_rng(seed)
    kji = rng.normal(100, 10, SHAPE_KJI).astype(np.float32)
    mask = np.zeros(SHAPE_KJI, np.uint8)
    mask[5:13, 6:14, 7:16] = 1
    kji += 60 * mask if with_blob else 0
    ijk_to_ras = np.diag([*spacing, 1.0])
    ijk_to_ras[:3, 3] = [4.0, -3.0, 11.0]
    return slicer.util.addVolumeFromArray(kji, ijk_to_ras, name), mask


def _poll_until(job, predicate, timeout_s):
    events, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events += job.poll()
        if predicate(events):
            return events
        time.sleep(0.05)
    raise AssertionError(f"timed out; events so far: {events[-5:]}, stderr: {list(job._stderr)[-5:]}")


def _request(logic, p, resume=None):
    request = logic.trainingRequest(p, resume)
    request.config["train"].update(num_workers=0, log_every=1, checkpoint_every=1000, deterministic=True)
    return request


def _add_labeled_example(scene, logic, dataset_folder, spacing=(0.9, 1.1, 1.6)) -> None:
    """One labeled case ("Left atrium", red) added to the dataset folder through the logic."""
    volume, mask = _volume("labeled case", 0, spacing=spacing)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    sid = seg.GetSegmentation().AddEmptySegment("", "Left atrium", [1, 0, 0])
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg, sid, volume)
    logic.addLabeledExample(dataset_folder, volume, seg)


def test_finetune_cancel_resume_register(slicer_scene, dtc_module, tiny_model, tmp_path):
    logic = dtc_module.DTCSegmentationLogic()
    p = logic.getParameterNode()
    p.datasetFolder, p.modelsFolder = tmp_path / "ds", tmp_path / "models"
    p.modelPath, p.startFrom = str(tiny_model), "current model"
    p.patchX = p.patchY = p.patchZ = 16
    p.labeledBatch, p.unlabeledBatch, p.iterations, p.timeLimitMinutes = 1, 1, 10_000, 0
    p.mode = "dtc"  # the paper's recipe on 1 labeled + 1 unlabeled crop (auto would pick a mode by length)
    _add_labeled_example(slicer_scene, logic, p.datasetFolder)
    logic.addUnlabeledVolumes(p.datasetFolder, [_volume("unlabeled case", 1)[0]])

    p.augment, p.nnunetAugment = "no-mirror", True  # the panel's choices reach the trained model
    request = _request(logic, p)
    assert request.init_from == tiny_model and request.config["network"]["base_filters"] == 2
    job = training.TrainingJob(request)
    job.start()
    curve = LossCurve()
    events = _poll_until(job, lambda ev: sum(e["event"] == "progress" for e in ev) >= 2, 90)
    for e in events:
        if e["event"] == "progress":
            curve.add(e)
    first = next(e for e in events if e["event"] == "progress")
    assert first["total"] == 10_000 and np.isfinite(first["losses"]["total"])
    assert curve.rows() >= 2 and curve.table.GetTable().GetValue(0, 0).ToDouble() == first["iteration"]

    job.cancel()
    events = _poll_until(job, lambda ev: any(e["event"].startswith("job-") for e in ev), 60)
    assert events[-1]["event"] == "job-cancelled", (events[-1], list(job._stderr)[-5:])
    assert job.state == "cancelled" and job.runner.returncode == 3
    checkpoint = job.checkpoint
    assert checkpoint is not None and checkpoint.exists() and checkpoint.parent.name == "checkpoints"
    assert job.runner.process.poll() is not None
    stopped_at = int(checkpoint.stem.split("_")[1])
    assert 0 < stopped_at < 10_000

    p.iterations = stopped_at + 2  # resume and finish two more iterations
    resumed = training.TrainingJob(_request(logic, p, resume=request.run_dir))
    resumed.start()
    events = _poll_until(resumed, lambda ev: any(e["event"].startswith("job-") for e in ev), 90)
    assert events[-1]["event"] == "job-done", (events[-1], resumed.error)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[0]["iteration"] > stopped_at and progress[-1]["iteration"] == stopped_at + 2
    listed = models.list_models(p.modelsFolder)
    assert [m.path for m in listed if not m.bundled] == [request.run_dir / "model.pt"]
    from DTCCore.model.checkpoint import load_model

    trained = load_model(request.run_dir / "model.pt")[1].train
    assert trained.augment == "no-mirror" and trained.nnunet_augment is True
    # the new model's label table comes from the training segmentation (segment name and colour)
    from DTCCore.data.labels import read_table

    (entry,) = read_table(request.run_dir / "model.pt", {}, 1)
    assert entry["name"] == "Left atrium" and entry["color"] == [1.0, 0.0, 0.0]


def test_failed_job_reports_the_error_line(tmp_path):
    request = training.TrainingRequest(tmp_path / "missing.json", tmp_path / "run", {"train": {"iterations": 1}})
    job = training.TrainingJob(request)
    job.start()
    events = _poll_until(job, lambda ev: any(e["event"].startswith("job-") for e in ev), 60)
    assert events[-1]["event"] == "job-failed" and job.runner.returncode == 2
    assert "missing.json" in job.error and "\n" not in job.error


def test_finetune_length_and_patch_come_from_the_panel_and_the_model(slicer_scene, dtc_module, tiny_model, tmp_path):
    # "Train for 10 min" reaches the trainer as a time limit (0 = off: the iterations count); a fine-tune keeps
    # the model's patch and grid (its plan), a training from scratch takes the panel's patch.
    logic = dtc_module.DTCSegmentationLogic()
    p = logic.getParameterNode()
    p.datasetFolder, p.modelsFolder = tmp_path / "ds", tmp_path / "models"
    p.modelPath, p.startFrom = str(tiny_model), "current model"
    p.patchX, p.patchY, p.patchZ = 64, 64, 48
    _add_labeled_example(slicer_scene, logic, p.datasetFolder)

    assert p.timeLimitMinutes == 10  # the panel's default (the annotation-loop study's fine-tune, with margin)
    request = logic.trainingRequest(p)
    assert request.config["train"]["time_limit_minutes"] == 10.0
    assert request.config["train"]["patch"] == [16, 16, 16]  # the tiny model's own patch
    p.timeLimitMinutes = 0
    assert logic.trainingRequest(p).config["train"]["time_limit_minutes"] is None
    assert "--pools" not in logic.trainingRequest(p).args()  # a fine-tune keeps its model's network
    train_cfg = logic.trainingRequest(p).config["train"]  # augmentation: the model's own unless chosen
    assert train_cfg["augment"] == "mirror" and train_cfg["nnunet_augment"] is False
    p.augment, p.nnunetAugment = "no-mirror", True
    train_cfg = logic.trainingRequest(p).config["train"]
    assert train_cfg["augment"] == "no-mirror" and train_cfg["nnunet_augment"] is True
    p.augment, p.nnunetAugment = "model's own", False
    p.startFrom = "scratch"
    scratch = logic.trainingRequest(p)  # the scan is 22 x 20 x 18 voxels: each axis cut to the next multiple of 16
    assert scratch.config["train"]["patch"] == [32, 32, 32]
    assert scratch.note == ("network halves x/y/z 4/4/4 times, patch 32 x 32 x 32 "
                            "(the largest scan is 22 x 20 x 18 voxels)")
    # near-isotropic scans (0.9 x 1.1 x 1.6 mm): the paper's network, pooled 4 times on every axis
    assert scratch.config["network"]["pools"] == [4, 4, 4] and "--pools" not in scratch.args()
    p.patchX, p.patchY, p.patchZ = 16, 32, 16  # already within the scans: kept as asked
    scratch = logic.trainingRequest(p)
    assert scratch.config["train"]["patch"] == [16, 32, 16] and scratch.note == "network halves x/y/z 4/4/4 times"


def test_panel_iterations_keep_the_recipes_schedule_proportions(slicer_scene, dtc_module, tmp_path):
    # A 1000-iteration run (the panel's default length) keeps the recipe's proportions: lr x0.1 at 5/12 and
    # 10/12, lambda full at the end, from scratch (DTCConfig: 6000, 2500/5000, 150 x 40) and when fine-tuning
    # the bundled model (scaled from its own schedule). Before, the request kept the 6000-iteration steps
    # (never reached) and ramp (lambda 0.03 at iteration 1000).
    from DTCCore.config import DTCConfig
    from DTCCore.model.losses import ramp_weight
    from DTCCore.training.schedule import fit_schedule, lr_at

    logic = dtc_module.DTCSegmentationLogic()
    p = logic.getParameterNode()
    p.datasetFolder, p.modelsFolder = tmp_path / "ds", tmp_path / "models"
    p.patchX, p.patchY, p.patchZ = 16, 16, 16
    _add_labeled_example(slicer_scene, logic, p.datasetFolder)
    p.iterations, p.timeLimitMinutes, p.startFrom = 1000, 0, "scratch"
    config = DTCConfig.from_dict(logic.trainingRequest(p).config)  # what the trainer runs (defaults filled in)
    assert config.train.iterations == 1000 and not config.train.schedule_fitted
    assert config.train.lr_steps == (417, 833) and config.recipe.ramp_unit == 25
    assert lr_at(999, config) == pytest.approx(config.train.lr * 0.01) and ramp_weight(999, config.recipe) > 0.99

    p.modelPath, p.startFrom = "", "current model"  # the bundled model
    bundled = logic.modelInfo(str(models.bundled_model_path()))["config"]
    own = bundled["train"]["iterations"]
    config = DTCConfig.from_dict(logic.trainingRequest(p, initInfo={"config": bundled}).config)
    assert config.train.iterations == 1000 and own != 1000
    assert config.train.lr_steps == tuple(round(s * 1000 / own) for s in bundled["train"]["lr_steps"])
    assert config.recipe.ramp_unit == round(bundled["recipe"]["ramp_unit"] * 1000 / own)
    assert lr_at(999, config) == pytest.approx(p.learningRate * 0.01) and ramp_weight(999, config.recipe) > 0.98

    # With the time limit on (the panel's default) the budget fits this schedule to what fits: 700 iterations
    # here end decayed and at full weight too (before: steps at 1750/3500, lambda 0.027).
    p.timeLimitMinutes = 20
    timed = DTCConfig.from_dict(logic.trainingRequest(p, initInfo={"config": bundled}).config)
    assert not timed.train.schedule_fitted
    fit_schedule(timed, 700)  # what schedule.TimeBudget does once it has timed the first iterations
    assert timed.train.lr_steps[-1] < 700 and ramp_weight(699, timed.recipe) > 0.98
    # A resume keeps its run's saved schedule.
    resumed = logic.trainingRequest(p, resumeRunDir=tmp_path / "models" / "run").config
    assert "lr_steps" not in resumed["train"] and "ramp_unit" not in resumed["recipe"]
    assert "cp_stage1_fraction" not in resumed["recipe"] and "cp_lr_in_stage2" not in resumed["recipe"]

    # A fine-tune of a model trained with another copy-paste-teacher recipe gets the one for its classes.
    other = json.loads(json.dumps(bundled))
    other.setdefault("recipe", {}).update({"cp_stage1_fraction": 0.25, "cp_lr_in_stage2": True})
    tuned = DTCConfig.from_dict(logic.trainingRequest(p, initInfo={"config": other}).config)
    assert tuned.recipe.cp_stage1_fraction is None and tuned.recipe.cp_lr_in_stage2 is None


def test_scratch_training_plans_the_network_from_the_spacing_and_refuses_a_patch_that_does_not_fit(
        slicer_scene, dtc_module, tmp_path):
    logic = dtc_module.DTCSegmentationLogic()
    p = logic.getParameterNode()
    p.modelsFolder, p.startFrom = tmp_path / "models", "scratch"
    p.datasetFolder = tmp_path / "thick"
    _add_labeled_example(slicer_scene, logic, p.datasetFolder, spacing=(0.9, 0.9, 2.5))  # slices 2.8x the pixels
    p.patchX, p.patchY, p.patchZ = 16, 16, 8  # 8 slices: too thin for the paper's network, fine for this one
    request = logic.trainingRequest(p)
    assert request.config["network"]["pools"] == [4, 4, 3] and request.config["train"]["patch"] == [16, 16, 8]
    assert request.config["network"]["dims"] == 3  # not more than 3x: the 3-D network, z pooled 3 times
    p.patchX, p.patchY, p.patchZ = 112, 112, 80  # the panel's default: z cut to 24 (18 slices, a multiple of 8)
    assert logic.trainingRequest(p).config["train"]["patch"] == [32, 32, 24]
    p.patchZ = 10
    try:
        logic.trainingRequest(p)
    except DTCError as e:
        message = str(e)
    else:
        raise AssertionError("a patch depth of 10 was accepted for a network that halves z three times")
    assert "0.9 x 0.9 x 2.5 mm" in message and "Patch size" in message and message.endswith("z 10: use 8 or 16")
    assert not list((tmp_path / "models").glob("*")) and not (p.datasetFolder / "requested_config.json").exists()

    p.datasetFolder = tmp_path / "cine"  # cardiac-cine-like: slices 5.6x the pixels -> the 2-D plan
    _add_labeled_example(slicer_scene, logic, p.datasetFolder, spacing=(0.9, 0.9, 5.0))
    cine = logic.trainingRequest(p)  # patch depth 10 asked: a 2-D network crops at most 4 slices
    assert cine.config["network"]["dims"] == 2 and cine.config["network"]["pools"] == [4, 4, 0]
    assert cine.config["train"]["patch"] == [32, 32, 4]
    assert cine.note == "2-D network (slices 5 mm apart, pixels 0.9 mm), 4 slices a crop"

    p.datasetFolder = tmp_path / "iso"
    _add_labeled_example(slicer_scene, logic, p.datasetFolder)
    p.patchZ = 8  # the same depth does not fit the paper's network, which the near-isotropic scans get
    try:
        logic.trainingRequest(p)
    except DTCError as e:
        assert str(e).endswith("z 8: use 16")
    else:
        raise AssertionError("a patch depth of 8 was accepted for the paper's network")

