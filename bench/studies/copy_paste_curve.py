"""The Dice-per-CPU-minute curve of the LA copy-paste study: test Dice against CPU minutes, one line per arm.

    python bench/studies/copy_paste_curve.py [--out bench/results/copy-paste-la] [--labeled 4]
        [--png bench/results/copy_paste_curve.png] [--json F]

Reads the study's results (``copy_paste_la.py archive`` puts them in bench/results/copy-paste-la; a study folder
works too): every finished arm of every regime ``L<labeled>_<minutes>min_seed<seed>``. Each point is one budget:
x = the CPU minutes the arm really used (its ledger: trainer + loader), averaged over the seeds; y = the mean test
Dice over the seeds (final checkpoint, no post-processing), with the seeds' range shaded and each seed drawn as a
dot. It answers "if I give it N minutes, which mode should I pick?" for the budgets measured, and only for those:
the lines join measured points, they are not a model of what lies between.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/studies: the study's own module

import common
import copy_paste_la
import cpu_account

REGIME = re.compile(r"L(?P<labeled>\d+)_(?P<minutes>[\d.]+)min_seed(?P<seed>\d+)$")
# arm -> (legend, colour): labeled-only arms grey/black, unlabeled-scan arms in colour
STYLE = {"seg": ("labeled-only", "0.2"), "copy-paste": ("labeled-only + copy-paste", "0.55"),
         "dtc": ("DTC", "tab:blue"), "cpt": ("copy-paste teacher (+ level set, consistency)", "tab:red"),
         "cpt_nocons": ("copy-paste teacher, no consistency", "tab:orange"), "bcp": ("BCP's own recipe", "tab:green")}


def _seed_counts(points: list[dict]) -> str:
    """The seeds behind a line's points, left to right, e.g. "1 / 2 seeds", or "2 seeds" when every point has 2."""
    counts = [len(p["dice"]) for p in points]
    words = str(counts[0]) if len(set(counts)) == 1 else " / ".join(map(str, counts))
    return f"{words} seed{'' if counts == [1] * len(counts) else 's'}"


def collect(out: Path, labeled: int) -> dict[str, list[dict]]:
    """arm -> points sorted by budget: ``{"minutes", "cpu_minutes": [per seed], "dice": [per seed, %],
    "seeds"}`` for every finished arm of ``labeled`` labeled scans in ``out``."""
    found: dict[str, dict[float, dict]] = {}
    for regime in sorted(p for p in out.iterdir() if p.is_dir() and REGIME.match(p.name)):
        m = REGIME.match(regime.name)
        if int(m["labeled"]) != labeled:
            continue
        for arm in copy_paste_la.ARMS:
            test = copy_paste_la._load(regime / arm, "test")
            cpu = cpu_account.cpu_minutes(regime / f"{arm}.cpu.jsonl")
            if test is None or cpu is None:
                continue
            point = found.setdefault(arm, {}).setdefault(float(m["minutes"]), {
                "minutes": float(m["minutes"]), "cpu_minutes": [], "dice": [], "seeds": []})
            point["cpu_minutes"].append(cpu)
            point["dice"].append(100 * test["mean_raw"]["dice"])
            point["seeds"].append(int(m["seed"]))
    return {arm: [points[k] for k in sorted(points)] for arm, points in found.items()}


def plot(curves: dict[str, list[dict]], labeled: int, path: Path) -> None:
    """The PNG: mean test Dice against mean CPU minutes per arm, the seeds' range shaded, each seed a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for arm, points in curves.items():
        name, colour = STYLE.get(arm, (arm, None))
        x = np.array([np.mean(p["cpu_minutes"]) for p in points])
        y = np.array([np.mean(p["dice"]) for p in points])
        line = ax.plot(x, y, "-o", color=colour, label=f"{name} ({_seed_counts(points)})")[0]
        low, high = [min(p["dice"]) for p in points], [max(p["dice"]) for p in points]
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        for p in points:
            ax.scatter(p["cpu_minutes"], p["dice"], s=12, color=line.get_color(), alpha=0.6)
    budgets = [np.mean(q["cpu_minutes"]) for points in curves.values() for q in points]
    ax.set_xlim(0, 1.1 * max(budgets))  # from 0: the budgets' sizes, not just their order, are the point
    ax.set_xlabel("CPU minutes per arm (trainer + loader, one thread)")
    ax.set_ylabel("test Dice % (20 LA scans, final checkpoint)")
    ax.set_title(f"Left atrium, {labeled} labeled + {80 - labeled} unlabeled: Dice per CPU minute")
    ax.grid(alpha=0.3)
    ax.margins(y=0.2)
    ax.legend(fontsize=8, loc="upper left")  # the points sit at the budgets, on the right
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=common.REPO / "bench" / "results" / "copy-paste-la")
    p.add_argument("--labeled", type=int, default=4)
    p.add_argument("--png", type=Path, default=common.REPO / "bench" / "results" / "copy_paste_curve.png")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    curves = collect(args.out, args.labeled) if args.out.is_dir() else {}
    if not curves:
        raise SystemExit(f"error: no finished arm with {args.labeled} labeled scans in {args.out}; run "
                         "copy_paste_la.py run, then archive")
    plot(curves, args.labeled, args.png)
    for arm, points in curves.items():
        print(f"{arm}: " + "; ".join(f"{np.mean(q['cpu_minutes']):.1f} CPU min -> {np.mean(q['dice']):.2f} % "
                                     f"(seeds {q['seeds']})" for q in points))
    if args.json:
        common.write_json(args.json, curves)
    return curves


if __name__ == "__main__":
    main()
