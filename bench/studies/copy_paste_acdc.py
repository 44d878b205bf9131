"""The copy-paste teacher (BCP + DTC) against labeled-only, copy-paste labeled-only and DTC on ACDC's 2-D plan, at
equal CPU time.

    python bench/studies/copy_paste_acdc.py run --labeled 3 7 --minutes 30 --seed 1337 --out DIR [--jobs 2]
        [--arms seg,copy-paste,dtc,cpt,cpt_nocons] [--costs F.json] [--stage1-fraction 0.25] [--data ACDC]
        [--teacher-lr run|stage2]
    python bench/studies/copy_paste_acdc.py report --labeled 3 7 --minutes 30 --seed 1337 2024 --out DIR
        [--markdown F.md] [--json F.json]
    python bench/studies/copy_paste_acdc.py archive --out DIR --to bench/results/copy-paste-acdc
    python bench/studies/copy_paste_acdc.py report --labeled 3 7 --minutes 30 --seed 1337 2024
        --out bench/results/copy-paste-acdc

Regime: the first ``--labeled`` patients of ACDC's ``train.list`` labeled, the other ``70 - labeled`` unlabeled (their
labels never used; only the arms that learn from unlabeled scans, dtc and the teacher, see them). Every arm is one
``bench/studies/train_acdc.py`` run on its 2-D plan (``PLAN``: bench/results/acdc.md, "Stage 11"), fp32, one torch
thread (``OMP_NUM_THREADS=1``) and one loader process, with ``--seed``. The arms are copy_paste_la.py's
(``ARMS``: ``seg``, ``copy-paste`` = ``--mode copy-paste --no-cp-levelset --no-cp-consistency``, BCP's stage 1 for
the whole budget, ``dtc``, ``cpt`` = ``--mode copy-paste-teacher`` with level set and consistency, ``cpt_nocons``
without consistency; ``bcp``, BCP's own recipe, only when named). The teacher's stage 1 is ``--stage1-fraction`` of
its run (default BCP's ACDC schedule, 10000 of 40000 iterations: train_acdc.BCP_ACDC_STAGE1_FRACTION), its lr steps
fitted to the whole run; ``--teacher-lr stage2`` keeps lr 0.01 through stage 1 and puts the steps at 5/12 and 10/12
of stage 2 (bench/results/copy-paste-teacher-acdc.md, ACDC Stage 13: with ``--stage1-fraction 0.65``, chosen on
``val.list``; Stage 13's runs passed those steps as ``--lr-steps``, one iteration at most from train_acdc.py's
``--teacher-lr stage2`` that ``run`` now passes). A study folder holds one recipe (``teacher_recipe.json``; another
is refused).

Equal CPU time: an arm's budget is ``--minutes x 60 / (CPU seconds per step)`` iterations (the costs measured on
this plan, ``MEASURED_COSTS``; or ``--costs``; ``STEP_SECONDS`` without either), run with ``train_acdc.py
--minutes 0 --iterations N`` (schedule fitted to N), as in copy_paste_la.py (an iteration budget does not depend on
how the shared cores are split). Each training runs under
bench/lib/cpu_account.py, whose ledger (``<arm>/cpu.jsonl``) counts the process CPU seconds of the trainer and its
loader; the report shows them. Only the final model is scored, once, outside the ledger: ``train_acdc.py --assess``
(``val.list`` chooses the largest-component post-processing, then ``test.list``, MedPy per class).

Layout: ``DIR/L<labeled>_<minutes>min_seed<seed>/<arm>/`` holds train_acdc.py's run (``run_<mode>/``, manifest),
``result.json`` (its ``--json``, scores added by ``--assess``), ``cpu.jsonl`` and ``train.out`` (its output).
``run`` is resumable: an arm whose result.json has test scores is skipped, one with an unscored result.json is only
scored, one with a run folder resumes (``train_acdc.py --resume``), the others start; ``--jobs`` train at once.

``report``: per regime, one row per arm and seed (iterations, CPU minutes from the ledger, test Dice mean and per
class, and the patient-by-patient comparison with the better labeled-only arm of the same seed: mean difference of
each patient's mean Dice over the classes, patients higher / lower, Wilcoxon signed-rank p), then one row per arm
over the seeds (mean and range of the test Dice, and the same comparison on each patient's Dice averaged over the
seeds both arms have). The better labeled-only arm (seg or copy-paste) is the one with the higher test Dice averaged
over the seeds that both have (over all of its seeds when they share none); a seed it has no run for is compared
with the other labeled-only arm of that seed, and the cell names it. ``archive`` copies every scored arm's result
(scores, iterations, CPU minutes; no model, no machine paths) to ``--to/<regime>/<arm>.json``; ``report --out`` reads
such a folder as well as a study folder.
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
import copy_paste_la
import cpu_account
import train_acdc

ARMS = copy_paste_la.ARMS  # (mode, options, cost variant of stage 1 / the run, cost variant of stage 2 or None)
DEFAULT_ARMS = copy_paste_la.DEFAULT_ARMS
LABELED_ONLY_ARMS = copy_paste_la.LABELED_ONLY_ARMS
DEFAULT_DATA = common.REPO.parent / "shared" / "data" / "acdc"  # ../shared/data/acdc beside the clone
# The 2-D plan of bench/results/acdc.md, "Stage 11" (the best ACDC models on this CPU so far).
PLAN = ["--dims", "2", "--spacing", "1.5", "1.5", "1", "--patch", "128", "128", "4", "--base-filters", "8",
        "--nnunet-augment", "--workers", "1"]
# CPU seconds per step (trainer + its loader, one thread) of that plan: Stage 11's process-monitored totals, both
# models side by side beside other work on the 2-core VM (bench/results/acdc.md, "Stage 11": labeled-only 6911
# iterations in 29.3 CPU minutes, DTC 3159 in 28.8), so already the cost of a step on a shared machine. The
# copy-paste variants: their cost relative to seg on LA (copy_paste_la.SEG_RATIOS, bench/speed/mode_step_cost.py),
# not measured on this plan; the ledger records what each arm really used.
SEG_STEP_SECONDS = 29.3 * 60 / 6911
STEP_SECONDS = {"seg": SEG_STEP_SECONDS, "dtc": 28.8 * 60 / 3159,
                **{variant: ratio * SEG_STEP_SECONDS for variant, ratio in copy_paste_la.SEG_RATIOS.items()}}
# The step costs measured on that plan, every variant in one run (bench/speed/mode_step_cost.py --plan acdc-2d,
# 2026-12-07, 2-core AVX2 EPYC VM beside two study trainings; bench/results/copy-paste-teacher-acdc.md, "ACDC Stage
# 12"): what ``run`` sizes the arms with unless ``--costs`` names another file. The 2026-12-07 runs were sized with it.
MEASURED_COSTS = common.REPO / "bench" / "results" / "copy-paste-acdc" / "step_costs_acdc2d.json"
RESULT = "result.json"
RECIPE = "teacher_recipe.json"  # the study folder's --stage1-fraction and --teacher-lr (check_recipe)
DEFAULT_RECIPE = {"stage1_fraction": train_acdc.BCP_ACDC_STAGE1_FRACTION, "teacher_lr": "run"}
LEDGER = "cpu.jsonl"
arm_iterations = copy_paste_la.arm_iterations  # minutes x 60 / (the arm's CPU seconds per step), stages weighted
regime_dir = copy_paste_la.regime_dir  # DIR/L<labeled>_<minutes>min_seed<seed>


def train_command(arm: str, arm_dir: Path, data: Path, labeled: int, unlabeled: int, iterations: int, seed: int,
                  fraction: float, teacher_lr: str = "run") -> list[str]:
    """train_acdc.py's command line (no scoring) for one arm: its mode and switches, ``labeled`` labeled patients
    (and ``unlabeled`` more for the arms that use them), exactly ``iterations`` steps, ``seed``; ``--resume``
    when ``arm_dir`` already holds the run. Teacher arms: ``--stage1-fraction`` and ``--teacher-lr teacher_lr``
    (train_acdc.py's: "stage2" keeps lr 0.01 through stage 1 and moves the steps fitted to the run to the same
    fractions of stage 2, DTCCore.training.schedule.stage2_lr_steps; "run" keeps them where they are)."""
    from DTCCore.config import UNLABELED_MODES

    mode, options, _, second = ARMS[arm]
    command = [sys.executable, str(Path(train_acdc.__file__).resolve()), "--data", str(data), "--out", str(arm_dir),
               "--mode", mode, *options, "--labeled", str(labeled),
               "--unlabeled", str(unlabeled if mode in UNLABELED_MODES else 0),
               "--minutes", "0", "--iterations", str(iterations), "--seed", str(seed), *PLAN,
               "--no-assess", "--json", str(arm_dir / RESULT)]
    if second is not None:
        command += ["--stage1-fraction", repr(fraction)]
        command += ["--teacher-lr", teacher_lr]
    if (arm_dir / f"run_{mode}").is_dir():
        command.append("--resume")
    return command


def assess_command(arm_dir: Path, data: Path) -> list[str]:
    """train_acdc.py's scoring of an arm's final model (val.list choice, then test.list), into its result.json."""
    return [sys.executable, str(Path(train_acdc.__file__).resolve()), "--data", str(data), "--assess",
            str(arm_dir / RESULT)]


def arm_state(arm_dir: Path) -> str:
    """``"scored"`` (result.json with test scores), ``"trained"`` (result.json, not scored yet) or ``"train"``."""
    path = arm_dir / RESULT
    if not path.exists():
        return "train"
    return "scored" if "test" in json.loads(path.read_text()) else "trained"


def start_training(arm_dir: Path, command: list[str]) -> subprocess.Popen:
    """One arm's training under the CPU ledger, its output appended to ``arm_dir/train.out``."""
    arm_dir.mkdir(parents=True, exist_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {arm_dir.parent.name} {arm_dir.name}: {' '.join(command)}", flush=True)
    log = open(arm_dir / "train.out", "a")  # noqa: SIM115 - handed to the child process, closed when it ends
    ledger = [sys.executable, str(common.LIB / "cpu_account.py"), str(arm_dir / LEDGER), "--"]
    return subprocess.Popen(ledger + command, cwd=common.REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def score(arm_dir: Path, data: Path) -> None:
    """Score a trained arm once (outside the ledger: the equal budget is training's)."""
    with open(arm_dir / "train.out", "a") as log:
        subprocess.run(["nice", "-n", "5", *assess_command(arm_dir, data)], cwd=common.REPO, check=True,
                       stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"[{time.strftime('%H:%M:%S')}] {arm_dir.parent.name} {arm_dir.name} scored", flush=True)


def plan(args: argparse.Namespace, costs: dict[str, float]) -> list[tuple[Path, list[str]]]:
    """``(arm folder, training command)`` of every arm of every regime asked for."""
    patients = len(common.read_list(args.data, "train.list"))
    jobs = []
    for minutes in args.minutes:
        for labeled in args.labeled:
            for arm in args.arms:
                arm_dir = regime_dir(args.out, labeled, minutes, args.seed) / arm
                its = arm_iterations(arm, minutes, costs, args.stage1_fraction)
                jobs.append((arm_dir, train_command(arm, arm_dir, args.data.resolve(), labeled, patients - labeled,
                                                    its, args.seed, args.stage1_fraction,
                                                    getattr(args, "teacher_lr", "run"))))
    return jobs


def check_recipe(out: Path, recipe: dict) -> None:
    """Record the teacher recipe of the study folder ``out`` (``RECIPE``), or refuse one that differs from it: the
    arm folders do not name it, so one folder holds one recipe."""
    path = out / RECIPE
    # a folder with runs but no record predates --teacher-lr: its teacher arms ran the defaults
    before = json.loads(path.read_text()) if path.exists() else DEFAULT_RECIPE if any(out.glob("L*min_seed*")) else None
    if before is not None:
        if before != recipe:
            raise SystemExit(f"error: {out} holds a study with teacher recipe {before}, not {recipe}; "
                             "use another --out for another recipe")
    if not path.exists():
        common.write_json(path, recipe)


def run(args: argparse.Namespace, costs: dict[str, float], poll_s: float = 5.0) -> None:
    """Train (or resume) and score every arm not scored yet, ``args.jobs`` trainings at a time."""
    pending = plan(args, costs)
    running: list[tuple[Path, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            arm_dir, command = pending.pop(0)
            state = arm_state(arm_dir)
            if state == "trained":
                score(arm_dir, args.data)
            elif state == "train":
                running.append((arm_dir, start_training(arm_dir, command)))
        if running:
            time.sleep(poll_s)
        for item in list(running):
            arm_dir, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                copy_paste_la.stop_all([p for _, p in running])  # the others stop with a checkpoint: resumable
                raise SystemExit(f"error: {arm_dir} failed (exit {proc.returncode}); see {arm_dir / 'train.out'}")
            score(arm_dir, args.data)


def load_arm(folder: Path, labeled: int, minutes: float, seed: int, arm: str) -> dict | None:
    """An arm's scored result with its ``"cpu_minutes"``, from a study folder (``<regime>/<arm>/result.json`` and
    its ledger) or an archive (``<regime>/<arm>.json``); None when it has none."""
    regime = regime_dir(folder, labeled, minutes, seed)
    archived = regime / f"{arm}.json"
    if archived.exists():
        result = json.loads(archived.read_text())
    elif arm_state(regime / arm) == "scored":
        result = json.loads((regime / arm / RESULT).read_text())
        result["cpu_minutes"] = cpu_account.cpu_minutes(regime / arm / LEDGER)
    else:
        return None
    if result["cpu_minutes"] is None:  # no ledger
        result["cpu_minutes"] = float("nan")
    return result


def _dice(result: dict) -> dict[str, float]:
    """Test Dice % (post-processing chosen on val.list): ``"mean"`` over the classes and each class's."""
    means = result["test"]["means"]
    return {key: 100 * means[key]["dice"] for key in ("mean", *(str(c) for c in train_acdc.CLASSES))}


def _versus(stats: dict | None) -> str:
    if stats is None:
        return ""
    against = f", against {stats['against']}" if stats.get("against") else ""
    return f"{stats['mean']:+.2f} ({stats['higher']}/{stats['lower']}, {common.p_text(stats['p'])}{against})"


def _better_labeled_only(by_arm: dict[str, dict[int, dict]]) -> str | None:
    """Of the labeled-only arms' results ``{arm: {seed: result}}``, the arm with the higher mean test Dice over the
    seeds they all have (over each arm's own seeds when they share none); None without any."""
    if not by_arm:
        return None
    shared = set.intersection(*(set(by_seed) for by_seed in by_arm.values()))
    return max(by_arm, key=lambda a: np.mean([_dice(r)["mean"] for s, r in by_arm[a].items()
                                              if not shared or s in shared]))


def _seed_base(found: dict, bases: list[str], best: str | None, arm: str, seed: int) -> str | None:
    """The labeled-only arm that ``arm``'s run of ``seed`` is compared with: ``best``, or where it has no run of
    that seed the other labeled-only arm's; None for ``best`` itself, or without another of that seed."""
    if arm == best:
        return None
    return next((a for a in [best, *bases] if a is not None and a != arm and seed in found[a]), None)


def _seed_mean_patients(results: list[dict]) -> dict[str, float]:
    """Each test patient's mean Dice over the classes, averaged over ``results`` (one per seed)."""
    per = [train_acdc._patient_dice(r) for r in results]
    return {case: float(np.mean([p[case] for p in per])) for case in per[0]}


def report_regime(folder: Path, labeled: int, minutes: float, seeds: list[int]) -> tuple[str, dict]:
    """The markdown of one regime (module docstring) and the numbers behind it."""
    found = {arm: {s: r for s in seeds if (r := load_arm(folder, labeled, minutes, s, arm)) is not None}
             for arm in ARMS}
    found = {arm: by_seed for arm, by_seed in found.items() if by_seed}
    bases = [a for a in LABELED_ONLY_ARMS if a in found]
    best = _better_labeled_only({a: found[a] for a in bases})
    rows, summary_rows, numbers = [], [], {"best_labeled_only": best, "arms": {}}
    for arm, by_seed in found.items():
        per_seed = {}
        for seed, r in by_seed.items():
            against = _seed_base(found, bases, best, arm, seed)
            vs = None
            if against is not None:
                vs = train_acdc.paired_stats(train_acdc._patient_dice(r),
                                             train_acdc._patient_dice(found[against][seed]))
                if against != best:
                    vs["against"] = against
            dice = _dice(r)
            per_seed[seed] = {"iterations": r["iterations"], "cpu_minutes": r["cpu_minutes"], "dice": dice,
                              f"vs_{best}": vs}
            rows.append([arm, seed, r["iterations"], round(r["cpu_minutes"], 1), dice["mean"],
                         *(dice[str(c)] for c in train_acdc.CLASSES), _versus(vs)])
        means = [v["dice"]["mean"] for v in per_seed.values()]
        common_seeds = [s for s in by_seed if best and arm != best and s in found[best]]
        vs = (train_acdc.paired_stats(_seed_mean_patients([by_seed[s] for s in common_seeds]),
                                      _seed_mean_patients([found[best][s] for s in common_seeds]))
              if common_seeds else None)
        numbers["arms"][arm] = {"seeds": per_seed, "mean_dice": float(np.mean(means)), "min_dice": min(means),
                                "max_dice": max(means), f"vs_{best}_seed_mean": vs}
        summary_rows.append([arm, len(means), f"{np.mean(means):.2f} [{min(means):.2f}, {max(means):.2f}]",
                             round(float(np.mean([v["cpu_minutes"] for v in per_seed.values()])), 1),
                             f"{_versus(vs)}{f' over {len(common_seeds)} seeds' if vs else ''}"])
    unlabeled = max([r["unlabeled"] for by_seed in found.values() for r in by_seed.values()], default=0)
    unlabeled_text = f" + {unlabeled} unlabeled" if unlabeled else ""
    title = (f"ACDC 2-D, {labeled} labeled{unlabeled_text}, {minutes:g} CPU minutes per arm, seeds "
             f"{', '.join(map(str, seeds))}; better labeled-only arm: {best or 'none scored'}")
    classes = [f"{name} %" for name in train_acdc.CLASSES.values()]
    versus = best or "labeled-only"
    text = "\n\n".join([
        title,
        common.markdown_table(["arm", "seed", "iterations", "CPU min (trainer + loader)", "test Dice %", *classes,
                               f"arm - {versus} per patient (higher/lower, Wilcoxon p)"], rows),
        common.markdown_table(["arm", "seeds", "test Dice % mean [min, max]", "CPU min, mean",
                               f"arm - {versus}, each patient's Dice averaged over the seeds (higher/lower, p)"],
                              summary_rows)])
    return text, numbers


def report(folder: Path, labeled_list: list[int], minutes_list: list[float], seeds: list[int]) -> tuple[str, dict]:
    """Every regime's tables (printed) and numbers."""
    texts, numbers = [], {}
    for minutes in minutes_list:
        for labeled in labeled_list:
            text, numbers[f"L{labeled}_{minutes:g}min"] = report_regime(folder, labeled, minutes, seeds)
            texts.append(text)
    return "\n\n".join(texts), numbers


def archive(out: Path, to: Path) -> list[Path]:
    """Copy every scored arm of the study in ``out`` to ``to/<regime>/<arm>.json`` (module docstring)."""
    written = []
    for result_path in sorted(out.glob(f"L*min_seed*/*/{RESULT}")):
        arm_dir = result_path.parent
        if arm_dir.name not in ARMS or arm_state(arm_dir) != "scored":
            continue
        result = json.loads(result_path.read_text())
        result.pop("model", None)
        result["test_raw"] = {k: v for k, v in result.get("test_raw", {}).items() if k != "rows"}
        ledger = cpu_account.cpu_minutes(arm_dir / LEDGER)  # None without a ledger
        result.update(arm=arm_dir.name, cpu_minutes=ledger,
                      cpu_segments=len((arm_dir / LEDGER).read_text().splitlines()) if ledger is not None else 0)
        target = to / arm_dir.parent.name / f"{arm_dir.name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        common.write_json(target, common.without_paths(result))
        written.append(target)
    return written


def load_costs(path: Path | None) -> dict[str, float]:
    """``STEP_SECONDS``, or a JSON of CPU seconds per step: bench/speed/mode_step_cost.py's ``--json`` (``rows``)
    or ``{variant: seconds}``."""
    if path is None:
        return dict(STEP_SECONDS)
    body = json.loads(path.read_text())
    costs = copy_paste_la.load_costs(path, "acdc-2d") if "rows" in body else {k: float(v) for k, v in body.items()}
    missing = sorted(set(STEP_SECONDS) - set(costs))
    if missing:
        raise SystemExit(f"error: {path} has no cost for {', '.join(missing)}")
    return costs


def main(argv: list[str] | None = None) -> dict | list[Path] | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("run", "report", "archive"))
    p.add_argument("--out", type=Path, required=True,
                   help="study folder (outside the repository); report: also an archive folder")
    p.add_argument("--to", type=Path, help="archive: the repository folder for the results")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ACDC folder (train.list, val.list, test.list)")
    p.add_argument("--labeled", type=int, nargs="+", default=[3, 7])
    p.add_argument("--minutes", type=float, nargs="+", default=[30.0], help="CPU minutes per arm")
    p.add_argument("--seed", type=int, nargs="+", default=[1337], help="run: one seed; report: every seed to show")
    p.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    p.add_argument("--stage1-fraction", type=float, default=train_acdc.BCP_ACDC_STAGE1_FRACTION,
                   help="teacher arms: fraction of the run in stage 1 (default BCP's ACDC 10000 of 40000)")
    p.add_argument("--teacher-lr", choices=("run", "stage2"), default="run",
                   help="teacher arms: lr steps fitted to the whole run (run), or lr 0.01 through stage 1 and the "
                        "steps at 5/12 and 10/12 of stage 2 (stage2; Stage 13's recipe with --stage1-fraction 0.65). "
                        "Keep one recipe per --out folder")
    p.add_argument("--costs", type=Path, help="CPU seconds per step per variant, JSON (default MEASURED_COSTS, "
                                              "else STEP_SECONDS)")
    p.add_argument("--jobs", type=int, default=2, help="arms trained at once")
    p.add_argument("--markdown", type=Path, help="report: also write the tables here")
    p.add_argument("--json", type=Path, help="report: also write the numbers here")
    args = p.parse_args(argv)
    args.arms = args.arms.split(",")
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arm(s) {', '.join(unknown)}; use {', '.join(ARMS)}")
    if args.action == "archive":
        if args.to is None:
            p.error("archive needs --to")
        written = archive(args.out, args.to)
        print(f"{len(written)} scored arm(s) archived in {args.to}")
        return written
    if args.action == "report":
        text, numbers = report(args.out, args.labeled, args.minutes, args.seed)
        print(text)
        if args.markdown:
            args.markdown.write_text(text + "\n")
        if args.json:
            common.write_json(args.json, numbers)
        return numbers
    if len(args.seed) != 1:
        p.error("run trains one seed at a time (a study folder holds any number)")
    args.seed = args.seed[0]
    args.out.mkdir(parents=True, exist_ok=True)
    check_recipe(args.out, {"stage1_fraction": args.stage1_fraction, "teacher_lr": args.teacher_lr})
    run(args, load_costs(args.costs or (MEASURED_COSTS if MEASURED_COSTS.exists() else None)))
    return None


if __name__ == "__main__":
    main()
