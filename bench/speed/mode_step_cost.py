"""Cost of one training step in every mode, measured in the same run: CPU seconds per step and the ratio to ``seg``.

    python bench/speed/mode_step_cost.py [--warmup 2 --steps 4] [--data LA_FOLDER] [--variants seg,dtc,...] [--json F]
    python bench/speed/mode_step_cost.py --plan acdc-2d --data ACDC_FOLDER [--variants ...] [--json F]

The LA plan of the bundled model (2.0 mm, 48x48x32 patch, base 16), fp32, one torch thread, batches built in
the training process (``--workers 0``, so a step's CPU time includes its crops), batch 2 labeled + 2
unlabeled where the mode reads unlabeled scans. Each variant is a real ``DTCCore.training.trainer.train`` run of
``warmup + steps`` iterations; the time is the process CPU time (``time.process_time``, less sensitive to other
work on a shared machine than the wall clock, also reported) between the progress events of iteration
``warmup`` and ``warmup + steps``. The data are synthetic LA-like scans already on the 2.0 mm grid (an
ellipsoid on noise, 96 x 96 x 28 voxels: a 0.625 mm LA scan of 576 x 576 x 88 resampled), or with ``--data``
the first 4 + 4 cases of an LA2018 folder's train.list. ``--plan acdc-2d`` times the ACDC study's 2-D plan instead
(bench/studies/copy_paste_acdc.py ``PLAN``: 4 classes, 1.5 x 1.5 x 1 grid, 128 x 128 x 4 crops of a 2-D network,
base 8, nnU-Net's augmentations; config from bench/studies/train_acdc.py) on the first 4 + 4 patients of an ACDC
folder's train.list (``--data`` needed).

Variants: the four DTC modes; ``copy-paste`` with the level set and consistency (default) and without
(``copy-paste-bcp``: BCP's stage 1, the study's control); ``copy-paste-teacher`` in stage 1 (``-s1``: the whole
run stage 1) and in stage 2 (``-s2``: from the first step), the latter also without consistency (``-s2-nocons``)
and without both (``-s2-bcp``: BCP's own recipe). ``stage2 / stage1`` is two_stage_budget.STAGE2_COST_RATIO.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))  # bench/studies: the ACDC plan's drivers

import common

PLANS = ("la", "acdc-2d")

# the bundled model's plan (bench/lib/la_study.py PLAN)
PATCH, BASE, SPACING = (48, 48, 32), 16, (2.0, 2.0, 2.0)
SYNTHETIC_SHAPE = (96, 96, 28)  # an LA scan (576 x 576 x 88 at 0.625 mm) on the 2.0 mm grid, trimmed
# name: (mode, recipe overrides, stage-1 fraction)
VARIANTS = {
    "seg": ("seg", {}, None), "lsf": ("lsf", {}, None), "seg+lsf": ("seg+lsf", {}, None), "dtc": ("dtc", {}, None),
    "copy-paste": ("copy-paste", {}, None),
    "copy-paste-bcp": ("copy-paste", {"cp_levelset": False, "cp_consistency": False}, None),
    "copy-paste-teacher-s1": ("copy-paste-teacher", {}, 1.0),
    "copy-paste-teacher-s2": ("copy-paste-teacher", {}, 0.0),
    "copy-paste-teacher-s2-nocons": ("copy-paste-teacher", {"cp_consistency": False}, 0.0),
    "copy-paste-teacher-s2-bcp": ("copy-paste-teacher", {"cp_levelset": False, "cp_consistency": False}, 0.0),
}


def synthetic_manifest(folder: Path, labeled: int = 4, unlabeled: int = 4, seed: int = 0) -> Path:
    """LA-like scans on the 2.0 mm grid (an ellipsoid of about LA size on noise) and their manifest."""
    from DTCCore.data.images import Geometry, write_image

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in SYNTHETIC_SHAPE], indexing="ij"))
    body: dict = {"labeled": [], "unlabeled": []}
    for i in range(labeled + unlabeled):
        centre = np.array([rng.uniform(0.4, 0.6) * s for s in SYNTHETIC_SHAPE], np.float32)
        radii = np.array([rng.uniform(12, 18), rng.uniform(10, 16), rng.uniform(6, 9)], np.float32)
        label = (sum(((grid[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1).astype(np.uint8)
        image = (100 + 60 * label + rng.normal(0, 12, SYNTHETIC_SHAPE)).astype(np.float32)
        write_image(folder / f"case{i}.nrrd", image, Geometry(spacing=SPACING))
        if i < labeled:
            write_image(folder / f"case{i}_label.nrrd", label, Geometry(spacing=SPACING))
            body["labeled"].append({"image": f"case{i}.nrrd", "label": f"case{i}_label.nrrd"})
        else:
            body["unlabeled"].append(f"case{i}.nrrd")
    path = folder / "manifest.json"
    path.write_text(json.dumps(body, indent=1))
    return path


def la_manifest(data: Path, folder: Path) -> Path:
    cases = common.read_list(data, "train.list")
    body = {"labeled": [{"image": str(common.case_files(data, c)[0]), "label": str(common.case_files(data, c)[1])}
                        for c in cases[:4]],
            "unlabeled": [str(common.case_files(data, c)[0]) for c in cases[4:8]]}
    path = folder / "manifest.json"
    path.write_text(json.dumps(body, indent=1))
    return path


def la_config(mode: str):
    """The bundled model's LA plan (fp32, batches built in this process) for ``mode``."""
    from DTCCore.config import DTCConfig

    config = DTCConfig()
    config.plan.spacing = SPACING
    config.network.base_filters = BASE
    config.recipe.mode = mode
    config.train.patch = PATCH
    return config


def acdc_config(mode: str, iterations: int):
    """The ACDC study's 2-D plan for ``mode`` (train_acdc.make_config of copy_paste_acdc.PLAN), batches built in this
    process; its schedule fitted to ``iterations``."""
    import copy_paste_acdc
    import train_acdc

    args = train_acdc.parser().parse_args([*copy_paste_acdc.PLAN, "--mode", mode, "--minutes", "0",
                                           "--iterations", str(iterations), "--workers", "0", "--device", "cpu"])
    return train_acdc.make_config(args)


def acdc_manifest(data: Path, folder: Path, mode: str) -> Path:
    """The first 4 labeled + 4 unlabeled patients of ``data``'s train.list (no unlabeled ones for a labeled-only
    ``mode``, as in the study)."""
    import train_acdc

    return train_acdc.build_manifest(data, 4, 4, mode, folder / f"acdc_{mode}")


def variant_config(name: str, iterations: int, plan: str = "la"):
    """The config a variant trains on ``plan`` for ``iterations`` steps: the plan's, the variant's mode, recipe
    switches and stage-1 fraction; fp32 on the CPU, batches built in this process, a progress event every step."""
    mode, recipe, fraction = VARIANTS[name]
    config = acdc_config(mode, iterations) if plan == "acdc-2d" else la_config(mode)
    for key, value in recipe.items():
        setattr(config.recipe, key, value)
    if fraction is not None:
        config.recipe.cp_stage1_fraction = fraction
    t = config.train
    t.iterations, t.num_workers, t.device, t.precision = iterations, 0, "cpu", "fp32"
    t.log_every, t.checkpoint_every, t.precise_bn_batches = 1, 10**9, 0
    config.validate()
    return config


def time_variant(name: str, manifest: Path, warmup: int, steps: int, folder: Path, plan: str = "la") -> dict:
    """CPU and wall seconds per step of one variant between iterations ``warmup`` and ``warmup + steps``; ``plan``:
    ``la`` (``manifest`` used) or ``acdc-2d`` (``manifest``: the ACDC folder)."""
    from DTCCore.training.trainer import train

    mode = VARIANTS[name][0]
    config = variant_config(name, warmup + steps, plan)
    if plan == "acdc-2d":
        manifest = acdc_manifest(manifest, folder, mode)
    marks: dict[int, tuple[float, float]] = {}

    def progress(record: dict) -> None:
        if record.get("event") == "progress":
            marks[int(record["iteration"])] = (time.process_time(), time.perf_counter())

    train(config, manifest, folder / name, progress=progress)
    (cpu0, wall0), (cpu1, wall1) = marks[warmup], marks[warmup + steps]
    return {"variant": name, "mode": mode, "cpu_s": (cpu1 - cpu0) / steps, "wall_s": (wall1 - wall0) / steps}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--plan", choices=PLANS, default="la",
                   help="la: the bundled model's plan; acdc-2d: the ACDC study's 2-D plan (needs --data)")
    p.add_argument("--data", type=Path, help="an LA2018 folder (default: synthetic scans), or with --plan acdc-2d "
                                             "an ACDC folder")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {', '.join(unknown)}; use {', '.join(VARIANTS)}")
    if args.plan == "acdc-2d" and (args.data is None or not (args.data / "train.list").is_file()):
        raise SystemExit("error: --plan acdc-2d needs --data: an ACDC folder with train.list and "
                         "<patient>/image.nrrd, label.nrrd")
    with tempfile.TemporaryDirectory(prefix="dtc-mode-cost-") as tmp:
        folder = Path(tmp)
        if args.plan == "acdc-2d":
            manifest = args.data.resolve()  # the manifest lies in a temporary folder
        else:
            manifest = la_manifest(args.data, folder) if args.data else synthetic_manifest(folder)
        rows = [time_variant(n, manifest, args.warmup, args.steps, folder, args.plan) for n in names]
    seg = next((r["cpu_s"] for r in rows if r["variant"] == "seg"), None)
    for r in rows:
        r["ratio_to_seg"] = r["cpu_s"] / seg if seg else None
    out: dict = {"device": common.device_name("cpu"), "plan": args.plan, "warmup": args.warmup, "steps": args.steps,
                 "data": args.data.name if args.data else "synthetic", "rows": rows}  # no machine path
    by = {r["variant"]: r["cpu_s"] for r in rows}
    if "copy-paste-teacher-s1" in by and "copy-paste-teacher-s2" in by:
        out["stage2_over_stage1"] = by["copy-paste-teacher-s2"] / by["copy-paste-teacher-s1"]
    print(f"CPU seconds per training step, {out['device']}, {args.plan} plan, {args.steps} steps after "
          f"{args.warmup}, {out['data']} data")
    print(common.markdown_table(["variant", "CPU s / step", "wall s / step", "x seg (CPU)"],
                                 [[r["variant"], round(r["cpu_s"], 3), round(r["wall_s"], 3),
                                   "" if r["ratio_to_seg"] is None else round(r["ratio_to_seg"], 2)] for r in rows]))
    if "stage2_over_stage1" in out:
        print(f"copy-paste-teacher stage 2 / stage 1: {out['stage2_over_stage1']:.2f}")
    if args.json:
        common.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
    sys.exit(0)
