"""Tables, goals and plot of an annotation-loop study folder (``bench/studies/annotation_loop.py report``).

Dice is the mean over the 20 ``test.list`` scans with the largest connected component (the bundled
model's post-processing; without it in brackets). CPU minutes of a round are its ranking and its
fine-tune (user + system time of their process trees); scoring is the study's own cost and is not
counted. Cumulative minutes include the shared first model. A round's Dice change has two sources of noise:
which test cases (the standard error SE of the paired per-case change) and the fine-tune's own randomness
(:data:`SEED_NOISE`, measured); a round is worse "beyond the noise" when its change is below
``-NOISE_SE x sqrt(SE^2 + SEED_NOISE^2)``. A partial study reports the rounds finished so far.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
import la_study
from annotation_layout import INITIAL_LABELED, round_dir

NOISE_SE = 2.0  # our threshold: a change beyond 2 standard errors (~95 %) is more than noise
# Points between two training seeds of one fine-tune on the same data and model (the study's round 6 of the
# disagreement arm, seeds 1337 and 2: 86.58 and 87.30 %, bench/results/annotation-loop.md): one pair, a rough
# standard deviation of a round's change from the fine-tune's randomness alone, which the per-case SE does not see.
SEED_NOISE = 0.72
BUNDLED = (16, 134.0, 88.06)  # the bundled model: labeled scans, CPU minutes, test Dice % (bench/results/la-model.md)
GOAL_GAIN, GOAL_DICE = 1.0, 87.0  # issue 24: disagreement beats random by >= 1 point; >= 87 % at 16 labeled


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect(out: Path, study) -> dict:
    """Per arm name: the finished rounds in order, each {round, labeled, dice, dice_raw, minutes, cumulative, ...}."""
    first = _json(round_dir(out, None, 0) / "score_test.json")
    timing0 = _json(round_dir(out, None, 0) / "timing.json") or {}
    if first is None:
        return {}
    initial_min = timing0.get("train", {}).get("cpu_s", float("nan")) / 60
    result = {}
    for arm in study.arms:
        rows = [{"round": 0, "labeled": INITIAL_LABELED, "score": first, "minutes": initial_min,
                 "cumulative": initial_min, "revealed": []}]
        for r in range(1, study.rounds + 1):
            folder = round_dir(out, arm, r)
            score, timing, picks = (_json(folder / n) for n in ("score_test.json", "timing.json", "picks.json"))
            if score is None or timing is None or picks is None:
                break
            minutes = (timing.get("rank", {}).get("cpu_s", 0.0) + timing["train"]["cpu_s"]) / 60
            rows.append({"round": r, "labeled": len(picks["labeled"]), "score": score, "minutes": minutes,
                         "cumulative": rows[-1]["cumulative"] + minutes, "revealed": picks["revealed"],
                         "iterations": timing["train"]["iterations"], "resumed": timing["train"]["resumed"]})
        for row in rows:
            row["dice"] = 100 * row["score"]["mean_lcc"]["dice"]
            row["dice_raw"] = 100 * row["score"]["mean_raw"]["dice"]
        for prev, row in zip(rows, rows[1:]):
            change = la_study.paired(row["score"], prev["score"], "lcc")
            change["se"] = float(np.std(change["diffs"], ddof=1) / np.sqrt(len(change["diffs"])))
            row["change"] = change
        result[arm.name] = rows
    return result


def _random_names(study) -> list[str]:
    return [a.name for a in study.arms if a.picker == "random"]


def tables(study, data: dict) -> str:
    """The markdown of the three tables and the goals."""
    names = [a.name for a in study.arms]
    randoms = _random_names(study)
    n = min(len(rows) for rows in data.values())
    dice_rows, change_rows, minute_rows = [], [], []
    for i in range(n):
        first = data[names[0]][i]
        cells = [f"{data[a][i]['dice']:.2f} ({data[a][i]['dice_raw']:.2f})" for a in names]
        spread = [data[a][i]["dice"] for a in randoms]
        rand = f"{np.mean(spread):.2f} ({min(spread):.2f}-{max(spread):.2f})" if spread else "n/a"
        dice_rows.append([first["round"], first["labeled"], *cells, rand])
        minute_rows.append([first["round"], first["labeled"], *[
            f"{data[a][i]['minutes']:.1f}{'*' if data[a][i].get('resumed') else ''} / {data[a][i]['cumulative']:.1f}"
            for a in names]])
        if i:
            change_rows.append([first["round"], first["labeled"], *[
                f"{c['mean']:+.2f} ± {c['se']:.2f} (p {c['p']:.2f})" for c in (data[a][i]["change"] for a in names)]])
    head = ["round", "labeled"]
    parts = [
        "Test Dice % per round (20 test.list scans, largest component; without it in brackets)\n",
        common.markdown_table(head + names + ["random: mean (seed range)"], dice_rows),
        "\nDice change from the previous round, points (± standard error of the paired per-case change; Wilcoxon p)\n",
        common.markdown_table(head + names, change_rows) if change_rows else "(no round finished yet)",
        "\nCPU minutes: this round (ranking + fine-tune) / cumulative (the first model included; * a fine-tune "
        "resumed after a stop: the minutes before the stop are not counted)\n",
        common.markdown_table(head + names, minute_rows),
        "\n" + goals(study, data, n),
    ]
    return "\n".join(parts)


def goals(study, data: dict, n: int) -> str:
    """Issue 24's three goals, measured on the finished rounds."""
    lines = ["Goals (issue 24):\n"]
    worse = [f"{a} round {row['round']} ({row['change']['mean']:+.2f} ± {row['change']['se']:.2f})"
             for a, rows in data.items() for row in rows[1:n]
             if row["change"]["mean"] < -NOISE_SE * float(np.hypot(row["change"]["se"], SEED_NOISE))]
    lines.append(f"- no round worse than the one before beyond the noise ({NOISE_SE:g} x sqrt(SE^2 + "
                 f"{SEED_NOISE:g}^2): SE of the cases and {SEED_NOISE:g} points of training-seed noise): "
                 + ("yes" if not worse else "no: " + ", ".join(worse)))
    randoms = _random_names(study)
    if n > 1 and randoms and "disagreement" in data:
        gain = np.mean([data["disagreement"][i]["dice"] - np.mean([data[a][i]["dice"] for a in randoms])
                        for i in range(1, n)])
        per_seed = ", ".join(
            f"{a} {np.mean([data['disagreement'][i]['dice'] - data[a][i]['dice'] for i in range(1, n)]):+.2f}"
            for a in randoms)
        lines.append(f"- disagreement minus random (mean of the seeds), averaged over rounds 1-{n - 1}: "
                     f"{gain:+.2f} points (goal >= {GOAL_GAIN:+g}: {'met' if gain >= GOAL_GAIN else 'not met'}; "
                     f"against each seed: {per_seed})")
    last = data.get("disagreement", [])[n - 1] if data else None
    if last is not None:
        lines.append(f"- disagreement arm at {last['labeled']} labeled: {last['dice']:.2f} % after "
                     f"{last['cumulative']:.1f} CPU minutes (goal >= {GOAL_DICE:g} % at 16 labeled; the bundled "
                     f"model: {BUNDLED[2]} % at {BUNDLED[0]} labeled after {BUNDLED[1]:g} minutes)")
    return "\n".join(lines)


def plot(study, data: dict, path: Path) -> None:
    """Dice against labeled scans and against cumulative CPU minutes, one line per arm (random: mean and range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    randoms = _random_names(study)
    n = min(len(rows) for rows in data.values())
    for axis, x_key, x_label in ((axes[0], "labeled", "labeled scans"),
                                 (axes[1], "cumulative", "cumulative CPU minutes")):
        for name, rows in data.items():
            if name in randoms:
                continue
            axis.plot([r[x_key] for r in rows[:n]], [r["dice"] for r in rows[:n]], "o-", label=name)
        if randoms:
            x = np.mean([[data[a][i][x_key] for a in randoms] for i in range(n)], axis=1)
            ys = np.array([[data[a][i]["dice"] for a in randoms] for i in range(n)])
            axis.plot(x, ys.mean(axis=1), "s--", label=f"random (mean of {len(randoms)} seeds)")
            axis.fill_between(x, ys.min(axis=1), ys.max(axis=1), alpha=0.2, label="random: seed range")
        axis.plot([BUNDLED[0] if x_key == "labeled" else BUNDLED[1]], [BUNDLED[2]], "k*", markersize=10,
                  label="bundled model (16 labeled + 64 unlabeled)")
        axis.set_xlabel(x_label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test Dice % (largest component)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Annotation loop on LA: k = %d scans corrected per round" % study.k)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(out: Path, study, markdown: Path | None = None, json_path: Path | None = None,
         plot_path: Path | None = None) -> dict:
    """Print the tables and goals, draw the plot; returns the collected numbers."""
    data = collect(out, study)
    if not data:
        print("no round scored yet")
        return {}
    text = tables(study, data)
    print("\n" + text)
    if markdown:
        from DTCCore.atomic import atomic_write_text

        atomic_write_text(markdown, text + "\n")
    plot(study, data, plot_path or out / "annotation_loop.png")
    slim = {a: [{k: v for k, v in row.items() if k != "score"} for row in rows] for a, rows in data.items()}
    if json_path:
        common.write_json(json_path, slim)
    return slim
