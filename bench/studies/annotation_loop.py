"""The annotation loop, simulated on LA (issue 24): does a short fine-tune after each correction help,
and does the panel's Next case (dual-task disagreement) pick better scans than chance?

    python bench/studies/annotation_loop.py run --out DIR [--data ../shared/data/la2018] [--rounds 6] [--k 2]
        [--seeds 1 2] [--initial-minutes 30] [--finetune-minutes 8] [--parallel N] [--train-arg=--precision ...]
    python bench/studies/annotation_loop.py report --out DIR [--markdown F] [--json F]
        [--plot bench/results/annotation_loop.png]
    python bench/studies/annotation_loop.py --smoke [--out DIR]      # tiny synthetic version, about a minute

Start: the first 4 cases of ``train.list`` are labeled, the other 76 unlabeled (their labels hidden). The
first model is DTC on them for :data:`INITIAL_MINUTES`. Each round, in every arm: pick ``k`` of the
arm's unlabeled scans, reveal their labels (the annotator's corrected masks), fine-tune from the arm's
previous model (``--init-from``, ``--time-limit`` :data:`FINETUNE_MINUTES`), score the 20 ``test.list``
scans (``bench/lib/la_eval.py``, windows, native grid). Arms (the first model is shared):

- ``disagreement``: the picks are the top ``k`` of ``dtc rank`` over the arm's unlabeled scans with its
  current model, run through the panel's own job (``DTCSegmentationLib.jobs.rankjob.RankJob``, what Next case
  starts); DTC fine-tunes on the labeled scans and the remaining unlabeled ones;
- ``random-s<S>``: ``k`` at random (a fixed permutation per seed), DTC fine-tunes;
- ``labeled-only``: the disagreement arm's picks, fine-tunes on the labeled scans only (``--mode seg``).

Every training runs as ``nice 5 python -m DTCCore train`` on the 2.0 mm plan of the bundled model
(``la_study.PLAN``), one torch thread and one loader process; the arms of a round train at once
(``--parallel``, default all), so give the run one free core per arm. Budgets are minutes (``--time-limit``,
what the panel's *Train for* does) or, with ``--initial-iterations`` / ``--finetune-iterations``, iterations
with the recipe's schedule fitted to them (``la_study.fitted_config``): the same result whatever else
loads the machine; a labeled-only fine-tune then gets ``la_study.EQUAL_TIME_RATIO`` x the iterations (its
step has half the crops: equal CPU time). Resumable: every stage writes its
output under ``--out`` (``<arm>/round_<r>/``: ``picks.json``, ``manifest.json``, ``run/model.pt``,
``score_test.json``, ``timing.json``); a stage whose output exists is skipped, a training with
checkpoints continues with ``--resume`` (SIGTERM to this script reaches the trainers, which checkpoint).
Deleting an output redoes that stage only, not the stages after it. CPU seconds per stage are the
user + system time of its process tree (``os.wait4``); a stage resumed after a stop counts only the
part after the stop. ``report`` (``annotation_loop_report.py``) prints the tables and draws the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import annotation_loop_report
import common
import la_study
from annotation_layout import (
    INITIAL_LABELED,
    Arm,
    Study,
    labeled_cases,
    load_study,
    model_path,
    round_dir,
    save_or_check_study,
    train_cases,
)

sys.path.insert(0, str(common.REPO / "DTCSegmentation"))  # the panel's job classes (they never import slicer)

from DTCCore.protocol import EVENT_KEY, Event, JobState  # noqa: E402
from DTCCore.training.runlog import read_log  # noqa: E402
from DTCSegmentationLib.jobs.rankjob import RankJob  # noqa: E402

K = 2  # issue 24: cases "corrected" per round
ROUNDS = 6  # issue 24: 4 -> 16 labeled
RANDOM_SEEDS = (1, 2)  # issue 24: at least 2 random seeds, the spread shown
# The first model's budget, our choice: under a quarter of the bundled model's 134 minutes, so that with the
# fine-tunes the loop stays far below it; ~1,700 iterations at the 1.03 s per DTC iteration of this plan on a
# quiet core (bench/results/la-model.md, the default LA model, stage 3: 3098 iterations in 53 min).
INITIAL_MINUTES = 30.0
# A round's fine-tune: issue 24 asks for 8-10 CPU minutes; the lower end keeps the loop's training at
# 30 + 6 x 8 = 78 minutes, against the 134 minutes of the bundled model (bench/results/la-model.md, 88.06 %).
FINETUNE_MINUTES = 8.0
RANK_TIMEOUT_S = 3600.0  # our bound for one ranking of 76 scans (about 3 s a scan on one core)
NICE = "5"  # few_label_la.train_command's niceness, for the scoring too: the study yields to interactive work
# --smoke: 10 synthetic train cases (4 labeled, 6 unlabeled), 2 test cases, 2 rounds, a tiny network (base 2,
# 16^3 patch, the scans' own grid, no loader process: options given last override la_study.PLAN's) and a
# few iterations with the schedule fitted (no BatchNorm pass at the end): the structure of the study in about
# 150 CPU seconds (bench/lib/synthetic_la.synthetic_data).
SMOKE_TRAIN, SMOKE_TEST, SMOKE_ROUNDS = 10, 2, 2
SMOKE_PLAN = ["--spacing", "native", "--patch", "16", "16", "16", "--base-filters", "2", "--workers", "0"]
SMOKE_INITIAL, SMOKE_FINETUNE = {"iterations": 8}, {"iterations": 4}


def update_timing(folder: Path, stage: str, record: dict) -> None:
    path = folder / "timing.json"
    timing = json.loads(path.read_text()) if path.is_file() else {}
    timing[stage] = record
    common.write_json(path, timing)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---- picking ----
class _RankJob(RankJob):
    """The panel's ranking job with this interpreter (the panel prefers ``PythonSlicer`` when on PATH)."""

    def command(self, python: str | None = None) -> list[str]:
        return super().command(sys.executable)


def rank_pool(model: Path, images: list[Path], timeout_s: float) -> tuple[list[tuple[str, float]], dict]:
    """``dtc rank`` through the panel's RankJob (one thread, CPU): [(image, mean disagreement)] highest first."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    job = _RankJob(Path(tempfile.mkdtemp(prefix="dtc-loop-rank-")), images, str(model), "cpu", threads=1)
    job.start()
    job.wait(timeout_s)
    if job.state == JobState.RUNNING:
        job.cancel()
        job.wait(120)
        raise SystemExit(f"error: ranking with {model} took over {timeout_s:g} s; raise RANK_TIMEOUT_S")
    if job.state != JobState.DONE:
        raise SystemExit(f"error: ranking with {model} failed: {job.error}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return job.ranking, {"wall_s": round(time.monotonic() - t0, 1), "cpu_s": round(cpu, 1), "scans": len(images)}


def pick(out: Path, study: Study, arm: Arm, r: int) -> None:
    """Write ``picks.json`` of round ``r``: the revealed cases, the labeled and unlabeled sets after it."""
    folder = round_dir(out, arm, r)
    if (folder / "picks.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    data, cases = Path(study.data), train_cases(study)
    before = labeled_cases(out, study, arm, r - 1)
    pool = [c for c in cases if c not in before]
    ranking = None
    if arm.picker == "rank":
        images = {str(common.case_files(data, c)[0]): c for c in pool}
        ranked, timing = rank_pool(model_path(out, arm, r - 1), [Path(p) for p in images], RANK_TIMEOUT_S)
        ranking = [[images[p], round(s, 6)] for p, s in ranked]
        revealed = [c for c, _ in ranking[:study.k]]
        update_timing(folder, "rank", timing)
    elif arm.picker == "random":
        order = np.random.default_rng(arm.seed).permutation(cases[INITIAL_LABELED:]).tolist()
        revealed = [c for c in order if c in pool][:study.k]
    elif arm.picker == "follow":
        leader = next(a for a in study.arms if a.picker == "rank")
        revealed = json.loads((round_dir(out, leader, r) / "picks.json").read_text())["revealed"]
    else:
        raise SystemExit(f"error: unknown picker {arm.picker!r}")
    common.write_json(folder / "picks.json", {
        "round": r, "arm": arm.name, "picker": arm.picker, "revealed": revealed, "labeled": before + revealed,
        "unlabeled": [c for c in pool if c not in revealed], "ranking": ranking})
    say(f"{arm.name} round {r}: reveals {', '.join(revealed)}")


# ---- training and scoring ----
def write_manifest(folder: Path, data: Path, labeled: list[str], unlabeled: list[str]) -> Path:
    path = folder / "manifest.json"
    common.write_json(path, {
        "labeled": [dict(zip(("image", "label"), map(str, common.case_files(data, c)))) for c in labeled],
        "unlabeled": [str(common.case_files(data, c)[0]) for c in unlabeled]})
    return path


def budget_args(out: Path, budget: dict) -> list[str]:
    """``dtc train`` options of a budget: ``--time-limit M``, or a config with the schedule fitted to N iterations."""
    if "minutes" in budget:
        return ["--time-limit", f"{float(budget['minutes']):g}"]
    return ["--config", str(la_study.fitted_config(out, int(budget["iterations"])))]


def train_command(run_dir: Path, manifest: Path, mode: str, budget: list[str], init: Path | None,
                  extra: list[str]) -> list[str]:
    """``nice 5 python -m DTCCore train`` on the bundled model's plan, one thread, one loader; ``--resume``
    when the run has checkpoints."""
    cmd = ["nice", "-n", NICE, sys.executable, "-m", "DTCCore", "train", str(manifest), "-o", str(run_dir),
           "--mode", mode, *la_study.PLAN, *budget, "--workers", "1", "--threads", "1", "--jsonl", *extra]
    if init is not None:
        cmd += ["--init-from", str(init)]
    if any((run_dir / "checkpoints").glob("*.pt")):
        cmd.append("--resume")
    return cmd


def train_stage(out: Path, study: Study, arm: Arm | None, r: int) -> tuple | None:
    """``(key, command, log)`` of round ``r``'s training, or None when its model.pt exists."""
    folder = round_dir(out, arm, r)
    run_dir = folder / "run"
    if (run_dir / "model.pt").is_file():
        return None
    if (run_dir / "config.json").is_file() and not any((run_dir / "checkpoints").glob("*.pt")):
        shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to resume, start it again
    data, cases = Path(study.data), train_cases(study)
    if r == 0:
        labeled, unlabeled, mode, budget, init = (cases[:INITIAL_LABELED], cases[INITIAL_LABELED:], "dtc",
                                                  study.initial_budget, None)
    else:
        picks = json.loads((folder / "picks.json").read_text())
        labeled, mode, budget, init = picks["labeled"], arm.mode, study.finetune_budget, model_path(out, arm, r - 1)
        if arm.mode == "seg" and "iterations" in budget:  # equal CPU time: a labeled-only step has half the crops
            budget = {"iterations": round(la_study.EQUAL_TIME_RATIO * int(budget["iterations"]))}
        unlabeled = picks["unlabeled"] if arm.mode == "dtc" else []
    folder.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(folder, data, labeled, unlabeled)
    cmd = train_command(run_dir, manifest, mode, budget_args(out, budget), init, study.train_args)
    return (arm.name if arm else "initial", r), cmd, folder / "train.log"


def score_stage(out: Path, study: Study, arm: Arm | None, r: int) -> tuple | None:
    """``(key, command, log)`` scoring round ``r``'s model on test.list, or None when scored."""
    folder = round_dir(out, arm, r)
    if (folder / "score_test.json").is_file():
        return None
    cmd = ["nice", "-n", NICE, sys.executable, str(common.LIB / "la_eval.py"), str(model_path(out, arm, r)),
           "--data", study.data, "--list", "test.list", "--windows", "--threads", "1",
           "--json", str(folder / "score_test.json")]
    return (arm.name if arm else "initial", r), cmd, folder / "score.log"


_RUNNING: dict = {}  # pid -> Popen of run_parallel, for the SIGTERM handler


def _forward_sigterm(signum, frame) -> None:
    for proc in list(_RUNNING.values()):
        proc.send_signal(signal.SIGTERM)  # trainers save a checkpoint; the next run resumes from it
    raise SystemExit(f"stopped by signal {signum}; run the same command again to continue")


def run_parallel(stages: list[tuple], parallel: int) -> dict:
    """Run ``(key, command, log)`` stages, ``parallel`` at once; per key: returncode, wall_s, cpu_s (tree)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, started, results = list(stages), {}, {}
    while pending or _RUNNING:
        while pending and len(_RUNNING) < max(1, parallel):
            key, cmd, log = pending.pop(0)
            with open(log, "ab") as fh:
                fh.write((" ".join(map(str, cmd)) + "\n").encode())
                fh.flush()
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=common.REPO, env=env)
            _RUNNING[proc.pid], started[proc.pid] = proc, (key, time.monotonic(), log, "--resume" in cmd)
            say(f"{key[0]} round {key[1]}: {log.stem} started{' (--resume)' if '--resume' in cmd else ''} (log {log})")
        pid, status, usage = os.wait4(-1, 0)
        proc = _RUNNING.pop(pid, None)
        if proc is None:
            continue
        proc.returncode = os.waitstatus_to_exitcode(status)
        key, t0, log, resumed = started.pop(pid)
        results[key] = {"returncode": proc.returncode, "wall_s": round(time.monotonic() - t0, 1),
                        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "log": str(log), "resumed": resumed}
    failed = [f"{k[0]} round {k[1]} (exit {v['returncode']}, see {v['log']})" for k, v in results.items()
              if v["returncode"] != 0]
    if failed:
        raise SystemExit("error: " + "; ".join(failed))
    return results


def train_all(out: Path, study: Study, entries: list[tuple[Arm | None, int]], parallel: int) -> None:
    stages = [s for s in (train_stage(out, study, a, r) for a, r in entries) if s is not None]
    arms = {(a.name if a else "initial", r): a for a, r in entries}
    for key, result in run_parallel(stages, parallel).items():
        run_dir = round_dir(out, arms[key], key[1]) / "run"
        done = [e for e in read_log(run_dir) if e.get(EVENT_KEY) == Event.DONE][-1]
        update_timing(run_dir.parent, "train", {**result, "iterations": int(done["iteration"]),
                                                "trainer_s": done["elapsed_s"]})


def score_all(out: Path, study: Study, entries: list[tuple[Arm | None, int]], parallel: int) -> None:
    stages = [s for s in (score_stage(out, study, a, r) for a, r in entries) if s is not None]
    arms = {(a.name if a else "initial", r): a for a, r in entries}
    for key, result in run_parallel(stages, parallel).items():
        folder = round_dir(out, arms[key], key[1])
        update_timing(folder, "score", result)
        dice = json.loads((folder / "score_test.json").read_text())["mean_lcc"]["dice"]
        say(f"{key[0]} round {key[1]}: test Dice {100 * dice:.2f} % (largest component)")


def run(out: Path, study: Study, parallel: int) -> None:
    """Every stage not done yet, round by round; all arms of a round side by side."""
    signal.signal(signal.SIGTERM, _forward_sigterm)
    train_all(out, study, [(None, 0)], parallel)
    score_all(out, study, [(None, 0)], parallel)
    for r in range(1, study.rounds + 1):
        for arm in study.arms:
            pick(out, study, arm, r)
        entries = [(arm, r) for arm in study.arms]
        train_all(out, study, entries, parallel)
        score_all(out, study, entries, parallel)
        say(f"round {r} done: {INITIAL_LABELED + r * study.k} labeled")


def smoke_data(out: Path) -> Path:
    """The synthetic LA2018-like folder of the smoke (made once in ``<out>/data``); never ../shared."""
    from synthetic_la import synthetic_data

    folder = out / "data"
    if not (folder / "test.list").is_file():
        synthetic_data(folder, n_train=SMOKE_TRAIN, n_test=SMOKE_TEST)
    return folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=("run", "report"), default="run")
    p.add_argument("--out", type=Path, help="study folder, outside the repository (--smoke: a temporary one)")
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--k", type=int, default=K, help="cases revealed per round")
    p.add_argument("--seeds", type=int, nargs="+", default=list(RANDOM_SEEDS), help="seeds of the random arms")
    p.add_argument("--initial-minutes", type=float, default=INITIAL_MINUTES, help="first model: --time-limit")
    p.add_argument("--finetune-minutes", type=float, default=FINETUNE_MINUTES, help="each fine-tune: --time-limit")
    p.add_argument("--initial-iterations", type=int, help="first model: this many iterations instead of minutes")
    p.add_argument("--finetune-iterations", type=int,
                   help="each DTC fine-tune: this many iterations instead (labeled-only: x EQUAL_TIME_RATIO)")
    p.add_argument("--train-arg", action="append", default=[], help="extra dtc train argument (repeat)")
    p.add_argument("--parallel", type=int, default=0, help="processes at once (default: one per arm)")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic study (2 rounds, seconds of training)")
    p.add_argument("--markdown", type=Path, help="report: also write the tables here")
    p.add_argument("--json", type=Path, help="report: also write the numbers here")
    p.add_argument("--plot", type=Path, help="report: the plot (default <out>/annotation_loop.png)")
    args = p.parse_args(argv)
    if args.out is None:
        if not args.smoke:
            p.error("--out is required (a folder outside the repository)")
        args.out = Path(tempfile.mkdtemp(prefix="dtc-annotation-loop-"))
    args.out = args.out.absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.action == "report":
        annotation_loop_report.main(args.out, load_study(args.out), args.markdown, args.json, args.plot)
        return
    if args.smoke:
        study = Study(str(smoke_data(args.out)), SMOKE_ROUNDS, K, list(RANDOM_SEEDS), SMOKE_INITIAL, SMOKE_FINETUNE,
                      [*SMOKE_PLAN, *args.train_arg])
    else:
        if args.rounds < 1 or args.k < 1 or not args.seeds:
            p.error("--rounds and --k must be at least 1 and --seeds name at least one seed")
        cases = common.read_list(args.data, "train.list")
        if len(cases) < INITIAL_LABELED + args.rounds * args.k:
            p.error(f"train.list has {len(cases)} cases: too few for {args.rounds} rounds of {args.k}")
        initial = ({"iterations": args.initial_iterations} if args.initial_iterations
                   else {"minutes": args.initial_minutes})
        finetune = ({"iterations": args.finetune_iterations} if args.finetune_iterations
                    else {"minutes": args.finetune_minutes})
        study = Study(str(args.data.absolute()), args.rounds, args.k, args.seeds, initial, finetune, args.train_arg)
    save_or_check_study(args.out, study)
    run(args.out, study, args.parallel or len(study.arms))
    annotation_loop_report.main(args.out, study, args.markdown, args.json, args.plot)


if __name__ == "__main__":
    main()
