"""The few-label LA studies' shared protocol (few_label_la.py, and the studies that follow it: copy_paste_la.py,
annotation_loop.py, precision_dice.py): the bundled model's 2.0 mm plan, the manifests of the first N labeled
cases of ``train.list``, configs with the recipe's schedule fitted to an iteration budget, the validation split,
the measured equal-time ratio of the two steps, and per-case paired Dice statistics.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import common

PLAN = ["--spacing", "2.0", "--patch", "48", "48", "32", "--base-filters", "16"]  # the bundled model's plan
VALIDATION_CASES = 8  # the last 8 of train.list, as in the spacing sweep and the default model's choices
# Labeled-only iterations that take the time of one DTC iteration on this plan, 1 thread each, run side by
# side on the 2-core VM (bench/results/la-model.md, "The default LA model"): 1995 / 1007, 1093 / 580 and 5660 / 3098
# in the three equal-time stages -> 1.98, 1.88, 1.83; mean 1.90. A DTC step has 4 crops, labeled-only 2.
EQUAL_TIME_RATIO = 1.9


def manifest(out: Path, data: Path, labeled: int, with_unlabeled: bool) -> Path:
    """Write (once) the manifest of one regime: the first ``labeled`` cases labeled, the rest unlabeled."""
    cases = common.read_list(data, "train.list")
    path = out / f"manifest_{labeled}{'' if with_unlabeled else '_labeled'}.json"
    if not path.exists():
        body = {"labeled": [dict(zip(("image", "label"), map(str, common.case_files(data, c))))
                            for c in cases[:labeled]],
                "unlabeled": [str(common.case_files(data, c)[0]) for c in cases[labeled:]] if with_unlabeled else []}
        common.write_json(path, body)
    return path


def final_iteration(run_dir: Path) -> int:
    """The iteration a finished run stopped at (its ``done`` event in log.jsonl)."""
    for line in reversed((run_dir / "log.jsonl").read_text().splitlines()):
        record = json.loads(line)
        if record.get("event") == "done":
            return int(record["iteration"])
    raise SystemExit(f"error: {run_dir} has not finished (no 'done' event in its log.jsonl)")


def fitted_config(out: Path, iterations: int) -> Path:
    """Write (once) a config of ``iterations`` with the recipe's schedule fitted to them."""
    from DTCCore.config import DTCConfig
    from DTCCore.training.schedule import fit_schedule

    path = out / f"config_{iterations}.json"
    if not path.exists():
        config = DTCConfig()
        fit_schedule(config, iterations)
        config.save(path)
    return path


def score_run(run_dir: Path, out: Path, data: Path) -> None:
    """Score a finished run once on test.list and on the validation cases (the last ``VALIDATION_CASES`` of
    train.list, written to ``out/val.list``) with la_eval.py, on the native grid with windows: JSON beside the run."""
    val = out / "val.list"
    if not val.exists():
        val.write_text("\n".join(common.read_list(data, "train.list")[-VALIDATION_CASES:]) + "\n")
    for name, lst in (("test", "test.list"), ("val", str(val))):
        target = run_dir / f"score_{name}.json"
        if (run_dir / "model.pt").exists() and not target.exists():
            subprocess.run(["nice", "-n", "5", sys.executable, str(common.LIB / "la_eval.py"),
                            str(run_dir / "model.pt"), "--data", str(data), "--list", lst, "--windows",
                            "--threads", "1", "--json", str(target)], check=True, stdout=subprocess.DEVNULL)


def paired(a: dict, b: dict, which: str) -> dict:
    """Per-case Dice differences a - b (points) on the same cases, with a Wilcoxon signed-rank p."""
    from scipy.stats import wilcoxon

    da = {r["case"]: 100 * r[which]["dice"] for r in a["rows"]}
    db = {r["case"]: 100 * r[which]["dice"] for r in b["rows"]}
    d = np.array([da[c] - db[c] for c in da])
    p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return {"mean": float(d.mean()), "higher": int((d > 0).sum()), "lower": int((d < 0).sum()), "p": p,
            "diffs": [round(float(v), 2) for v in d]}
