"""Smoke test of bench/studies/train_acdc.py on a synthetic ACDC-like folder (3 nested classes), --tiny scale."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from conftest import REPO, bench_module, write_volume

SHAPE = (40, 36, 8)  # in-plane x slices, thick-slice like ACDC


def _acdc_like(root: Path, n: int = 7) -> Path:
    for i in range(n):
        noise = ndimage.gaussian_filter(np.random.default_rng(i).random(SHAPE), sigma=(4, 4, 1))
        label = np.zeros(SHAPE, np.uint8)
        for c, q in ((1, 0.6), (2, 0.75), (3, 0.88)):
            label[noise > np.quantile(noise, q)] = c
        image = 60.0 * label + np.random.default_rng(50 + i).normal(0, 5, SHAPE)
        write_volume(root / f"patient{i:03d}" / "image.nrrd", image.astype(np.float32))
        write_volume(root / f"patient{i:03d}" / "label.nrrd", label)
    (root / "train.list").write_text("".join(f"patient{i:03d}\n" for i in range(4)))
    (root / "test.list").write_text("".join(f"patient{i:03d}\n" for i in range(4, 6)))
    (root / "val.list").write_text("".join(f"patient{i:03d}\n" for i in range(6, n)))
    return root


def test_train_acdc_tiny_reports_every_class(tmp_path, capsys):
    train_acdc = bench_module("train_acdc")
    data = _acdc_like(tmp_path / "acdc")
    result = train_acdc.main(["--data", str(data), "--out", str(tmp_path / "runs"), "--mode", "dtc", "--tiny",
                              "--nnunet-augment", "--pools", "4", "4", "3", "--json", str(tmp_path / "dtc.json")])
    manifest = json.loads((tmp_path / "runs" / "manifest_dtc.json").read_text())
    assert len(manifest["labeled"]) == 2 and len(manifest["unlabeled"]) == 2
    assert result["iterations"] == 3 and result["test"]["cases"] == 2
    rows = result["test"]["rows"]
    assert sorted((r["case"], r["class"]) for r in rows) == [(f"patient{i:03d}", c) for i in (4, 5) for c in (1, 2, 3)]
    means = result["test"]["means"]
    assert means["mean"]["dice"] == np.mean([means[c]["dice"] for c in (1, 2, 3)])
    # post-processing chosen on val.list: largest component per class only when it raises the val Dice
    val = result["validation"]
    assert val["cases"] == ["patient006"] and val["largest_component"] == (val["dice_lcc"] > val["dice_raw"])
    assert result["test"] == (result["test_raw"] if not val["largest_component"] else result["test"])
    assert result["test_raw"]["cases"] == 2 and len(result["test_raw"]["rows"]) == 6
    rescored = train_acdc.main(["--data", str(data), "--assess", str(tmp_path / "dtc.json")])
    # inference is deterministic (assert_equal: a NaN distance, for an empty class, equals NaN)
    np.testing.assert_equal(rescored["test_raw"]["means"], result["test_raw"]["means"])
    assert json.loads((tmp_path / "dtc.json").read_text())["validation"] == rescored["validation"]
    _check_mirror_assessment(train_acdc, data, tmp_path)
    text = train_acdc.main(["--table", str(tmp_path / "dtc.json")])
    assert ("largest component per class" in text) == val["largest_component"]
    assert result["config"]["train"]["nnunet_augment"] is True and "nnU-Net scaling/intensity" in text
    assert list(result["config"]["network"]["pools"]) == [4, 4, 3] and "slice axis pooled 3x (patch 32x32x16)" in text
    assert "| LV cavity |" in text and "**mean**" in text and text.count("\n") == 5  # header, rule, 4 rows

    # a second stage from the first one's weights: a new run folder, the table counts both stages
    second = train_acdc.main(["--data", str(data), "--out", str(tmp_path / "runs2"), "--mode", "dtc", "--tiny",
                              "--nnunet-augment", "--pools", "4", "4", "3", "--no-ramp",
                              "--continue-from", str(tmp_path / "dtc.json"), "--json", str(tmp_path / "dtc2.json")])
    assert second["stages"] == [{"model": result["model"], "mode": "dtc", "iterations": 3,
                                 "train_seconds": result["train_seconds"]}]
    log = (tmp_path / "runs2" / "run_dtc" / "log.jsonl").read_text()
    assert f"fine-tuning from {result['model']}" in log
    # --no-ramp: the consistency weight is at its maximum from the first logged iteration (stage 1 ramps from ~0)
    lambdas = [json.loads(line)["lambda"] for line in log.splitlines() if '"progress"' in line]
    assert lambdas and all(w == second["config"]["recipe"]["consistency"] for w in lambdas)
    first_log = (tmp_path / "runs" / "run_dtc" / "log.jsonl").read_text()
    assert [json.loads(line)["lambda"] for line in first_log.splitlines() if '"progress"' in line][0] < 0.01
    table2 = train_acdc.main(["--table", str(tmp_path / "dtc2.json")])
    assert ", 6 it, " in table2 and " in 2 stages" in table2

    # two results: the table ends with their patient-by-patient comparison (naive per-patient means here)
    both = train_acdc.main(["--table", str(tmp_path / "dtc2.json"), str(tmp_path / "dtc.json")])
    def patient_means(r):
        return {case: np.mean([row["dice"] for row in r["test"]["rows"] if row["case"] == case])
                for case in ("patient004", "patient005")}
    first, later = patient_means(result), patient_means(second)
    diff = [later[c] - first[c] for c in ("patient004", "patient005")]
    line = both.splitlines()[-1]
    assert line.startswith("Paired over the 2 test patients") and "DTC (6 it) minus DTC (3 it)" in line
    assert f"= {100 * np.mean(diff):+.2f} points" in line
    assert f"higher on {sum(d > 0 for d in diff)}, lower on {sum(d < 0 for d in diff)}" in line
    one_case = dict(result, test=dict(result["test"], rows=[r for r in rows if r["case"] == "patient004"]))
    (tmp_path / "one.json").write_text(json.dumps(one_case))
    with pytest.raises(SystemExit, match="different test patients"):
        train_acdc.main(["--table", str(tmp_path / "one.json"), str(tmp_path / "dtc.json")])


def _check_mirror_assessment(train_acdc, data: Path, tmp_path: Path) -> None:
    """--assess --mirror --json: scores of test-time augmentation (here the no-mirror model's four turns)
    written to a new file; the scored result is untouched. Oracle: DTCCore's predict_volume with
    infer.tta on, scored with MedPy's dc directly."""
    from medpy.metric.binary import dc

    from DTCCore.data.images import read_image, read_label
    from DTCCore.inference.predict import predict_volume
    from DTCCore.model.checkpoint import load_model

    before = (tmp_path / "dtc.json").read_text()
    tta = train_acdc.main(["--data", str(data), "--assess", str(tmp_path / "dtc.json"), "--mirror",
                           "--json", str(tmp_path / "tta.json")])
    assert (tmp_path / "dtc.json").read_text() == before and tta["test_time_augmentation"] is True
    written = json.loads((tmp_path / "tta.json").read_text())  # JSON: class keys as strings
    np.testing.assert_equal(written["test_raw"], json.loads(json.dumps(tta["test_raw"])))
    model, config = load_model(Path(tta["model"]))
    image, geometry = read_image(data / "patient004" / "image.nrrd")
    truth = read_label(data / "patient004" / "label.nrrd", geometry, image.shape, 3)
    config.infer.largest_component = False
    plain = predict_volume(model, image, config, spacing=geometry.spacing)
    config.infer.tta = True
    turned = predict_volume(model, image, config, spacing=geometry.spacing)
    assert np.abs(turned.probability - plain.probability).max() > 1e-4  # the turns changed the output
    for row in (r for r in tta["test_raw"]["rows"] if r["case"] == "patient004"):
        pred, ref = turned.label == row["class"], truth == row["class"]
        assert row["dice"] == pytest.approx(dc(pred, ref) if pred.any() or ref.any() else 1.0, abs=1e-9)
    assert "test-time turns/flips" in train_acdc.main(["--table", str(tmp_path / "tta.json")])
    pair = train_acdc.main(["--table", str(tmp_path / "tta.json"), str(tmp_path / "dtc.json")]).splitlines()[-1]
    assert "DTC (3 it, test-time turns/flips) minus DTC (3 it) = " in pair


def test_dtc_stage_fine_tunes_a_labeled_only_model_and_says_so(tmp_path):
    """Semi-supervised fine-tuning of a labeled-only model: a dtc stage may continue from a seg result (the
    table names the labeled-only stage); a seg stage may not continue from a dtc one."""
    train_acdc = bench_module("train_acdc")
    data = _acdc_like(tmp_path / "acdc")
    common = ["--data", str(data), "--tiny", "--no-assess"]
    seg = train_acdc.main(common + ["--out", str(tmp_path / "s"), "--mode", "seg",
                                    "--json", str(tmp_path / "seg.json")])
    dtc = train_acdc.main(common + ["--out", str(tmp_path / "d"), "--mode", "dtc", "--continue-from",
                                    str(tmp_path / "seg.json"), "--json", str(tmp_path / "dtc.json")])
    assert dtc["mode"] == "dtc" and [st["mode"] for st in dtc["stages"]] == ["seg"]
    assert f"fine-tuning from {seg['model']}" in (tmp_path / "d" / "run_dtc" / "log.jsonl").read_text()
    scored = train_acdc.main(["--data", str(data), "--assess", str(tmp_path / "dtc.json")])
    assert train_acdc._from_labeled_only(scored) == "stage 1 labeled-only"
    # records written before stages had modes: the mode of the next record that has one
    older = dict(scored, stages=[{"iterations": 5, "train_seconds": 1.0}] * 2 + scored["stages"])
    assert train_acdc._from_labeled_only(older) == "stages 1-3 labeled-only"
    assert "DTC (16 it, stages 1-3 labeled-only) minus" in train_acdc.paired(older, scored)
    text = train_acdc.main(["--table", str(tmp_path / "dtc.json")])
    assert ", 6 it, " in text and " in 2 stages (stage 1 labeled-only)" in text
    assert train_acdc._from_labeled_only(dict(scored, stages=[dict(st, mode="dtc") for st in scored["stages"]])) == ""
    with pytest.raises(SystemExit, match="only a dtc stage may continue from a seg one"):
        train_acdc.main(common + ["--out", str(tmp_path / "s2"), "--mode", "seg", "--continue-from",
                                  str(tmp_path / "dtc.json")])


def test_minutes_zero_runs_exact_iterations_with_the_fitted_schedule():
    train_acdc = bench_module("train_acdc")
    from argparse import Namespace

    def config(minutes, iterations):
        return train_acdc.make_config(Namespace(
            base_filters=8, pools=[4, 4, 3], mode="seg", patch=[128, 128, 8], iterations=iterations, minutes=minutes,
            augment="no-mirror", nnunet_augment=False, no_ramp=False, workers=0, device="cpu", seed=1,
            spacing=[1.5, 1.5, 1.0], tiny=False))

    timed = config(40.0, 6000)  # the time limit fits the schedule while the run goes: reference steps for now
    assert timed.train.time_limit_minutes == 40.0 and not timed.train.schedule_fitted
    assert tuple(timed.train.lr_steps) == (2500, 5000)  # reference: x0.1 at 2500 and 5000 of 6000
    exact = config(0, 1200)  # no limit: exactly 1200 iterations, steps at the same fractions 2500/6000, 5000/6000
    assert exact.train.time_limit_minutes is None and exact.train.iterations == 1200
    assert tuple(exact.train.lr_steps) == (500, 1000) and exact.train.schedule_fitted
    assert exact.recipe.ramp_unit == round(timed.recipe.ramp_unit * 1200 / 6000)


def test_device_acdc_script_ships_both_models_scored_back_here(tmp_path):
    """bench/gpu/device_acdc.sh as a CPU smoke run: both modes train, ship as fp16 parts with relative result
    JSONs, and, reassembled elsewhere, score with --assess and compare with --table."""
    data, out = _acdc_like(tmp_path / "acdc"), tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEVICE": "cpu", "EXTRA": "--tiny", "WORKERS": "0",
           "DATA": str(data), "OUT": str(out)}
    proc = subprocess.run(["bash", "bench/gpu/device_acdc.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    with tarfile.open(out / "results.tar.gz") as tar:
        assert {"./log_dtc.jsonl", "./log_seg.jsonl", "./device_acdc.log"} <= set(tar.getnames())
    landed = tmp_path / "landed"  # the files as they arrive on another machine
    landed.mkdir()
    train_acdc = bench_module("train_acdc")
    import torch

    from DTCCore.model.checkpoint import load_checkpoint

    for mode in ("dtc", "seg"):
        parts = sorted(out.glob(f"acdc_{mode}.pt.part-*"))
        assert parts and not (out / f"acdc_{mode}.pt").exists()
        (landed / f"acdc_{mode}.pt").write_bytes(b"".join(p.read_bytes() for p in parts))
        payload = load_checkpoint(landed / f"acdc_{mode}.pt")
        assert all(v.dtype == torch.float16 for v in payload["model"].values() if v.is_floating_point())
        assert payload["config"].recipe.mode == mode and payload["config"].train.nnunet_augment
        result = json.loads((out / f"acdc_{mode}.json").read_text())
        assert result["model"] == f"acdc_{mode}.pt" and "test" not in result  # --no-assess: not scored there
        (landed / f"acdc_{mode}.json").write_text(json.dumps(result))
        with pytest.raises(SystemExit, match="not scored"):
            train_acdc.main(["--table", str(landed / f"acdc_{mode}.json")])
        scored = train_acdc.main(["--data", str(data), "--assess", str(landed / f"acdc_{mode}.json")])
        assert scored["test"]["cases"] == 2 and len(scored["test_raw"]["rows"]) == 6
    text = train_acdc.main(["--table", str(landed / "acdc_dtc.json"), str(landed / "acdc_seg.json")])
    assert "DTC (3 it) minus labeled-only (3 it)" in text.splitlines()[-1]


def test_ship_fp16_falls_back_to_the_newest_checkpoint(tmp_path):
    """A run stopped by the device script's timeout has checkpoints but no model.pt: the newest one ships."""
    ship_fp16 = bench_module("ship_fp16")
    from DTCCore.config import DTCConfig
    from DTCCore.model.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
    from DTCCore.model.network import build_network

    config = DTCConfig()
    config.network.base_filters = 2
    model = build_network(config.network)
    for iteration in (500, 1000):
        save_checkpoint(checkpoint_path(tmp_path / "run", iteration), model, None, iteration, config, {})
    source, iteration = ship_fp16.ship(tmp_path / "run", tmp_path / "out" / "m.pt")
    assert (source, iteration) == ("iter_001000.pt", 1000)
    assert load_checkpoint(tmp_path / "out" / "m.pt")["extra"]["source"] == "iter_001000.pt"
    with pytest.raises(SystemExit, match="no model.pt and no checkpoint"):
        ship_fp16.ship(tmp_path / "empty", tmp_path / "out" / "n.pt")


def test_train_acdc_tiny_2d_plan(tmp_path):
    """--dims 2: the 2-D plan trains multi-class on the thick-slice set, scores every class, and the table says so."""
    train_acdc = bench_module("train_acdc")
    data = _acdc_like(tmp_path / "acdc")
    result = train_acdc.main(["--data", str(data), "--out", str(tmp_path / "runs"), "--mode", "dtc", "--tiny",
                              "--dims", "2", "--json", str(tmp_path / "dtc2.json")])
    network = result["config"]["network"]
    assert network["dims"] == 2 and list(network["pools"]) == [4, 4, 0]
    assert len(result["test"]["rows"]) == 6 and result["test"]["cases"] == 2
    text = train_acdc.main(["--table", str(tmp_path / "dtc2.json")])
    assert "2-D (patch 32x32x16, base 2)" in text and "slice axis pooled" not in text  # --tiny's patch and width


def test_copy_paste_modes_manifests_configs_and_names(tmp_path):
    """The copy-paste modes: unlabeled patients in the manifest exactly for dtc and copy-paste-teacher, the
    recipe's switches and BCP's ACDC stage-1 fraction in the config, their names in tables and paired lines, and
    no --continue-from across a copy-paste mode."""
    train_acdc = bench_module("train_acdc")
    from argparse import Namespace

    data = _acdc_like(tmp_path / "acdc", n=4)
    for mode in ("dtc", "seg", "copy-paste", "copy-paste-teacher"):
        manifest = json.loads(train_acdc.build_manifest(data, 1, 3, mode, tmp_path / "m").read_text())
        assert [Path(c["label"]).parent.name for c in manifest["labeled"]] == ["patient000"]
        expected = ["patient001", "patient002", "patient003"] if mode in ("dtc", "copy-paste-teacher") else []
        assert [Path(p).parent.name for p in manifest["unlabeled"]] == expected

    def config(mode, **switches):
        args = dict(base_filters=8, pools=[4, 4, 4], dims=2, mode=mode, patch=[128, 128, 4], iterations=400,
                    minutes=0, augment="no-mirror", nnunet_augment=False, no_ramp=False, workers=0, device="cpu",
                    seed=1, spacing=[1.5, 1.5, 1.0], tiny=False)
        return train_acdc.make_config(Namespace(**{**args, **switches}))

    teacher = config("copy-paste-teacher")
    assert teacher.recipe.cp_stage1_fraction == 0.25 and teacher.train.unlabeled_batch == 2  # BCP ACDC: 10000/40000
    assert teacher.recipe.cp_levelset and teacher.recipe.cp_consistency
    assert config("copy-paste-teacher", stage1_fraction=0.5, no_cp_consistency=True).recipe.cp_stage1_fraction == 0.5
    assert not teacher.recipe.cp_stage2_gate and config("copy-paste-teacher", stage2_gate=True).recipe.cp_stage2_gate
    control = config("copy-paste", no_cp_levelset=True, no_cp_consistency=True)
    assert control.train.unlabeled_batch == 0 and not control.recipe.cp_levelset and not control.recipe.cp_consistency
    assert control.recipe.cp_stage1_fraction is None and config("dtc").recipe.cp_stage1_fraction is None  # untouched
    assert teacher.recipe.cp_lr_in_stage2 is False  # the study gives its own steps (fitted, or --lr-steps)
    assert config("copy-paste-teacher", teacher_lr="stage2").recipe.cp_lr_in_stage2 is True

    def result(mode, recipe):
        return {"mode": mode, "labeled": 3, "unlabeled": 67 if mode in ("dtc", "copy-paste-teacher") else 0,
                "config": {"recipe": recipe}}

    both_off = {"cp_levelset": False, "cp_consistency": False, "cp_stage1_fraction": 0.118}
    assert train_acdc._model_label(result("copy-paste", both_off)) == \
        "labeled only + copy-paste (3), no level set, no consistency"
    nocons = {"cp_levelset": True, "cp_consistency": False, "cp_stage1_fraction": 0.25}
    assert train_acdc._model_label(result("copy-paste-teacher", nocons)) == \
        "copy-paste teacher, 3 labeled + 67 unlabeled, stage 1 0.25 of the run, no consistency"
    assert train_acdc.mode_name(result("copy-paste-teacher", dict(nocons, cp_consistency=True))) == "copy-paste teacher"
    assert train_acdc.mode_name(result("copy-paste", both_off)) == \
        "labeled-only + copy-paste, no level set, no consistency"
    assert train_acdc._model_label(result("dtc", {})) == "DTC, 3 labeled + 67 unlabeled"

    common = ["--data", str(data), "--tiny", "--no-assess", "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit):  # argparse: the switches belong to the copy-paste modes
        train_acdc.main(common + ["--mode", "seg", "--no-cp-consistency"])
    (tmp_path / "cp.json").write_text(json.dumps({"mode": "copy-paste", "model": "m.pt"}))
    for mode in ("dtc", "seg", "copy-paste-teacher"):
        with pytest.raises(SystemExit, match="continues only from a result of its own mode"):
            train_acdc.main(common + ["--mode", mode, "--continue-from", str(tmp_path / "cp.json")])


def test_train_acdc_tiny_copy_paste_teacher_2d(tmp_path):
    """--mode copy-paste-teacher --dims 2 --no-cp-consistency at --tiny scale: both stages run on the unlabeled
    patients (the last checkpoint holds the EMA teacher), the switches reach the saved config."""
    train_acdc = bench_module("train_acdc")
    from DTCCore.model.checkpoint import load_checkpoint

    data = _acdc_like(tmp_path / "acdc", n=4)
    result = train_acdc.main(["--data", str(data), "--out", str(tmp_path / "runs"), "--mode", "copy-paste-teacher",
                              "--tiny", "--dims", "2", "--no-cp-consistency", "--no-assess"])
    assert result["iterations"] == 3 and result["unlabeled"] == 2
    recipe = result["config"]["recipe"]
    assert recipe["cp_stage1_fraction"] == 0.25 and recipe["cp_levelset"] and not recipe["cp_consistency"]
    run = tmp_path / "runs" / "run_copy-paste-teacher"
    start = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"start"' in line]
    assert start[0]["labeled"] == 2 and start[0]["unlabeled"] == 2
    assert load_checkpoint(run / "checkpoints" / "iter_000003.pt").get("teacher") is not None  # stage 2 ran
