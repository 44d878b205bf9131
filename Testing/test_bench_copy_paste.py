"""bench/studies/copy_paste_la.py: equal-CPU budgets per arm, its dtc train command lines, and the teacher
study's replay of training batches (the replayed crops must be the training batch's) on a tiny copy-paste-teacher
run."""

from __future__ import annotations

import json

import pytest

from conftest import bench_module, tiny_config


def _la_folder(folder):
    """bench/lib/synthetic_la.py's LA2018-like folder: 4 training cases (2 labeled + 2 unlabeled), 1 test."""
    return bench_module("synthetic_la").synthetic_data(folder, n_train=4, n_test=1)


def test_arm_budgets_are_minutes_over_the_cost_of_a_step():
    cp = bench_module("copy_paste_la")
    costs = {"seg": 0.5, "dtc": 1.0, "copy-paste-bcp": 0.25, "copy-paste-teacher-s1": 0.3,
             "copy-paste-teacher-s2": 1.2, "copy-paste-teacher-s2-nocons": 1.1, "copy-paste-teacher-s2-bcp": 1.0}
    assert cp.arm_iterations("seg", 30, costs, 0.1) == 3600  # 1800 s / 0.5 s
    assert cp.arm_iterations("dtc", 30, costs, 0.1) == 1800
    assert cp.arm_iterations("copy-paste", 30, costs, 0.1) == 7200
    assert cp.arm_iterations("cpt", 30, costs, 0.1) == round(1800 / (0.1 * 0.3 + 0.9 * 1.2))  # 1622
    assert cp.arm_iterations("cpt_nocons", 30, costs, 0.25) == round(1800 / (0.25 * 0.3 + 0.75 * 1.1))


def test_train_commands_name_the_mode_its_switches_and_the_seed(tmp_path):
    cp = bench_module("copy_paste_la")
    data = _la_folder(tmp_path / "data")
    cmd = cp.train_command("cpt_nocons", tmp_path / "out", data, 2, 120, 7, 0.2)
    text = " ".join(cmd)
    assert "--mode copy-paste-teacher --no-cp-consistency --seed 7 --stage1-fraction 0.2" in text
    assert "manifest_2.json" in text and "config_120.json" in text
    control = " ".join(cp.train_command("copy-paste", tmp_path / "out", data, 2, 50, 7, 0.2))
    assert "--mode copy-paste --no-cp-levelset --no-cp-consistency --seed 7" in control
    assert "manifest_2_labeled.json" in control and "--stage1-fraction" not in control


def test_teacher_study_replays_training_batches_and_scores_teacher_and_student(tmp_path, capsys):
    cp = bench_module("copy_paste_la")
    la_study = bench_module("la_study")
    from DTCCore.training.trainer import train

    data = _la_folder(tmp_path / "data")
    manifest = la_study.manifest(tmp_path / "out", data, 2, True)
    config = tiny_config(iterations=3, checkpoint_every=1, precise_bn_batches=0)
    config.recipe.mode, config.recipe.cp_stage1_fraction = "copy-paste-teacher", 0.4  # stage 2 from step 1
    run = tmp_path / "out" / "run"
    train(config, manifest, run)
    result = cp.teacher_study(run, data, cases=2, count=2)  # copy_paste_teacher.teacher_study, as the action runs it
    assert [row["iteration"] for row in result["checkpoints"]] == [2, 3]  # checkpoints with a teacher
    assert len(result["cases"]) == 2
    for row in result["checkpoints"]:
        assert [r["iteration"] for r in row["replay"]] == [row["iteration"], row["iteration"] + 1]
        for key in ("teacher_scan_mean", "student_scan_mean", "replay_crop_dice_mean", "replay_mixed_dice_mean"):
            assert 0.0 <= row[key] <= 1.0
    assert json.loads((run / "teacher_dice.json").read_text())["checkpoints"][0]["iteration"] == 2
    cp._report_teacher(run)
    assert "| 3 |" in capsys.readouterr().out  # one table row per checkpoint with a teacher


def test_cpu_ledger_counts_the_command_and_the_processes_it_waited_for(tmp_path):
    """bench/lib/cpu_account.py: a command whose child process burns CPU; the ledger's seconds cover both (each
    reports its own process_time, the oracle), segments add up, and the exit status passes through."""
    import subprocess
    import sys

    from conftest import REPO

    burn = ("import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
            "open(sys.argv[1], 'a').write(f'{time.process_time()}\\n')\n")
    script = tmp_path / "burn.py"
    script.write_text(burn)
    parent = (f"import subprocess, sys; subprocess.run([sys.executable, {str(script)!r}, {str(tmp_path / 'own')!r}]);"
              "sys.exit(3)")
    ledger = tmp_path / "arm.cpu.jsonl"
    for _ in range(2):
        code = subprocess.run([sys.executable, str(REPO / "bench" / "lib" / "cpu_account.py"), str(ledger), "--",
                               sys.executable, "-c", parent]).returncode
        assert code == 3
    rows = [json.loads(line) for line in ledger.read_text().splitlines()]
    own = [float(v) for v in (tmp_path / "own").read_text().split()]
    assert len(rows) == 2 and all(r["exit"] == 3 for r in rows)
    for row, child in zip(rows, own):
        assert child >= 0.4 and row["cpu_s"] >= child  # the grandchild's CPU is in the ledger
    cpu_account = bench_module("cpu_account")
    assert abs(cpu_account.cpu_minutes(ledger) - sum(r["cpu_s"] for r in rows) / 60) < 1e-12
    assert cpu_account.cpu_minutes(tmp_path / "none.jsonl") is None


def _fake_arm(out, regime, arm, dice, cpu_s, iterations):
    """A finished arm's files as a study leaves them: scores with per-case rows (absolute paths where la_eval and
    the trainer write them), the log's done event, the CPU ledger."""
    run_dir = out / regime / arm
    run_dir.mkdir(parents=True)
    for split in ("test", "val"):
        rows = [{"case": f"case{i}", "raw": {"dice": d}, "lcc": {"dice": d}} for i, d in enumerate(dice)]
        mean = sum(dice) / len(dice)
        body = {"model": str(run_dir / "model.pt"), "list": str(out / f"{split}.list"), "rows": rows,
                "mean_raw": {"dice": mean}, "mean_lcc": {"dice": mean}}
        (run_dir / f"score_{split}.json").write_text(json.dumps(body))
    (run_dir / "log.jsonl").write_text(json.dumps({"event": "progress", "iteration": 1}) + "\n" + json.dumps(
        {"event": "done", "iteration": iterations, "elapsed_s": 120.0, "model": str(run_dir / "model.pt"),
         "checkpoint": str(run_dir / "checkpoints" / f"iter_{iterations:06d}.pt")}) + "\n")
    (out / regime / f"{arm}.cpu.jsonl").write_text(json.dumps({"cpu_s": cpu_s}) + "\n")


def test_archive_keeps_the_results_without_machine_paths_and_report_reads_it(tmp_path, capsys):
    from scipy.stats import wilcoxon

    cp = bench_module("copy_paste_la")
    out, archive = tmp_path / "study", tmp_path / "repo" / "copy-paste-la"
    seg = [0.70, 0.72, 0.65, 0.80, 0.75, 0.60]
    cpt = [0.74, 0.71, 0.70, 0.86, 0.79, 0.66]
    _fake_arm(out, "L4_90min_seed1", "seg", seg, 5400.0, 5000)
    _fake_arm(out, "L4_90min_seed1", "cpt", cpt, 5460.0, 4000)
    _fake_arm(out, "L4_90min_seed2", "cpt", [d - 0.01 for d in cpt], 5300.0, 4000)
    (out / "L4_90min_seed2" / "dtc").mkdir(parents=True)  # unfinished: not archived
    copied = cp.archive(out, archive)
    assert sorted(p.relative_to(archive).as_posix() for p in copied) == [
        "L4_90min_seed1/cpt", "L4_90min_seed1/seg", "L4_90min_seed2/cpt"]
    for path in archive.rglob("*"):
        if path.is_file():
            assert str(tmp_path) not in path.read_text(), path
    result = cp.report(archive, [4], [90.0], [1, 2])
    first = result["L4_90min_seed1"]
    diffs = [100 * (a - b) for a, b in zip(cpt, seg)]
    assert first["cpt"]["vs"]["mean"] == pytest.approx(sum(diffs) / len(diffs))
    assert first["cpt"]["vs"]["p"] == pytest.approx(wilcoxon(diffs).pvalue)
    assert (first["cpt"]["vs"]["higher"], first["cpt"]["vs"]["lower"]) == (5, 1)
    assert first["cpt"]["cpu_minutes"] == pytest.approx(91.0) and first["cpt"]["iterations"] == 4000
    second = result["L4_90min_seed2"]["cpt"]  # seed 2 has no labeled-only arm: compared with seed 1's
    assert second["versus"] == "seg (seed 1)"
    assert second["vs"]["mean"] == pytest.approx(sum(diffs) / len(diffs) - 1.0)
    shown = capsys.readouterr().out
    assert "| cpt | 2 | " in shown  # the arm's mean over both seeds


def test_the_curve_has_a_point_per_arm_and_budget_with_the_seeds_measured_minutes(tmp_path):
    curve = bench_module("copy_paste_curve")
    out = tmp_path / "archive"
    _fake_arm(out, "L4_30min_seed1", "seg", [0.70, 0.72], 1800.0, 2000)
    _fake_arm(out, "L4_90min_seed1", "seg", [0.71, 0.73], 5400.0, 6000)
    _fake_arm(out, "L4_90min_seed1", "cpt", [0.76, 0.78], 5520.0, 5000)
    _fake_arm(out, "L4_90min_seed2", "cpt", [0.72, 0.74], 5280.0, 5000)
    _fake_arm(out, "L8_90min_seed1", "cpt", [0.9, 0.9], 5400.0, 5000)  # another regime: not on this curve
    curves = curve.collect(out, 4)
    assert [p["minutes"] for p in curves["seg"]] == [30.0, 90.0]
    (point,) = curves["cpt"]
    assert point["seeds"] == [1, 2] and point["cpu_minutes"] == pytest.approx([92.0, 88.0])
    assert point["dice"] == pytest.approx([77.0, 73.0])
    one, two = {"dice": [70.0]}, {"dice": [70.0, 72.0]}
    assert [curve._seed_counts(p) for p in ([one], [one, one], [two, two], [one, two])] == [
        "1 seed", "1 seed", "2 seeds", "1 / 2 seeds"]  # the legend: how many seeds each point has, left to right
    png = tmp_path / "curve.png"
    curve.main(["--out", str(out), "--png", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_over_the_seeds_each_scans_dice_is_averaged_before_the_paired_test(tmp_path):
    from scipy.stats import wilcoxon

    cp = bench_module("copy_paste_la")
    out = tmp_path / "study"
    seg = {1: [0.70, 0.72, 0.65, 0.80, 0.75, 0.60], 2: [0.68, 0.74, 0.66, 0.79, 0.70, 0.64]}
    cpt = {1: [0.74, 0.71, 0.70, 0.86, 0.79, 0.66], 2: [0.75, 0.70, 0.69, 0.88, 0.77, 0.61]}
    for seed in (1, 2):
        _fake_arm(out, f"L4_90min_seed{seed}", "seg", seg[seed], 5400.0, 5000)
        _fake_arm(out, f"L4_90min_seed{seed}", "cpt", cpt[seed], 5400.0, 4000)
    # copy-paste: worse than seg on seed 1, which both ran, though its mean over its own seeds (1 and 3) is higher;
    # the labeled-only arms are compared on the seeds they share, so seg stays the one compared with
    _fake_arm(out, "L4_90min_seed1", "copy-paste", [0.60] * 6, 5400.0, 6000)
    _fake_arm(out, "L4_90min_seed3", "copy-paste", [0.99] * 6, 5400.0, 6000)
    over = cp.report(out, [4], [90.0], [1, 2, 3])["L4_90min"]
    assert over["best_labeled_only"] == "seg"
    arm = over["arms"]["cpt"]
    assert arm["vs_seeds"] == [1, 2] and arm["dice"] == pytest.approx([100 * sum(cpt[s]) / 6 for s in (1, 2)])
    diffs = [100 * ((cpt[1][i] + cpt[2][i]) / 2 - (seg[1][i] + seg[2][i]) / 2) for i in range(6)]  # naive loop
    assert arm["vs_seed_mean"]["mean"] == pytest.approx(sum(diffs) / 6)
    assert arm["vs_seed_mean"]["p"] == pytest.approx(wilcoxon(diffs).pvalue)
    assert (arm["vs_seed_mean"]["higher"], arm["vs_seed_mean"]["lower"]) == (sum(d > 0 for d in diffs),
                                                                            sum(d < 0 for d in diffs))
    assert over["arms"]["seg"]["vs_seed_mean"] is None
    assert over["arms"]["copy-paste"]["vs_seeds"] == [1]


def test_p_values_below_a_thousandth_are_not_printed_as_zero():
    common = bench_module("common")
    assert common.p_text(0.0004826) == "p < 0.001"
    assert common.p_text(0.0014) == "p = 0.001" and common.p_text(0.05) == "p = 0.050"
