"""The copy-paste teacher (BCP + DTC) against labeled-only, copy-paste labeled-only and DTC on LA, at equal CPU time.

    python bench/studies/copy_paste_la.py run --labeled 4 --minutes 30 90 --seed 1337 [2] --out DIR [--arms ...]
                                              [--jobs 2] [--costs mode_step_cost.json] [--stage1-fraction F]
    python bench/studies/copy_paste_la.py teacher --labeled 4 --minutes 90 --seed 1337 --out DIR
        [--cases 20] [--replay 8]
    python bench/studies/copy_paste_la.py report --labeled 4 --minutes 30 90 --seed 1337 [2] --out DIR [--json F]
    python bench/studies/copy_paste_la.py archive --out DIR [--to bench/results/copy-paste-la]

Regime: the first ``--labeled`` cases of ``train.list`` labeled, the other ``80 - labeled`` unlabeled (their labels
never used in training; bench/lib/la_study.py's manifests). Every arm trains on the bundled model's 2.0 mm plan
(48x48x32 patch, base 16, default augmentation), fp32, one torch thread and one loader process, with ``--seed``.
Arms (``ARMS``):

- ``seg``: labeled-only (``--mode seg``);
- ``copy-paste``: labeled-only with BCP's stage-1 copy-paste for the whole budget, BCP's own loss (``--mode
  copy-paste --no-cp-levelset --no-cp-consistency``): the control for what the teacher adds;
- ``dtc``: the paper's DTC on labeled + unlabeled;
- ``cpt``: ``--mode copy-paste-teacher`` (BCP's two stages, the level-set head and DTC's consistency on the
  mixed images);
- ``cpt_nocons``: the same without DTC's consistency (level set still on);
- ``bcp`` (not run unless named): ``copy-paste-teacher`` with neither, BCP's own recipe.

Equal CPU time: each arm's budget is iterations, ``minutes x 60 / (CPU seconds per step)`` with the per-step cost
of its mode measured on this machine by bench/speed/mode_step_cost.py (``STEP_SECONDS``, or a fresh ``--costs`` JSON);
a copy-paste-teacher run of T iterations costs ``T (f c1 + (1 - f) c2)`` for its stage fraction f. Iterations
rather than ``--time-limit``: arms that run side by side share the cores unevenly and a time limit would give the
arm that happens to be slowed fewer steps; an iteration budget does not depend on the load (as few_label_la.py).
The recipe's schedule is fitted to the iterations (lr x0.1 at 5/12 and 10/12, consistency ramp full at the
end, stage 1 the first f of the run).

``run`` starts ``--jobs`` arms at a time. A finished arm (its ``model.pt`` exists) is not run again; one with
checkpoints resumes, so a killed study continues. Each final model is scored once, as few_label_la.py does, on
the 20 ``test.list`` scans and on the last 8 of ``train.list`` (validation) with bench/lib/la_eval.py.

``teacher`` measures, for every checkpoint of the copy-paste-teacher arms that holds a teacher: (1) the teacher's
pseudo-labels on ``--cases`` of the unlabeled training scans (evenly spread; their labels exist on LA), whole
scans on the 2.0 mm grid, the teacher in evaluation mode, threshold 0.5 + largest component (the pseudo-label
rule), beside the student's Dice at the same checkpoint; (2) a replay of the ``--replay`` training batches from
that iteration with the checkpoint's teacher run as in training (training mode, the step's dropout seed): the
Dice of its pseudo-labels on the unlabeled crops, and of the pasted (mixed) targets against the true labels,
over each whole mixed crop and over its pseudo-labelled part. The first replayed batch used exactly this teacher;
the next ones used a teacher a few EMA updates on. Written to ``<arm>/teacher_dice.json``.

``archive`` copies the finished arms' small result files into the repository (bench/results/copy-paste-la, the
same layout), so that a study's results outlive the machine it ran on; ``report --out bench/results/copy-paste-la``
reads them there. ``report`` takes several ``--seed``: one table per regime and seed, each arm compared per test
scan with the better labeled-only arm of the same seed (or, where that seed has none, of the first seed); then
each arm over the seeds, paired per scan on each scan's Dice averaged over the seeds (``over_seeds``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
import cpu_account
import la_study
from copy_paste_teacher import teacher_study

# (mode, extra dtc train options, cost variant of stage 1 (or the whole run), cost variant of stage 2 or None)
ARMS = {
    "seg": ("seg", [], "seg", None),
    "copy-paste": ("copy-paste", ["--no-cp-levelset", "--no-cp-consistency"], "copy-paste-bcp", None),
    "dtc": ("dtc", [], "dtc", None),
    "cpt": ("copy-paste-teacher", [], "copy-paste-teacher-s1", "copy-paste-teacher-s2"),
    "cpt_nocons": ("copy-paste-teacher", ["--no-cp-consistency"], "copy-paste-teacher-s1",
                   "copy-paste-teacher-s2-nocons"),
    "bcp": ("copy-paste-teacher", ["--no-cp-levelset", "--no-cp-consistency"], "copy-paste-bcp",
            "copy-paste-teacher-s2-bcp"),
}
DEFAULT_ARMS = ("seg", "copy-paste", "dtc", "cpt", "cpt_nocons")
LABELED_ONLY_ARMS = ("seg", "copy-paste")
# CPU seconds per step (trainer + its loader process) on the LA 2.0 mm plan, one thread, fp32, this project's 2-core
# VM. seg and dtc: the 4-labeled few-label study's process-monitored totals (bench/results/few-labels.md, "Few labels
# on LA: 4 labeled": 1900 seg iterations in 16.7 CPU min, 1000 dtc iterations in 16.6), the cleanest we have. The
# copy-paste variants: their cost relative to seg from bench/speed/mode_step_cost.py (--steps 8, 2026-12-07:
# copy-paste 0.874 x seg, teacher stage 1 0.871 x, stage 2 1.223 x, without consistency 1.181 x, BCP's own 1.106 x;
# measured side by side on a loaded machine, so each ratio is noisy by up to 20 %), times seg's cost. A study records
# the CPU seconds each arm really used (bench/lib/cpu_account.py) and reports them beside its Dice.
# SIDE_BY_SIDE_FACTOR: those totals came from the AVX512-BF16 Zen 4 VM; on the AVX2-only EPYC VM of 2026-12-07, two
# arms at once (--jobs 2, each trainer + loader), copy-paste and teacher stage 1 measured 0.88 CPU s/step each over 100
# steps (process-tree CPU from /proc), 1.92x their nominal 0.459 s; every variant is scaled by that factor so that an
# arm budgeted N minutes uses about N CPU minutes there (the 90-minute arms then used 76-83: the ledger is the record).
SIDE_BY_SIDE_FACTOR = 0.88 / (0.872 * 16.7 * 60 / 1900)
SEG_STEP_SECONDS = SIDE_BY_SIDE_FACTOR * 16.7 * 60 / 1900
# The copy-paste variants' cost per step relative to seg (mode_step_cost.py, above); copy_paste_acdc.py scales them too.
SEG_RATIOS = {"copy-paste-bcp": 0.874, "copy-paste-teacher-s1": 0.871, "copy-paste-teacher-s2": 1.223,
              "copy-paste-teacher-s2-nocons": 1.181, "copy-paste-teacher-s2-bcp": 1.106}
STEP_SECONDS = {"seg": SEG_STEP_SECONDS, "dtc": SIDE_BY_SIDE_FACTOR * 16.6 * 60 / 1000,
                **{variant: ratio * SEG_STEP_SECONDS for variant, ratio in SEG_RATIOS.items()}}


def arm_iterations(arm: str, minutes: float, costs: dict[str, float], fraction: float) -> int:
    """Iterations of ``arm`` that cost ``minutes`` CPU minutes (module docstring)."""
    _, _, first, second = ARMS[arm]
    per_step = costs[first] if second is None else fraction * costs[first] + (1 - fraction) * costs[second]
    return max(1, int(round(minutes * 60.0 / per_step)))


def regime_dir(out: Path, labeled: int, minutes: float, seed: int) -> Path:
    return out / f"L{labeled}_{minutes:g}min_seed{seed}"


def train_command(arm: str, out: Path, data: Path, labeled: int, iterations: int, seed: int,
                  fraction: float) -> list[str]:
    mode, options, _, second = ARMS[arm]
    manifest = la_study.manifest(out, data, labeled, with_unlabeled=mode in ("dtc", "copy-paste-teacher"))
    command = ["--mode", mode, *options, "--seed", str(seed)]
    if second is not None:
        command += ["--stage1-fraction", repr(fraction)]
    return [sys.executable, "-m", "DTCCore", "train", str(manifest), "--config",
            str(la_study.fitted_config(out, iterations)), *la_study.PLAN, "--workers", "1", "--threads", "1",
            "--jsonl", *command]


def start_arm(arm: str, run_dir: Path, command: list[str]) -> subprocess.Popen | None:
    """Start (or resume) one arm's training; None when its model.pt exists."""
    if (run_dir / "model.pt").exists():
        return None
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = command + ["-o", str(run_dir)]
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("*.pt")):
        command.append("--resume")
    print(f"[{time.strftime('%H:%M:%S')}] {run_dir.parent.name} {arm}: {' '.join(command)}", flush=True)
    log = open(f"{run_dir}.out", "a")  # noqa: SIM115 - handed to the child process, closed when it ends
    ledger = [sys.executable, str(common.LIB / "cpu_account.py"), f"{run_dir}.cpu.jsonl", "--"]
    return subprocess.Popen(ledger + command, cwd=common.REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def stop_all(processes: list[subprocess.Popen], grace_s: float = 120.0) -> None:
    """SIGTERM every still-running arm (cpu_account.py passes it on; the trainer saves a checkpoint and its ledger
    line is written), then wait up to ``grace_s`` seconds each before killing it."""
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace, costs: dict[str, float]) -> None:
    pending = []
    for minutes in args.minutes:
        for labeled in args.labeled:
            for seed in args.seed:
                regime = regime_dir(args.out, labeled, minutes, seed)
                for arm in args.arms:
                    its = arm_iterations(arm, minutes, costs, args.stage1_fraction)
                    cmd = train_command(arm, args.out, args.data, labeled, its, seed, args.stage1_fraction)
                    pending.append((regime / arm, arm, cmd))
    running: list[tuple[Path, str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            run_dir, arm, cmd = pending.pop(0)
            proc = start_arm(arm, run_dir, cmd)
            if proc is None:
                la_study.score_run(run_dir, args.out, args.data)
            else:
                running.append((run_dir, arm, proc))
        time.sleep(5)
        for item in list(running):
            run_dir, arm, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                stop_all([p for _, _, p in running])  # the others stop with a checkpoint: resumable
                raise SystemExit(f"error: {run_dir} failed (exit {proc.returncode}); see {run_dir}.out")
            la_study.score_run(run_dir, args.out, args.data)
            print(f"[{time.strftime('%H:%M:%S')}] {run_dir.parent.name} {arm} done and scored", flush=True)



def report(out: Path, labeled_list: list[int], minutes_list: list[float], seeds: list[int]) -> dict:
    """Markdown tables (printed) and the numbers behind them (returned): per regime and seed, every arm against
    the better labeled-only arm of that seed (else of the first seed), then each arm over the seeds
    (:func:`over_seeds`, under ``L<labeled>_<minutes>min``)."""
    result: dict = {}
    for minutes in minutes_list:
        for labeled in labeled_list:
            tests_by_seed = {seed: {arm: _load(regime_dir(out, labeled, minutes, seed) / arm, "test") for arm in ARMS}
                             for seed in seeds}
            for seed in seeds:
                regime = regime_dir(out, labeled, minutes, seed)
                own = {a: t for a, t in tests_by_seed[seed].items() if t is not None}
                bases = {a: own[a] for a in LABELED_ONLY_ARMS if a in own}
                base_seed = seed
                if not bases:
                    base_seed = seeds[0]
                    bases = {a: t for a in LABELED_ONLY_ARMS if (t := tests_by_seed[seeds[0]][a]) is not None}
                best = max(bases, key=lambda a: bases[a]["mean_raw"]["dice"]) if bases else None
                summary = _regime_table(regime, own, best, bases.get(best) if best else None, base_seed, seed)
                if summary:
                    print(f"\n{labeled} labeled + {80 - labeled} unlabeled, {minutes:g} CPU minutes per arm, "
                          f"seed {seed}\n")
                    print(summary.pop("_table"))
                    result[regime.name] = summary
                for arm in ARMS:
                    _report_teacher(regime / arm)
            over = over_seeds(tests_by_seed)
            rows = [[arm, len(a["dice"]), a["mean"], a["min"], a["max"], " / ".join(f"{d:.2f}" for d in a["dice"]),
                     _versus(a["vs_seed_mean"], len(a["vs_seeds"]))]
                    for arm, a in over["arms"].items() if len(a["dice"]) > 1]
            if rows:
                result[f"L{labeled}_{minutes:g}min"] = over
                print(f"\n{labeled} labeled, {minutes:g} CPU minutes: test Dice % over seeds {seeds}\n")
                print(common.markdown_table(
                    ["arm", "seeds", "mean", "min", "max", "per seed",
                     f"arm - {over['best_labeled_only']}, each scan's Dice averaged over the seeds (higher/lower, "
                     "Wilcoxon p)"], rows))
    return result


def _versus(vs: dict | None, seeds: int) -> str:
    if vs is None:
        return ""
    return f"{vs['mean']:+.2f} ({vs['higher']}/{vs['lower']}, {common.p_text(vs['p'])}) over {seeds} seeds"


def _seed_mean(tests: dict[int, dict], seeds: list[int]) -> dict:
    """A score whose per-case Dice (raw) is each case's Dice averaged over ``seeds`` (la_study.paired reads it)."""
    per = [{r["case"]: r["raw"]["dice"] for r in tests[s]["rows"]} for s in seeds]
    return {"rows": [{"case": c, "raw": {"dice": float(np.mean([p[c] for p in per]))}} for c in per[0]]}


def over_seeds(tests_by_seed: dict[int, dict[str, dict | None]]) -> dict:
    """Each arm over the seeds it finished (``{seed: {arm: test score or None}}``): its test Dice % per seed, mean,
    min and max; and against the better labeled-only arm (the higher mean over the seeds the labeled-only arms share,
    else over each one's own), each test scan's Dice
    averaged over the seeds both finished, paired per scan (``vs_seed_mean``, over ``vs_seeds``)."""
    by_arm = {arm: {s: t[arm] for s, t in tests_by_seed.items() if t.get(arm) is not None} for arm in ARMS}
    dice = {arm: [100 * t["mean_raw"]["dice"] for t in tests.values()] for arm, tests in by_arm.items() if tests}
    bases = [a for a in LABELED_ONLY_ARMS if a in dice]
    both = sorted(set.intersection(*(set(by_arm[a]) for a in bases))) if bases else []

    def base_mean(arm: str) -> float:  # on the seeds the labeled-only arms share, if any
        return float(np.mean([100 * by_arm[arm][s]["mean_raw"]["dice"] for s in both])) if both else \
            float(np.mean(dice[arm]))

    best = max(bases, key=base_mean) if bases else None
    arms = {}
    for arm, values in dice.items():
        shared = [s for s in by_arm[arm] if best is not None and arm != best and s in by_arm[best]]
        vs = la_study.paired(_seed_mean(by_arm[arm], shared), _seed_mean(by_arm[best], shared), "raw") if shared \
            else None
        arms[arm] = {"seeds": list(by_arm[arm]), "dice": values, "mean": float(np.mean(values)),
                     "min": float(np.min(values)), "max": float(np.max(values)), "vs_seed_mean": vs,
                     "vs_seeds": shared}
    return {"best_labeled_only": best, "arms": arms}


def _regime_table(regime: Path, tests: dict, best: str | None, base: dict | None, base_seed: int,
                  seed: int) -> dict:
    """One regime's rows: iterations, CPU and wall minutes, validation and test Dice, and each arm against
    ``best`` (the better labeled-only arm, of seed ``base_seed``) per test scan; the table under ``_table``."""
    rows, summary = [], {}
    versus = best if base_seed == seed else f"{best} (seed {base_seed})"
    for arm, test in tests.items():
        val = _load(regime / arm, "val")
        vs = la_study.paired(test, base, "raw") if base is not None and (arm != best or base_seed != seed) else None
        done = [json.loads(ln) for ln in (regime / arm / "log.jsonl").read_text().splitlines() if '"done"' in ln]
        cpu = cpu_account.cpu_minutes(regime / f"{arm}.cpu.jsonl")
        summary[arm] = {"iterations": la_study.final_iteration(regime / arm),
                        "cpu_minutes": cpu if cpu is not None else float("nan"),
                        "wall_minutes": done[-1]["elapsed_s"] / 60 if done else float("nan"),
                        "test_raw": 100 * test["mean_raw"]["dice"], "test_lcc": 100 * test["mean_lcc"]["dice"],
                        "val_raw": 100 * val["mean_raw"]["dice"] if val else float("nan"), "versus": versus, "vs": vs}
        rows.append([arm, summary[arm]["iterations"], round(summary[arm]["cpu_minutes"], 1),
                     round(summary[arm]["wall_minutes"], 1), summary[arm]["val_raw"], summary[arm]["test_raw"],
                     summary[arm]["test_lcc"],
                     f"{vs['mean']:+.2f} ({vs['higher']}/{vs['lower']}, {common.p_text(vs['p'])})" if vs else ""])
    if rows:
        summary["_table"] = common.markdown_table(
            ["arm", "iterations", "CPU min (trainer + loader)", "wall min (shared CPU)", "val Dice %", "test Dice %",
             "test, largest comp.", f"arm - {versus} per case (higher/lower, Wilcoxon p)"], rows)
    return summary


def _report_teacher(run_dir: Path) -> None:
    """The teacher study's table of one arm, if it was measured (``teacher`` action)."""
    path = run_dir / "teacher_dice.json"
    if not path.exists():
        return
    study = json.loads(path.read_text())
    print(f"\n{run_dir.parent.name} {run_dir.name}: Dice % on {len(study['cases'])} unlabeled training scans and on "
          "the replayed training batches\n")
    print(common.markdown_table(
        ["iteration", "teacher, scans", "student, scans", "teacher pseudo-labels, crops", "pasted targets",
         "pasted targets, pseudo-labelled part"],
        [[r["iteration"], 100 * r["teacher_scan_mean"], 100 * r["student_scan_mean"], 100 * r["replay_crop_dice_mean"],
          100 * r["replay_mixed_dice_mean"], 100 * r["replay_pseudo_part_dice_mean"]] for r in study["checkpoints"]]))


def _load(run_dir: Path, split: str) -> dict | None:
    path = run_dir / f"score_{split}.json"
    return json.loads(path.read_text()) if path.exists() else None


ARCHIVED = ("score_test.json", "score_val.json", "teacher_dice.json")  # an arm's small result files


def archive(out: Path, to: Path) -> list[Path]:
    """Copy every finished arm's results from the study folder ``out`` into ``to`` (in the repository:
    bench/results/copy-paste-la), laid out as ``out`` so that ``report --out TO`` reads them: the scores, the
    teacher study, the CPU ledger and the ``done`` event of its log; no model, no machine paths. Returns the arms
    copied."""
    copied = []
    for run_dir in sorted(out.glob("L*_*min_seed*/*/")):
        if not (run_dir / "score_test.json").exists():
            continue
        target = to / run_dir.parent.name / run_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for name in ARCHIVED:
            if (run_dir / name).exists():
                common.write_json(target / name, common.without_paths(json.loads((run_dir / name).read_text())))
        done = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if '"done"' in ln]
        kept = [{k: d[k] for k in ("event", "iteration", "elapsed_s") if k in d} for d in done[-1:]]  # no paths
        (target / "log.jsonl").write_text("".join(json.dumps(d) + "\n" for d in kept))
        ledger = run_dir.parent / f"{run_dir.name}.cpu.jsonl"
        if ledger.exists():
            (to / run_dir.parent.name / ledger.name).write_text(ledger.read_text())
        copied.append(target)
    return copied


def load_costs(path: Path | None, plan: str = "la") -> dict[str, float]:
    """``STEP_SECONDS``, or the CPU seconds per step of bench/speed/mode_step_cost.py's ``--json`` file, measured on
    ``plan`` (a file without ``"plan"`` is of the LA plan, the only one it measured before ``--plan``)."""
    if path is None:
        return dict(STEP_SECONDS)
    body = json.loads(path.read_text())
    found = body.get("plan", "la")
    if found != plan:
        raise SystemExit(f"error: {path} has the step costs of the {found} plan, not of the {plan} plan this "
                         f"study trains; measure them with bench/speed/mode_step_cost.py --plan {plan}")
    return {r["variant"]: float(r["cpu_s"]) for r in body["rows"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("run", "teacher", "report", "archive"))
    p.add_argument("--out", type=Path, required=True, help="folder for runs and scores (outside the repository)")
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    p.add_argument("--labeled", type=int, nargs="+", default=[4])
    p.add_argument("--minutes", type=float, nargs="+", default=[30.0, 90.0], help="CPU minutes per arm")
    p.add_argument("--seed", type=int, nargs="+", default=[1337], help="one or more seeds (each a regime)")
    p.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    p.add_argument("--stage1-fraction", type=float, default=2000 / 17000,
                   help="copy-paste-teacher arms: fraction of the run in stage 1 (default BCP LA's 2000 / 17000)")
    p.add_argument("--costs", type=Path, help="a bench/speed/mode_step_cost.py --json file (default STEP_SECONDS)")
    p.add_argument("--jobs", type=int, default=2, help="arms trained at once")
    p.add_argument("--cases", type=int, default=20, help="teacher: unlabeled scans scored per checkpoint")
    p.add_argument("--replay", type=int, default=8, help="teacher: training batches replayed per checkpoint")
    p.add_argument("--json", type=Path)
    p.add_argument("--to", type=Path, default=common.REPO / "bench" / "results" / "copy-paste-la",
                   help="archive: where the results go (default bench/results/copy-paste-la)")
    args = p.parse_args(argv)
    args.arms = args.arms.split(",")
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"error: unknown arm(s) {', '.join(unknown)}; use {', '.join(ARMS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.action == "archive":
        for target in archive(args.out, args.to):
            print(f"archived {target}")
    elif args.action == "report":
        result = report(args.out, args.labeled, args.minutes, args.seed)
        if args.json:
            common.write_json(args.json, result)
    elif args.action == "teacher":
        for minutes in args.minutes:
            for labeled in args.labeled:
                for seed in args.seed:
                    for arm in (a for a in args.arms if ARMS[a][3] is not None):
                        run_dir = regime_dir(args.out, labeled, minutes, seed) / arm
                        if (run_dir / "checkpoints").is_dir():
                            teacher_study(run_dir, args.data, args.cases, args.replay)
    else:
        run(args, load_costs(args.costs))


if __name__ == "__main__":
    main()
