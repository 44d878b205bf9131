"""bench/studies/copy_paste_acdc.py: equal-CPU budgets per arm, the train_acdc.py command of each arm, a resumable
run (a stand-in for train_acdc.py, under the real CPU ledger), and archive + report on synthetic scored results."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import bench_module


def test_arm_budgets_are_thirty_cpu_minutes_over_the_measured_step_costs():
    cp = bench_module("copy_paste_acdc")
    seg = 29.3 * 60 / 6911  # Stage 11: labeled-only 6911 iterations in 29.3 CPU min; DTC 3159 in 28.8
    budgets = {arm: cp.arm_iterations(arm, 30, cp.STEP_SECONDS, 0.25) for arm in cp.DEFAULT_ARMS}
    assert budgets == {
        "seg": 7076,  # 1800 s / 0.2544 s
        "dtc": 3291,  # 1800 s / 0.5470 s
        "copy-paste": 8096,  # 1800 / (0.874 x seg)
        "cpt": 6234,  # 1800 / (seg x (0.25 x 0.871 + 0.75 x 1.223))
        "cpt_nocons": 6412,  # 1800 / (seg x (0.25 x 0.871 + 0.75 x 1.181))
    }
    assert budgets["cpt"] == round(1800 / (seg * (0.25 * 0.871 + 0.75 * 1.223)))
    assert cp.arm_iterations("cpt", 30, cp.STEP_SECONDS, 0.5) == round(1800 / (seg * (0.5 * 0.871 + 0.5 * 1.223)))


def _train_list(folder: Path, n: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.list").write_text("".join(f"patient{i:03d}\n" for i in range(1, n + 1)))
    return folder


def _args(cp, tmp_path: Path, arms: str, labeled=(3,), seed=7) -> SimpleNamespace:
    return SimpleNamespace(data=_train_list(tmp_path / "acdc"), out=tmp_path / "study", labeled=list(labeled),
                           minutes=[30.0], seed=seed, arms=arms.split(","), stage1_fraction=0.25, jobs=2)


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_each_arm_runs_train_acdc_with_its_mode_budget_patients_and_seed(tmp_path):
    cp = bench_module("copy_paste_acdc")
    jobs = dict(cp.plan(_args(cp, tmp_path, "seg,copy-paste,dtc,cpt,cpt_nocons", labeled=(3, 7)), cp.STEP_SECONDS))
    assert len(jobs) == 10
    regime = tmp_path / "study" / "L3_30min_seed7"
    expected = {"seg": ("seg", [], 0, 7076), "copy-paste": ("copy-paste", ["--no-cp-levelset", "--no-cp-consistency"],
                                                             0, 8096),
                "dtc": ("dtc", [], 7, 3291), "cpt": ("copy-paste-teacher", [], 7, 6234),
                "cpt_nocons": ("copy-paste-teacher", ["--no-cp-consistency"], 7, 6412)}
    for arm, (mode, switches, unlabeled, iterations) in expected.items():
        command = jobs[regime / arm]
        assert command[1].endswith("train_acdc.py")
        assert _option(command, "--mode") == mode and _option(command, "--out") == str(regime / arm)
        i = command.index("--mode") + 2
        assert command[i:i + len(switches)] == switches
        assert [c for c in command if c.startswith("--no-cp")] == switches
        assert _option(command, "--labeled") == "3" and _option(command, "--unlabeled") == str(unlabeled)
        assert _option(command, "--minutes") == "0" and _option(command, "--iterations") == str(iterations)
        assert _option(command, "--seed") == "7" and _option(command, "--json") == str(regime / arm / "result.json")
        assert "--no-assess" in command and "--resume" not in command
        assert " ".join(cp.PLAN) in " ".join(command) and _option(command, "--dims") == "2"
        assert ("--stage1-fraction" in command) == (mode == "copy-paste-teacher")
    assert _option(jobs[regime / "cpt"], "--stage1-fraction") == "0.25"
    assert _option(jobs[tmp_path / "study" / "L7_30min_seed7" / "dtc"], "--unlabeled") == "3"  # 10 - 7
    (regime / "cpt" / "run_copy-paste-teacher").mkdir(parents=True)  # an interrupted run resumes
    again = dict(cp.plan(_args(cp, tmp_path, "cpt,cpt_nocons"), cp.STEP_SECONDS))
    assert "--resume" in again[regime / "cpt"] and "--resume" not in again[regime / "cpt_nocons"]


# Stands in for train_acdc.py: training writes an unscored result (and its run folder), --assess adds scores.
FAKE_TRAIN_ACDC = """
import json, sys
from pathlib import Path
a = sys.argv[1:]
if "--assess" in a:
    path = Path(a[a.index("--assess") + 1])
    result = json.loads(path.read_text())
    path.write_text(json.dumps(dict(result, test={"scored": True})))
else:
    out, mode = Path(a[a.index("--out") + 1]), a[a.index("--mode") + 1]
    (out / f"run_{mode}").mkdir(parents=True, exist_ok=True)
    Path(a[a.index("--json") + 1]).write_text(json.dumps({"argv": a, "resume": "--resume" in a}))
"""


def test_run_trains_under_the_ledger_scores_and_resumes(tmp_path, monkeypatch):
    cp = bench_module("copy_paste_acdc")
    fake = tmp_path / "fake_train_acdc.py"
    fake.write_text(FAKE_TRAIN_ACDC)
    monkeypatch.setattr(cp, "train_acdc", SimpleNamespace(__file__=str(fake)))
    args = _args(cp, tmp_path, "seg,cpt,dtc")
    regime = tmp_path / "study" / "L3_30min_seed7"

    def ledger_lines(arm):
        return len((regime / arm / "cpu.jsonl").read_text().splitlines())

    cp.run(args, cp.STEP_SECONDS, poll_s=0.05)
    for arm in ("seg", "cpt", "dtc"):
        result = json.loads((regime / arm / "result.json").read_text())
        assert result["test"] == {"scored": True} and not result["resume"] and ledger_lines(arm) == 1
    assert "copy-paste-teacher" in json.loads((regime / "cpt" / "result.json").read_text())["argv"]
    assert cp.arm_state(regime / "seg") == "scored"

    cp.run(args, cp.STEP_SECONDS, poll_s=0.05)  # all scored: nothing runs again
    assert [ledger_lines(a) for a in ("seg", "cpt", "dtc")] == [1, 1, 1]
    (regime / "cpt" / "result.json").unlink()  # interrupted before its result: resumes, a second ledger segment
    result = json.loads((regime / "dtc" / "result.json").read_text())
    (regime / "dtc" / "result.json").write_text(json.dumps({k: v for k, v in result.items() if k != "test"}))
    assert cp.arm_state(regime / "dtc") == "trained"  # trained, not scored: only scored
    cp.run(args, cp.STEP_SECONDS, poll_s=0.05)
    assert json.loads((regime / "cpt" / "result.json").read_text())["resume"] and ledger_lines("cpt") == 2
    assert ledger_lines("dtc") == 1 and json.loads((regime / "dtc" / "result.json").read_text())["test"]


def _scored(mode: str, patients: dict[str, list[float]], iterations: int, unlabeled: int = 0) -> dict:
    """A train_acdc.py result with these per-patient class Dice (0-1), as its JSON holds it."""
    rows = [{"case": case, "class": c, "dice": d, "jaccard": d / (2 - d), "asd_vox": 1.0, "hd95_vox": 2.0}
            for case, dice in patients.items() for c, d in zip((1, 2, 3), dice)]
    means = {str(c): {"dice": float(np.mean([r["dice"] for r in rows if r["class"] == c]))} for c in (1, 2, 3)}
    means["mean"] = {"dice": float(np.mean([means[str(c)]["dice"] for c in (1, 2, 3)]))}
    return {"mode": mode, "model": "/somewhere/on/this/machine/run/model.pt", "labeled": 3, "unlabeled": unlabeled,
            "iterations": iterations, "train_seconds": 100.0, "config": {"recipe": {}, "data": "/abs/manifest.json"},
            "stages": [{"model": "/old/model.pt", "iterations": 1}], "validation": {"largest_component": True},
            "test": {"cases": len(patients), "means": means, "rows": rows},
            "test_raw": {"cases": len(patients), "means": means, "rows": rows}}


def test_archive_has_no_machine_paths_and_report_reads_study_and_archive_alike(tmp_path):
    cp = bench_module("copy_paste_acdc")
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(0)
    cases = [f"patient{i:03d}" for i in range(101, 109)]
    base = {c: list(rng.uniform(0.6, 0.9, 3)) for c in cases}
    gain = dict(zip(cases, (0.03, -0.01, 0.05, 0.02, -0.004, 0.04, 0.01, 0.025)))  # two patients lower
    study = tmp_path / "study"
    arms = {  # seg better than copy-paste in both seeds; cpt above seg by `gain` (seed 2: twice it)
        "seg": lambda s: _scored("seg", base, 7076),
        "copy-paste": lambda s: _scored("copy-paste", {c: [d - 0.02 for d in v] for c, v in base.items()}, 8096),
        "cpt": lambda s: _scored("copy-paste-teacher", {c: [d + s * gain[c] for d in v] for c, v in base.items()},
                                 6234, unlabeled=67),
    }
    for seed in (1, 2):
        for arm, make in arms.items():
            folder = study / f"L3_30min_seed{seed}" / arm
            folder.mkdir(parents=True)
            (folder / "result.json").write_text(json.dumps(make(seed)))
            (folder / "cpu.jsonl").write_text("".join(json.dumps({"cpu_s": s}) + "\n" for s in (600.0, 1200.0)))
    (study / "L3_30min_seed1" / "dtc").mkdir()  # not trained: left out
    written = cp.archive(study, tmp_path / "repo" / "copy-paste-acdc")
    assert sorted(p.relative_to(tmp_path / "repo" / "copy-paste-acdc").as_posix() for p in written) == sorted(
        f"L3_30min_seed{s}/{a}.json" for s in (1, 2) for a in arms)
    for path in written:
        text = path.read_text()
        assert str(tmp_path) not in text and "/somewhere" not in text and '"/' not in text
        archived = json.loads(text)
        assert "model" not in archived and archived["stages"][0]["model"] == "model.pt"  # names, not paths
        assert archived["config"]["data"] == "manifest.json" and archived["arm"] == path.stem
        assert archived["cpu_minutes"] == 30.0 and archived["cpu_segments"] == 2 and "rows" not in archived["test_raw"]

    text, numbers = cp.report(study, [3], [30.0], [1, 2])
    text_archive, numbers_archive = cp.report(tmp_path / "repo" / "copy-paste-acdc", [3], [30.0], [1, 2])
    assert text == text_archive and numbers == numbers_archive
    regime = numbers["L3_30min"]
    assert regime["best_labeled_only"] == "seg" and set(regime["arms"]) == set(arms)
    # oracle: each patient's mean Dice over the classes, differences in points, Wilcoxon over the 8 patients
    for seed in (1, 2):
        vs = regime["arms"]["cpt"]["seeds"][seed]["vs_seg"]
        diff = np.array([100 * seed * gain[c] for c in cases])
        assert vs["mean"] == pytest.approx(diff.mean()) and vs["p"] == pytest.approx(wilcoxon(diff).pvalue)
        assert (vs["higher"], vs["lower"]) == (int((diff > 0).sum()), int((diff < 0).sum()))
        assert regime["arms"]["seg"]["seeds"][seed]["vs_seg"] is None
    averaged = regime["arms"]["cpt"]["vs_seg_seed_mean"]
    assert averaged["mean"] == pytest.approx(np.mean([150 * gain[c] for c in cases]))  # (1 + 2) / 2 x gain
    seg_mean = 100 * np.mean([np.mean(v) for v in base.values()])
    assert regime["arms"]["seg"]["mean_dice"] == pytest.approx(seg_mean)
    assert regime["arms"]["copy-paste"]["max_dice"] == pytest.approx(seg_mean - 2)
    assert sum(line.startswith("| cpt | 2 | 6234 | 30.00 | ") for line in text.splitlines()) == 1
    assert "| cpt | 2 | " + f"{regime['arms']['cpt']['mean_dice']:.2f} [" in text  # the seeds' summary row
    assert "3 labeled + 67 unlabeled, 30 CPU minutes per arm" in text

    out = tmp_path / "report.md"
    shown = cp.main(["report", "--labeled", "3", "--minutes", "30", "--seed", "1", "2", "--out", str(study),
                     "--markdown", str(out)])
    assert shown == numbers and out.read_text() == text + "\n"


def test_the_better_labeled_only_arm_is_chosen_on_the_seeds_both_have(tmp_path):
    """seg ran seed 1 only, copy-paste seeds 1 and 2: on seed 1 seg is ahead (80 against 70 %), though copy-paste's
    mean over its own two seeds (70, 95) is higher. seg is the better arm; the teacher's seed-2 run, which seg lacks,
    is compared with copy-paste's seed 2 and says so."""
    cp = bench_module("copy_paste_acdc")
    cases = [f"patient{i:03d}" for i in range(101, 107)]
    gain = dict(zip(cases, (0.03, -0.01, 0.05, 0.02, 0.04, 0.01)))

    def flat(level, plus=None):
        return {c: [level + (plus or {}).get(c, 0.0)] * 3 for c in cases}

    runs = {(1, "seg"): _scored("seg", flat(0.80), 10), (1, "copy-paste"): _scored("copy-paste", flat(0.70), 10),
            (2, "copy-paste"): _scored("copy-paste", flat(0.95), 10),
            (1, "cpt"): _scored("copy-paste-teacher", flat(0.80, gain), 10, unlabeled=67),
            (2, "cpt"): _scored("copy-paste-teacher", flat(0.90, gain), 10, unlabeled=67)}
    for (seed, arm), result in runs.items():
        folder = tmp_path / "study" / f"L3_30min_seed{seed}" / arm
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(result))
        (folder / "cpu.jsonl").write_text(json.dumps({"cpu_s": 1800.0}) + "\n")
    text, numbers = cp.report(tmp_path / "study", [3], [30.0], [1, 2])
    regime = numbers["L3_30min"]
    assert regime["best_labeled_only"] == "seg"
    seed1, seed2 = (regime["arms"]["cpt"]["seeds"][s]["vs_seg"] for s in (1, 2))
    assert seed1["mean"] == pytest.approx(100 * np.mean(list(gain.values()))) and "against" not in seed1
    assert seed2["mean"] == pytest.approx(100 * np.mean([0.90 + g - 0.95 for g in gain.values()]))
    assert seed2["against"] == "copy-paste" and "against copy-paste)" in text
    assert regime["arms"]["copy-paste"]["seeds"][2]["vs_seg"] is None  # nothing else of seed 2 to compare with
    assert regime["arms"]["cpt"]["vs_seg_seed_mean"]["mean"] == pytest.approx(seed1["mean"])  # seed 1 only


def test_costs_file_must_name_every_variant(tmp_path):
    cp = bench_module("copy_paste_acdc")
    full = tmp_path / "full.json"
    full.write_text(json.dumps({k: 2 * v for k, v in cp.STEP_SECONDS.items()}))
    assert cp.load_costs(full)["seg"] == pytest.approx(2 * 29.3 * 60 / 6911)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"seg": 0.3}))
    with pytest.raises(SystemExit, match="no cost for"):
        cp.load_costs(partial)


def test_step_costs_of_another_plan_are_refused(tmp_path):
    cp = bench_module("copy_paste_acdc")
    rows = [{"variant": k, "cpu_s": v} for k, v in cp.STEP_SECONDS.items()]
    measured = tmp_path / "costs.json"
    measured.write_text(json.dumps({"plan": "acdc-2d", "rows": rows}))
    assert cp.load_costs(measured) == pytest.approx(cp.STEP_SECONDS)
    for other in ({"plan": "la", "rows": rows}, {"rows": rows}):  # no "plan": a file of the LA plan
        measured.write_text(json.dumps(other))
        with pytest.raises(SystemExit, match="--plan acdc-2d"):
            cp.load_costs(measured)


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in d.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


# What a step-cost measurement runs differently from a study arm on purpose (bench/speed/mode_step_cost.py): its
# seed, fp32 on the CPU, the batches built in its own process, a progress event every step, no checkpoints and no
# BatchNorm pass after the run; a whole run of one stage (cp_stage1_fraction 1 or 0), so where its lr steps fall
# (recipe.cp_lr_in_stage2: the lr's value, not a step's work).
MEASURED_DIFFERENTLY = {"train.seed", "train.checkpoint_every", "train.log_every", "train.num_workers",
                        "train.device", "train.precision", "train.precise_bn_batches", "recipe.cp_stage1_fraction",
                        "recipe.cp_lr_in_stage2"}
# Stage 1 of these arms is costed at a neighbouring variant's price (copy_paste_la.ARMS): stage 1 without
# consistency at stage 1 with it; BCP's stage 1 (teacher mode, unlabeled crops loaded) at labeled-only copy-paste.
STAGE1_STAND_INS = {("cpt_nocons", "copy-paste-teacher-s1"): {"recipe.cp_consistency"},
                    ("bcp", "copy-paste-bcp"): {"recipe.mode", "train.unlabeled_batch"}}


def test_step_costs_are_measured_on_the_configs_the_study_trains():
    cp, cost = bench_module("copy_paste_acdc"), bench_module("mode_step_cost")
    train_acdc = bench_module("train_acdc")
    for arm, (_, _, stage1, stage2) in cp.ARMS.items():
        command = cp.train_command(arm, Path("arm"), Path("data"), 7, 63, 500, 1, 0.25)
        study = _flat(train_acdc.make_config(train_acdc.parser().parse_args(command[2:])).to_dict())
        for variant in (v for v in (stage1, stage2) if v is not None):
            measured = _flat(cost.variant_config(variant, 500, "acdc-2d").to_dict())
            differ = {key for key in study if study[key] != measured[key]}
            assert differ <= MEASURED_DIFFERENTLY | STAGE1_STAND_INS.get((arm, variant), set()), (arm, variant, differ)


def test_run_sizes_the_arms_with_the_costs_measured_on_this_plan(tmp_path, monkeypatch):
    cp = bench_module("copy_paste_acdc")
    used = []
    monkeypatch.setattr(cp, "run", lambda args, costs: used.append(costs))
    cp.main(["run", "--out", str(tmp_path / "study"), "--data", str(_train_list(tmp_path / "acdc"))])
    measured = {r["variant"]: r["cpu_s"] for r in json.loads(cp.MEASURED_COSTS.read_text())["rows"]}
    assert used == [pytest.approx(measured)] and measured != pytest.approx(cp.STEP_SECONDS)


def test_teacher_lr_stage2_puts_the_lr_steps_inside_stage_two_and_a_folder_keeps_one_recipe(tmp_path):
    """Stage 13's recipe: the teacher arm's command asks train_acdc.py for --teacher-lr stage2, whose config keeps
    lr 0.01 through stage 1 (0.65 of the run) and moves the steps fitted to the run into stage 2; for 6738
    iterations, hand-computed: stage 2 from round(0.65 x 6738) = 4380, the fitted steps (2808, 5615) at the same
    fractions of the 2358 stage-2 iterations, 4380 + round(2808 / 6738 x 2358) = 5363 and 4380 + 1965 = 6345 (the
    probe's explicit --lr-steps were 5362 6345). Other arms are unchanged by it."""
    from DTCCore.training.copypaste_step import stage2_iteration
    from DTCCore.training.schedule import stage2_lr_steps

    cp = bench_module("copy_paste_acdc")
    args = _args(cp, tmp_path, "cpt,copy-paste")
    args.stage1_fraction, args.teacher_lr = 0.65, "stage2"
    jobs = dict(cp.plan(args, cp.STEP_SECONDS))
    regime = tmp_path / "study" / "L3_30min_seed7"
    cpt = jobs[regime / "cpt"]
    assert _option(cpt, "--teacher-lr") == "stage2" and _option(cpt, "--stage1-fraction") == "0.65"
    assert "--lr-steps" not in cpt and "--teacher-lr" not in jobs[regime / "copy-paste"]
    parsed = cp.train_acdc.parser().parse_args([*cpt[2:cpt.index("--iterations")], "--iterations", "6738",
                                                *cpt[cpt.index("--iterations") + 2:]])
    config = cp.train_acdc.make_config(parsed)
    assert config.recipe.cp_lr_in_stage2 is True and config.recipe.cp_stage1_fraction == 0.65
    began = stage2_iteration(config.recipe.cp_stage1_fraction, config.train.iterations)
    assert (began, config.train.lr_steps) == (4380, (2808, 5615))
    assert stage2_lr_steps(config.train.lr_steps, config.train.iterations, began) == (5363, 6345)
    args.teacher_lr = "run"
    assert _option(dict(cp.plan(args, cp.STEP_SECONDS))[regime / "cpt"], "--teacher-lr") == "run"
    cp.check_recipe(tmp_path / "study", {"stage1_fraction": 0.65, "teacher_lr": "stage2"})
    cp.check_recipe(tmp_path / "study", {"stage1_fraction": 0.65, "teacher_lr": "stage2"})  # the same: accepted
    with pytest.raises(SystemExit, match="another --out"):
        cp.check_recipe(tmp_path / "study", {"stage1_fraction": 0.25, "teacher_lr": "run"})


def test_a_study_folder_from_before_the_recipe_record_holds_the_default_recipe(tmp_path):
    cp = bench_module("copy_paste_acdc")
    old = tmp_path / "old"
    (old / "L7_30min_seed1337" / "cpt").mkdir(parents=True)  # runs, no teacher_recipe.json
    with pytest.raises(SystemExit, match="another --out"):
        cp.check_recipe(old, {"stage1_fraction": 0.65, "teacher_lr": "stage2"})
    cp.check_recipe(old, {"stage1_fraction": 0.25, "teacher_lr": "run"})  # the only recipe before the option
    assert json.loads((old / cp.RECIPE).read_text()) == {"stage1_fraction": 0.25, "teacher_lr": "run"}
