"""Does bf16 training cost Dice? The same short DTC schedule in fp32 and in bf16, several seeds, on LA.

    python bench/studies/precision_dice.py run --out DIR [--seeds 1337 2 3] [--iterations 800] [--parallel 1]
    python bench/studies/precision_dice.py report --out DIR [--seeds ...] [--json F]

The bundled model's 2.0 mm plan (``la_study.PLAN``), 16 labeled (the first of ``train.list``) + the
other 64 unlabeled, DTC, ``--iterations`` with the recipe's schedule fitted to them, one torch thread and
one loader process per run; each (seed, precision) pair is trained once (``--precision fp32`` and
``--precision bf16``: on a CPU with native bf16, bf16 steps whose weight gradients are not finite are redone
in fp32 and counted) and scored once on the 8 validation cases (the last 8 of ``train.list``, unlabeled in
training; ``bench/lib/la_eval.py --windows``). ``report`` pairs bf16 with fp32 per seed and per validation
case: mean difference, Wilcoxon signed-rank p over the seed x case pairs (SciPy), wall seconds of each
training, and how many bf16 steps were redone. Resumable: a run whose ``model.pt`` exists is not trained
again, one with checkpoints continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
import la_study

LABELED = 16  # the paper's 20 % regime and the bundled model's data
PRECISIONS = ("fp32", "bf16")
SEEDS = (1337, 2, 3)  # 1337 is the trainer's default (bench/results/precision.md: the first fp32/bf16 pair used it)
ITERATIONS = 800  # the first pair's budget (bench/results/precision.md, "native bf16")


def run_dir(out: Path, seed: int, precision: str) -> Path:
    return out / f"seed{seed}_{precision}"


def train_command(out: Path, data: Path, seed: int, precision: str, iterations: int) -> list[str] | None:
    """The ``dtc train`` line of one run, or None when its model exists."""
    folder = run_dir(out, seed, precision)
    if (folder / "model.pt").is_file():
        return None
    cmd = ["nice", "-n", "5", sys.executable, "-m", "DTCCore", "train",
           str(la_study.manifest(out, data, LABELED, True)), "-o", str(folder), "--mode", "dtc",
           "--config", str(la_study.fitted_config(out, iterations)), *la_study.PLAN,
           "--precision", precision, "--seed", str(seed), "--workers", "1", "--threads", "1", "--jsonl"]
    if any((folder / "checkpoints").glob("*.pt")):
        cmd.append("--resume")
    return cmd


def score(out: Path, data: Path, seed: int, precision: str) -> None:
    folder = run_dir(out, seed, precision)
    target = folder / "score_val.json"
    if target.is_file():
        return
    val = out / "val.list"
    if not val.is_file():
        val.write_text("\n".join(common.read_list(data, "train.list")[-la_study.VALIDATION_CASES:]) + "\n")
    subprocess.run(["nice", "-n", "5", sys.executable, str(common.LIB / "la_eval.py"),
                    str(folder / "model.pt"), "--data", str(data), "--list", str(val), "--windows",
                    "--threads", "1", "--json", str(target)], check=True, stdout=subprocess.DEVNULL)


def run(out: Path, data: Path, seeds: list[int], iterations: int, parallel: int) -> None:
    """Train every (seed, precision) pair not done, ``parallel`` at once, then score each once."""
    pending = [(s, p) for s in seeds for p in PRECISIONS]
    running: list[tuple[subprocess.Popen, tuple[int, str]]] = []
    env = {"OMP_NUM_THREADS": "1"}
    while pending or running:
        while pending and len(running) < max(1, parallel):
            seed, precision = pending.pop(0)
            cmd = train_command(out, data, seed, precision, iterations)
            if cmd is None:
                continue
            log = open(f"{run_dir(out, seed, precision)}.out", "ab")
            print(" ".join(cmd), flush=True)
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=common.REPO,
                                             env={**os.environ, **env}), (seed, precision)))
        if running:
            proc, key = running.pop(0)
            if proc.wait() != 0:
                raise SystemExit(f"error: seed {key[0]} {key[1]} failed; see {run_dir(out, *key)}.out")
    for seed in seeds:
        for precision in PRECISIONS:
            score(out, data, seed, precision)


def summary(out: Path, seed: int, precision: str) -> dict:
    """Validation scores, training wall seconds and redone bf16 steps of one run."""
    folder = run_dir(out, seed, precision)
    scores = json.loads((folder / "score_val.json").read_text())
    done = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()
            if '"done"' in line][-1]
    redone = [json.loads(line)["text"] for line in (folder / "log.jsonl").read_text().splitlines()
              if "were redone in fp32" in line]
    return {"dice": [r["raw"]["dice"] for r in scores["rows"]], "mean_dice": scores["mean_raw"]["dice"],
            "mean_dice_lcc": scores["mean_lcc"]["dice"], "train_s": done["elapsed_s"],
            "redone": redone[-1].split(" of ")[0] if redone else "0"}


def report(out: Path, seeds: list[int], json_path: Path | None) -> None:
    from scipy.stats import wilcoxon

    rows, diffs = [], []
    for seed in seeds:
        runs = {p: summary(out, seed, p) for p in PRECISIONS}
        diffs += [b - a for a, b in zip(runs["fp32"]["dice"], runs["bf16"]["dice"])]
        rows.append({"seed": seed, **{p: runs[p] for p in PRECISIONS}})
        print(f"seed {seed}: fp32 {100 * runs['fp32']['mean_dice']:.2f} ({runs['fp32']['train_s']:.0f} s), "
              f"bf16 {100 * runs['bf16']['mean_dice']:.2f} ({runs['bf16']['train_s']:.0f} s, "
              f"{runs['bf16']['redone']} steps redone in fp32)")
    mean = sum(diffs) / len(diffs)
    p = float(wilcoxon(diffs).pvalue) if any(diffs) else 1.0
    print(f"bf16 - fp32 over {len(diffs)} seed x case pairs: {100 * mean:+.2f} points, "
          f"higher on {sum(d > 0 for d in diffs)}, Wilcoxon p = {p:.3f}")
    if json_path is not None:
        common.write_json(json_path, {"rows": rows, "mean_difference": mean, "wilcoxon_p": p})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("run", "report"))
    ap.add_argument("--out", type=Path, required=True, help="scratch folder outside the repository")
    ap.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--iterations", type=int, default=ITERATIONS)
    ap.add_argument("--parallel", type=int, default=1, help="trainings at once (one core each)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.out = args.out.absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.action == "run":
        run(args.out, args.data.absolute(), args.seeds, args.iterations, args.parallel)
    report(args.out, args.seeds, args.json)


if __name__ == "__main__":
    main()
