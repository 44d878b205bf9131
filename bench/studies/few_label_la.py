"""The few-label regime on LA: DTC against labeled-only at equal CPU time and at equal iterations.

    python bench/studies/few_label_la.py run --labeled 8 4 --iterations 1000 --out DIR [--arms dtc,seg,warm,seg_eqit]
    python bench/studies/few_label_la.py report --out DIR [--labeled 8 4] [--json F]

The first ``--labeled`` cases of ``train.list`` are labeled, the other ``80 - labeled`` unlabeled (their
labels never used in training). Every arm trains on the 2.0 mm plan of the bundled model (48x48x32
patch, base 16, default augmentation), one torch thread and one loader process each. Budgets are
iterations, with the recipe's schedule fitted to them (``schedule.fit_schedule``: lr x0.1 at 5/12 and
10/12 of the run, the consistency ramp full at the end), so the result does not depend on what else
loads the machine. Equal time comes from the cost ratio of the two steps, measured on this machine
(``EQUAL_TIME_RATIO``):

- ``dtc``: the paper's recipe on labeled + unlabeled, ``--iterations`` N;
- ``seg``: labeled-only (``--mode seg``, no unlabeled scans), ``EQUAL_TIME_RATIO`` x N iterations: equal time;
- ``warm``: labeled-only for half that (the time of N / 2 DTC iterations), then DTC ``--init-from`` it for
  N / 2 iterations (the consistency ramp restarts from 0): equal time;
- ``seg_eqit``: labeled-only for N iterations (the paper's protocol: equal iterations).

All arms of all regimes given start together. An arm whose ``model.pt`` exists is not run again; one
with checkpoints resumes (``--resume``), so a killed run continues. Each final model is scored once on the
20 ``test.list`` scans and on the last 8 of ``train.list`` (validation: unlabeled in training, used only
to choose between recipes), at their native grid with windows and without test-time mirroring
(``bench/lib/la_eval.py``); Dice with and without the largest connected component. ``report`` pairs every arm
with ``seg`` per test case: mean difference, cases higher / lower, Wilcoxon signed-rank p (SciPy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
import la_study
from la_study import EQUAL_TIME_RATIO, PLAN, final_iteration, fitted_config, manifest, paired

ARMS = ("dtc", "seg", "warm", "seg_eqit")


def stages(arm: str, out: Path, data: Path, labeled: int, iterations: int) -> list[tuple[Path, Path, str, int]]:
    """The (run folder, manifest, mode, iterations) stages of one arm, in order."""
    regime = out / f"L{labeled}"
    full, only = manifest(out, data, labeled, True), manifest(out, data, labeled, False)
    equal = round(EQUAL_TIME_RATIO * iterations)
    table = {"dtc": [(regime / "dtc", full, "dtc", iterations)],
             "seg": [(regime / "seg", only, "seg", equal)],
             "warm": [(regime / "warm_seg", only, "seg", equal // 2), (regime / "warm", full, "dtc", iterations // 2)],
             "seg_eqit": [(regime / "seg_eqit", only, "seg", iterations)]}
    if arm not in table:
        raise SystemExit(f"error: unknown arm {arm!r}; use {', '.join(ARMS)}")
    return table[arm]


def run_arm(arm: str, out: Path, data: Path, labeled: int, iterations: int) -> subprocess.Popen | None:
    """Start the arm's stages as one shell chain (each skipped once its model.pt exists)."""
    parts, previous = [], None
    for run_dir, manifest_path, mode, its in stages(arm, out, data, labeled, iterations):
        if not (run_dir / "model.pt").exists():
            cmd = [sys.executable, "-m", "DTCCore", "train", str(manifest_path), "-o", str(run_dir), "--mode", mode,
                   "--config", str(fitted_config(out, its)), *PLAN, "--workers", "1", "--threads", "1", "--jsonl"]
            if previous is not None:
                cmd += ["--init-from", str(previous / "model.pt")]
            if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("*.pt")):
                cmd.append("--resume")
            parts.append(" ".join(cmd) + f" >> {run_dir}.out 2>&1")
            run_dir.parent.mkdir(parents=True, exist_ok=True)
        previous = run_dir
    if not parts:
        return None
    print(f"[{time.strftime('%H:%M:%S')}] L{labeled} {arm}: " + " && ".join(parts), flush=True)
    return subprocess.Popen(["bash", "-c", " && ".join(parts)], cwd=common.REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def score(out: Path, data: Path, labeled: int, arm: str) -> None:
    """Score a finished arm once on test.list and on the validation cases (JSON beside its run)."""
    la_study.score_run(out / f"L{labeled}" / arm, out, data)


def load_scores(out: Path, labeled: int, arm: str, split: str) -> dict | None:
    path = out / f"L{labeled}" / arm / f"score_{split}.json"
    return json.loads(path.read_text()) if path.exists() else None


def report(out: Path, regimes: list[int]) -> dict:
    """Markdown tables (printed) and the numbers behind them (returned)."""
    result: dict = {}
    for labeled in regimes:
        rows, summary = [], {}
        base = load_scores(out, labeled, "seg", "test")
        for arm in ARMS:
            test, val = load_scores(out, labeled, arm, "test"), load_scores(out, labeled, arm, "val")
            if test is None:
                continue
            run_dirs = [out / f"L{labeled}" / arm] + ([out / f"L{labeled}" / "warm_seg"] if arm == "warm" else [])
            its = "+".join(str(final_iteration(r)) for r in reversed(run_dirs))
            minutes = sum(json.loads([ln for ln in (r / "log.jsonl").read_text().splitlines()
                                      if '"done"' in ln][-1])["elapsed_s"] for r in run_dirs) / 60
            vs = paired(test, base, "raw") if base is not None and arm != "seg" else None
            vs_lcc = paired(test, base, "lcc") if base is not None and arm != "seg" else None
            summary[arm] = {"iterations": its, "minutes": minutes, "test_raw": 100 * test["mean_raw"]["dice"],
                            "test_lcc": 100 * test["mean_lcc"]["dice"],
                            "val_raw": 100 * val["mean_raw"]["dice"] if val else float("nan"),
                            "vs_seg_raw": vs, "vs_seg_lcc": vs_lcc}
            cmp = (f"{vs['mean']:+.2f} ({vs['higher']}/{vs['lower']}, p = {vs['p']:.3f})" if vs else "")
            cmp_lcc = (f"{vs_lcc['mean']:+.2f} (p = {vs_lcc['p']:.3f})" if vs_lcc else "")
            rows.append([arm, its, round(minutes, 1), summary[arm]["val_raw"], summary[arm]["test_raw"],
                         summary[arm]["test_lcc"], cmp, cmp_lcc])
        dtc, eqit = load_scores(out, labeled, "dtc", "test"), load_scores(out, labeled, "seg_eqit", "test")
        if dtc is not None and eqit is not None:  # the paper's protocol: DTC against labeled-only at equal iterations
            summary["dtc_vs_seg_eqit_raw"] = eq = paired(dtc, eqit, "raw")
            rows.append(["dtc - seg_eqit (equal iterations)", "", "", "", "", "",
                         f"{eq['mean']:+.2f} ({eq['higher']}/{eq['lower']}, p = {eq['p']:.3f})", ""])
        print(f"\n{labeled} labeled + {80 - labeled} unlabeled\n")
        print(common.markdown_table(["arm", "iterations", "wall min (shared CPU)", "val Dice %", "test Dice %",
                                      "test, largest comp.", "arm - seg per case (higher/lower, Wilcoxon p)",
                                      "vs seg, largest comp."], rows))
        result[str(labeled)] = summary
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("run", "report"))
    p.add_argument("--out", type=Path, required=True, help="folder for runs and scores (outside the repository)")
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    p.add_argument("--labeled", type=int, nargs="+", default=[8])
    p.add_argument("--iterations", type=int, default=1000, help="DTC iterations (the others follow)")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.action == "report":
        result = report(args.out, args.labeled)
        if args.json:
            common.write_json(args.json, result)
        return
    arms = args.arms.split(",")
    procs = [(labeled, arm, run_arm(arm, args.out, args.data, labeled, args.iterations))
             for labeled in args.labeled for arm in arms]
    for labeled, arm, proc in procs:
        if proc is not None and proc.wait() != 0:
            raise SystemExit(f"error: L{labeled} {arm} failed (exit {proc.returncode}); "
                             f"see {args.out}/L{labeled}/*.out")
        score(args.out, args.data, labeled, arm)
        print(f"[{time.strftime('%H:%M:%S')}] L{labeled} {arm} scored", flush=True)


if __name__ == "__main__":
    main()
