"""Evaluate a model on LA cases, on their native grid or resampled to another spacing.

    python bench/lib/la_eval.py MODEL --list test.list [--data ../shared/data/la2018] [--cases N]
        [--resample S | SX SY SZ] [--windows | --whole-volume] [--largest-component] [--json F]

Each case is read, optionally resampled (image linearly, label through its signed distance: the same
code the engine uses, ``DTCCore.data.resample``), segmented with ``predict_volume`` given the case's spacing,
and scored against its label on that same grid: Dice, Jaccard (%), ASD and 95HD in voxels (MedPy, the
paper's unit) and mm, with and without the largest connected component. Prints one line per case and a
JSON summary (means, median seconds per case). Used to judge the spacing sweep on validation cases,
to evaluate the final model once on test.list, and for the spacing-robustness check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import common


def load_case(data: Path, case: str, spacing: tuple[float, float, float] | None):
    """``(image (X, Y, Z) float32, label bool (X, Y, Z), spacing)`` of a case, resampled to ``spacing`` if given."""
    from DTCCore.data.images import read_image, read_label
    from DTCCore.data.resample import resample_label, resize_linear, target_shape

    image_path, label_path = common.case_files(data, case)
    image, geometry = read_image(image_path)
    label = read_label(label_path, geometry, image.shape)
    if spacing is None:
        return image, label > 0, geometry.spacing
    shape = target_shape(image.shape, geometry.spacing, spacing)
    new_spacing = tuple(float(s) * n / m for s, n, m in zip(geometry.spacing, image.shape, shape))
    return resize_linear(image, shape), resample_label(label, geometry.spacing, shape, 1) > 0, new_spacing


def evaluate(model, config, data: Path, cases: list[str], device, spacing=None, log=print) -> list[dict]:
    """Per case: metrics without ("raw") and with ("lcc") the largest component, and the inference time."""
    from DTCCore.evaluation.metrics import evaluate_case
    from DTCCore.inference.postprocess import largest_component
    from DTCCore.inference.predict import predict_volume

    rows = []
    for i, case in enumerate(cases):
        image, truth, case_spacing = load_case(data, case, spacing)
        t0 = time.perf_counter()
        label = predict_volume(model, image, config, device, spacing=case_spacing).label > 0
        seconds = time.perf_counter() - t0
        lcc = np.asarray(largest_component(label), bool) if label.any() else label
        rows.append({"case": case, "seconds": round(seconds, 2), "shape": list(image.shape),
                     "raw": evaluate_case(label, truth, case_spacing), "lcc": evaluate_case(lcc, truth, case_spacing)})
        log(f"  {i + 1}/{len(cases)} {case}: Dice {100 * rows[-1]['raw']['dice']:.2f} "
            f"(largest component {100 * rows[-1]['lcc']['dice']:.2f}) in {seconds:.2f} s")
    return rows


def mean(rows: list[dict], which: str) -> dict[str, float]:
    """Mean of every metric over the rows (NaN distances of empty predictions ignored)."""
    return {k: float(np.nanmean([r[which][k] for r in rows])) for k in rows[0][which]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, default=None, help="LA2018-style folder (default ../shared/data/la2018)")
    p.add_argument("--list", default="test.list", help="case list file in --data (or a path), default test.list")
    p.add_argument("--from", dest="start", type=int, default=0, help="first case of the list to use")
    p.add_argument("--cases", type=int, default=0, help="number of cases (0 = to the end)")
    p.add_argument("--resample", type=float, nargs="+", help="resample each case to this spacing first (mm)")
    grid = p.add_mutually_exclusive_group()
    grid.add_argument("--windows", action="store_true", help="force sliding windows")
    grid.add_argument("--whole-volume", action="store_true", help="force one whole-volume pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch's default)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    from DTCCore.model.checkpoint import load_model
    from DTCCore.runtime.devices import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or common.DEFAULT_DATA
    list_path = Path(args.list)
    names = (list_path.read_text().split() if list_path.is_file() else common.read_list(data, args.list))
    cases = names[args.start: args.start + args.cases if args.cases else None]
    spacing = None
    if args.resample:
        spacing = tuple(args.resample) * 3 if len(args.resample) == 1 else tuple(args.resample)
    device = resolve_device(args.device)
    model, config = load_model(args.model, device)
    if args.windows or args.whole_volume:
        config.infer.whole_volume = bool(args.whole_volume)
    config.infer.largest_component = False
    rows = evaluate(model, config, data, cases, device, spacing, log=lambda s: print(s, file=sys.stderr, flush=True))
    result = {"model": args.model.name, "list": args.list, "cases": len(rows), "resample": spacing,
              "whole_volume": config.infer.whole_volume, "plan_spacing": config.plan.spacing,
              "mean_raw": mean(rows, "raw"), "mean_lcc": mean(rows, "lcc"),
              "median_seconds": float(np.median([r["seconds"] for r in rows])), "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.json:
        common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
