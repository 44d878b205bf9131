"""Which per-scan score best finds the scans a model segments worst? (issue 24: the Next case signal)

    python bench/studies/rank_signals.py MODEL [--data ../shared/data/la2018] [--list train.list] [--skip 4]
        [--picks DIR/round_R/picks.json] [--k 2 10] [--json F]

For every case of the list (after the first ``--skip``: by default the 76 scans the annotation-loop study
starts with unlabeled; with ``--picks``, the unlabeled scans after that round of the study), the model
segments the scan as ``dtc rank`` does (windows, overlap ``RANK_OVERLAP``) and each candidate score is
computed from that one prediction:

- ``mean``: mean |p_seg - p_levelset| over the scan, what ``dtc rank`` and the panel's Next case use;
- ``frac50``: fraction of voxels where the two heads disagree by more than 0.5 (they call opposite labels);
- ``per_fg``: the summed disagreement over the predicted foreground voxel count (disagreement per voxel of
  structure: the mean grows with the structure's size, which says nothing about the error);
- ``seg_unsure``: mean 2 min(p, 1 - p) of the segmentation head alone (not dual-task: the usual
  single-model uncertainty, for comparison).

Against each case's Dice (no post-processing, the label the prediction gives) it reports Spearman's rho
(a good score is strongly negative: high score, low Dice) and the mean Dice of the top ``k`` scans by each
score next to the pool's mean (the scans a round would reveal: lower means the score finds the failures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common

SIGNALS = ("mean", "frac50", "per_fg", "seg_unsure")
FRAC_THRESHOLD = 0.5  # the heads call opposite labels where |p_seg - p_levelset| > 0.5 (both thresholded at 0.5)


def signals(probability: np.ndarray, disagreement: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Candidate scores of one scan from its prediction: probability, disagreement (X, Y, Z) float, label (X, Y, Z)."""
    foreground = int(np.count_nonzero(label))
    return {"mean": float(disagreement.mean()),
            "frac50": float(np.mean(disagreement > FRAC_THRESHOLD)),
            "per_fg": float(disagreement.sum() / max(foreground, 1)),
            "seg_unsure": float(np.mean(2 * np.minimum(probability, 1 - probability)))}


def summarise(rows: list[dict], ks: list[int]) -> dict:
    """Spearman rho of each signal against Dice; mean Dice of each signal's top k against the pool's."""
    from scipy.stats import spearmanr

    dice = np.array([r["dice"] for r in rows])
    out: dict = {"cases": len(rows), "pool_mean_dice": float(dice.mean()), "signals": {}}
    for name in SIGNALS:
        score = np.array([r[name] for r in rows])
        order = np.argsort(-score, kind="stable")
        rho = spearmanr(score, dice)
        out["signals"][name] = {"spearman_rho": float(rho.statistic), "p": float(rho.pvalue),
                                **{f"top{k}_mean_dice": float(dice[order[:k]].mean()) for k in ks}}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    p.add_argument("--list", default="train.list")
    p.add_argument("--skip", type=int, default=4, help="leave out the list's first N cases (the labeled ones)")
    p.add_argument("--picks", type=Path, help="an annotation-loop picks.json: its unlabeled scans are the pool")
    p.add_argument("--k", type=int, nargs="+", default=[2, 10], help="top-k sizes to report")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    from DTCCore.cli.rank import RANK_OVERLAP
    from DTCCore.data.images import read_image, read_label
    from DTCCore.evaluation.metrics import evaluate_case
    from DTCCore.inference.predict import predict_volume
    from DTCCore.model.checkpoint import load_model

    torch.set_num_threads(1)
    device = torch.device("cpu")
    model, config = load_model(str(args.model), device)
    config.infer.overlap = RANK_OVERLAP
    rows = []
    cases = (json.loads(args.picks.read_text())["unlabeled"] if args.picks
             else common.read_list(args.data, args.list)[args.skip:])
    for i, case in enumerate(cases):
        image_path, label_path = common.case_files(args.data, case)
        image, geometry = read_image(image_path)
        truth = read_label(label_path, geometry, image.shape) > 0
        t0 = time.perf_counter()
        pred = predict_volume(model, image, config, device, spacing=geometry.spacing)
        label = pred.label > 0
        row = {"case": case, "dice": evaluate_case(label, truth, geometry.spacing)["dice"],
               **signals(pred.probability, pred.disagreement, label)}
        rows.append(row)
        print(f"  {i + 1}/{len(cases)} {case}: Dice {100 * row['dice']:.2f} "
              + " ".join(f"{n} {row[n]:.4g}" for n in SIGNALS) + f" ({time.perf_counter() - t0:.1f} s)", flush=True)
    summary = {"model": str(args.model), **summarise(rows, args.k), "rows": rows}
    print(f"pool: {summary['cases']} scans, mean Dice {100 * summary['pool_mean_dice']:.2f} %")
    print("signal       rho     " + "  ".join(f"top{k} Dice" for k in args.k))
    for name, s in summary["signals"].items():
        tops = "  ".join(f"{100 * s[f'top{k}_mean_dice']:8.2f}" for k in args.k)
        print(f"{name:<12} {s['spearman_rho']:+.3f}  {tops}")
    if args.json:
        common.write_json(args.json, summary)
    return summary


if __name__ == "__main__":
    main()
