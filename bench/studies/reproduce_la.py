"""Reproduce the paper's left-atrium table (Luo et al., AAAI 2021, Table 3) with DTCCore.

    python bench/studies/reproduce_la.py [--data ../shared/data/la2018] [--mode dtc|seg] [--labeled 16]
        [--iterations 6000] [--patch 112 112 80] [--base-filters 16] [--device auto] [--out DIR]
        [--eval-only MODEL] [--no-eval] [--stride X Y Z] [--whole-volume] [--json F] [--markdown F] [--tiny]

Protocol (paper / reference code): the first ``--labeled`` (16) cases of ``train.list`` are labeled, the
other 64 unlabeled (``--mode seg``: supervised only, no unlabeled data), 6000 iterations of the DTCCore
trainer with the reference recipe, then the LAST model (``model.pt`` = the weights at the final iteration)
is evaluated on ``test.list``: Dice, Jaccard (%), ASD and 95HD in voxels (the paper's unit, MedPy) and in
mm, with and without keeping the largest connected component (the reference's post-processing).
Inference uses the engine's defaults (50% overlap, Gaussian blend) unless ``--stride 18 18 4`` (the
reference's dense uniform windows) is given. ``--eval-only MODEL`` skips training (e.g. a model brought
back from a GPU machine); ``--no-eval`` skips evaluation (a machine without MedPy or test cases).
``--tiny``: a synthetic 3-case dataset (or ``--data``), 2 labeled, 1 unlabeled, 4 iterations, base 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common

# Luo et al. AAAI 2021, Table 3, LA with 16 labeled (20%): Dice %, Jaccard %, ASD vox, 95HD vox.
PAPER = {
    "VNet (16 labeled, supervised)": (86.03, 73.26, 5.75, 17.93),
    "DTC (16 labeled + 64 unlabeled)": (89.42, 80.98, 2.10, 7.32),
}


def build_manifest(data: Path, labeled: int, unlabeled: int | None, mode: str, folder: Path) -> tuple[Path, int, int]:
    cases = common.read_list(data, "train.list")
    lab = cases[:labeled]
    unl = [] if mode == "seg" else cases[labeled:] if unlabeled is None else cases[labeled:labeled + unlabeled]
    manifest = {"labeled": [{"image": str(common.case_files(data, c)[0]), "label": str(common.case_files(data, c)[1])}
                            for c in lab],
                "unlabeled": [str(common.case_files(data, c)[0]) for c in unl]}
    path = folder / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1))
    return path, len(lab), len(unl)


def train_model(args, data: Path) -> tuple[Path, dict]:
    from DTCCore.config import DTCConfig
    from DTCCore.training.trainer import train

    run_dir = Path(args.out) / f"run_{args.mode}"
    manifest, n_lab, n_unl = build_manifest(data, args.labeled, args.unlabeled, args.mode, Path(args.out))
    config = DTCConfig()
    config.recipe.mode = args.mode
    config.train.iterations = args.iterations
    config.train.patch = tuple(args.patch)
    config.network.base_filters = args.base_filters
    config.train.device = args.device
    config.train.num_workers = args.workers
    config.train.seed = args.seed
    config.validate()
    every = max(1, args.iterations // 12)

    def progress(record: dict) -> None:
        if record.get("event") == "progress" and record["iteration"] % every == 0:
            print(f"  iteration {record['iteration']}/{record['total']}: loss {record['losses']['total']:.3f}, "
                  f"{record['elapsed_s']:.0f} s", file=sys.stderr, flush=True)
        elif record.get("event") == "start":
            print(f"training {args.mode} on {record['device']}: {record['labeled']} labeled, "
                  f"{record['unlabeled']} unlabeled", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    model = train(config, manifest, run_dir, resume=args.resume, progress=progress)
    info = {"train_seconds": time.perf_counter() - t0, "labeled": n_lab, "unlabeled": n_unl,
            "iterations": args.iterations, "run_dir": str(run_dir)}
    return model, info


def evaluate(model_path: Path, data: Path, args) -> dict:
    """Mean metrics over test.list (with and without largest component) and per-case rows."""
    import torch

    from DTCCore.data.images import read_image, read_label
    from DTCCore.evaluation.metrics import evaluate_case
    from DTCCore.inference.postprocess import largest_component
    from DTCCore.inference.predict import predict_volume
    from DTCCore.model.checkpoint import load_model
    from DTCCore.runtime.devices import resolve_device

    device = resolve_device(args.device)
    model, config = load_model(model_path, device)
    if args.stride:
        config.infer.stride = tuple(args.stride)
    config.infer.whole_volume = bool(args.whole_volume)
    config.infer.largest_component = False
    cases = common.read_list(data, "test.list")[: args.test_cases or None]
    rows = {"plain": [], "lcc": []}
    t0 = time.perf_counter()
    for case in cases:
        image_path, label_path = common.case_files(data, case)
        image, geometry = read_image(image_path)
        truth = read_label(label_path, geometry, image.shape, 1) > 0
        pred = predict_volume(model, image, config, device).label > 0
        lcc = np.asarray(largest_component(pred), bool) if pred.any() else pred
        for key, mask in (("plain", pred), ("lcc", lcc)):
            rows[key].append({"case": case, **evaluate_case(mask, truth, geometry.spacing)})
        r = rows["lcc"][-1]
        print(f"  {case}: Dice {100 * r['dice']:.2f} (LCC)", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    means = {key: {m: float(np.nanmean([r[m] for r in rs])) for m in rs[0] if m != "case"} for key, rs in rows.items()}
    del torch
    if config.infer.stride:
        inference = f"stride {tuple(config.infer.stride)}"
    else:
        inference = ("whole volume" if config.infer.whole_volume else f"overlap {config.infer.overlap}")
        inference += f", {config.infer.blend}"
    return {"cases": len(cases), "eval_seconds": seconds, "means": means, "rows": rows, "inference": inference}


def report(result: dict) -> str:
    head = ["method", "Dice %", "Jaccard %", "ASD vox", "95HD vox", "ASD mm", "95HD mm", "train", "device"]
    body = [[name, *vals, "n/a", "n/a", "paper", "GTX 1080 Ti"] for name, vals in PAPER.items()]
    ev = result.get("evaluation")
    t = result.get("training", {})
    train_txt = (f"{t['train_seconds'] / 60:.1f} min, {t['iterations']} it" if "train_seconds" in t
                 else "(not run here)")
    if ev:
        for key, label in (("plain", "no post-processing"), ("lcc", "largest component")):
            m = ev["means"][key]
            body.append([f"ours {result['mode']} ({label})", 100 * m["dice"], 100 * m["jaccard"], m["asd_vox"],
                         m["hd95_vox"], m["asd_mm"], m["hd95_mm"], train_txt, result["device"]])
    lines = [f"# LA reproduction ({result['mode']}, {result.get('labeled', '?')} labeled + "
             f"{result.get('unlabeled', '?')} unlabeled), {result['date']}", "",
             common.markdown_table(head, body), ""]
    if ev:
        lines.append(f"Evaluated on {ev['cases']} test.list cases ({ev['inference']}); model {result['model']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="LA2018-style folder (default ../shared/data/la2018)")
    p.add_argument("--mode", choices=("dtc", "seg", "lsf", "seg+lsf"), default="dtc")
    p.add_argument("--labeled", type=int, default=16)
    p.add_argument("--unlabeled", type=int, default=None, help="default: every other train.list case")
    p.add_argument("--iterations", type=int, default=6000)
    p.add_argument("--patch", type=int, nargs=3, default=[112, 112, 80])
    p.add_argument("--base-filters", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temp folder)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--eval-only", type=Path, metavar="MODEL")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--test-cases", type=int, default=0, help="evaluate only the first N of test.list (0 = all)")
    p.add_argument("--stride", type=int, nargs=3)
    p.add_argument("--whole-volume", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="dtc-reproduce-"))
    data = args.data or common.DEFAULT_DATA
    if args.tiny:
        from synthetic_la import synthetic_data

        if args.data is None or not (Path(args.data) / "train.list").is_file():  # --tiny: synthetic unless given
            data = synthetic_data(Path(args.out) / "data")
        args.labeled, args.unlabeled, args.iterations = 2, 1, 4
        args.patch, args.base_filters, args.workers, args.device = [16, 16, 16], 2, 0, "cpu"

    result: dict = {"mode": args.mode, "date": time.strftime("%Y-%m-%d %H:%M"), "data": str(data),
                    "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}
    if args.eval_only:
        model = args.eval_only
    else:
        model, result["training"] = train_model(args, data)
        result["labeled"], result["unlabeled"] = result["training"]["labeled"], result["training"]["unlabeled"]
    result["model"] = str(model)
    from DTCCore.runtime.devices import resolve_device

    result["device"] = common.device_name(str(resolve_device(args.device)))
    if not args.no_eval:
        result["evaluation"] = evaluate(model, data, args)
    text = report(result)
    print(text)
    if args.json:
        common.write_json(args.json, result)
    if args.markdown:
        from DTCCore.atomic import atomic_write_text

        atomic_write_text(args.markdown, text + "\n")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
