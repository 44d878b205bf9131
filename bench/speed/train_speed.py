"""Training-iteration speed: our trainer vs a reference-mode iteration, same data, same device, one run.

    python bench/speed/train_speed.py [--data ../shared/data/la2018] [--device cuda] [--labeled 4 --unlabeled 4]
                                      [--warmup 10 --iterations 40] [--tiny] [--json FILE]

ours       ``DTCCore.training.trainer.train`` itself (the real loader with worker processes, level sets cached per
           volume, bf16 autocast + channels_last_3d + cuDNN autotuning on CUDA), timed from its progress
           events between iteration ``warmup`` and ``warmup + iterations``;
reference  the reference code's iteration (train_la_dtc.py): fp32, deterministic cuDNN, the level set of
           every labeled crop recomputed on the CPU for each batch (``signed_distance_reference``), then
           forward, DTC losses, backward, SGD step and ``loss.item()``; crops come from the same loader.
Prints ms per iteration for both and the ratio; the data are the first ``--labeled`` cases of train.list
labeled and the next ``--unlabeled`` unlabeled (``--tiny``: synthetic blobs, tiny network, CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
from synthetic_la import synthetic_data


def make_manifest(data: Path, labeled: int, unlabeled: int, folder: Path) -> Path:
    """A manifest of the first ``labeled`` + next ``unlabeled`` cases of ``data/train.list``."""
    cases = common.read_list(data, "train.list")
    lab = [{"image": str(common.case_files(data, c)[0]), "label": str(common.case_files(data, c)[1])}
           for c in cases[:labeled]]
    unl = [str(common.case_files(data, c)[0]) for c in cases[labeled:labeled + unlabeled]]
    path = folder / "manifest.json"
    path.write_text(json.dumps({"labeled": lab, "unlabeled": unl}, indent=1))
    return path


def time_ours(config, manifest: Path, warmup: int, iterations: int) -> float:
    """Seconds per iteration of the real trainer between iterations ``warmup`` and ``warmup + iterations``."""
    from DTCCore.training.trainer import train

    marks: dict[int, float] = {}

    def progress(record: dict) -> None:
        if record.get("event") == "progress":
            marks[int(record["iteration"])] = time.perf_counter()

    config.train.iterations = warmup + iterations
    config.train.log_every = min(10, max(1, warmup)) if warmup else 1
    config.train.checkpoint_every = 10**9  # no checkpoint inside the timed span
    with tempfile.TemporaryDirectory(prefix="dtc-train-speed-") as tmp:
        train(config, manifest, Path(tmp) / "run", progress=progress)
    start = max(i for i in marks if i <= warmup) if warmup else min(marks)
    end = max(marks)
    return (marks[end] - marks[start]) / max(end - start, 1)


def time_reference(config, manifest: Path, warmup: int, iterations: int, device: torch.device) -> float:
    """Seconds per reference-mode iteration (see module docstring)."""
    from DTCCore.data.manifest import load_manifest
    from DTCCore.model.levelset import signed_distance_reference
    from DTCCore.model.losses import compute_losses
    from DTCCore.model.network import build_network
    from DTCCore.training.batches import TrainBatches, load_cases, make_loader

    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True  # reference: cudnn.benchmark False, deterministic True
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    labeled, unlabeled = load_cases(load_manifest(manifest), 1)
    t = config.train
    t.iterations = warmup + iterations
    dataset = TrainBatches(labeled, unlabeled, t, config.recipe, seed=t.seed)
    loader = make_loader(dataset, t.num_workers, pin_memory=device.type == "cuda")
    torch.manual_seed(t.seed)
    model = build_network(config.network).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    n_lab = t.labeled_batch
    t0 = None
    for i, batch in enumerate(loader):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        sdf = signed_distance_reference(batch["label"].numpy() == 1)[:, None]  # per batch, on the CPU
        image = batch["image"].to(device)
        label = batch["label"].to(device)
        seg, lsf = model(image)
        losses = compute_losses(seg, lsf, label, torch.from_numpy(sdf).to(device), n_lab, i, config.recipe)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        losses["total"].item()  # reference logs the losses every iteration
    assert t0 is not None
    return (time.perf_counter() - t0) / iterations


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--labeled", type=int, default=4)
    p.add_argument("--unlabeled", type=int, default=4)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--workers", type=int, default=4, help="loader processes for both (reference: 4)")
    p.add_argument("--only", choices=("ours", "reference"), help="time one of the two (the other is skipped)")
    p.add_argument("--tiny", action="store_true", help="synthetic data, base 2, patch 16x16x16, 3 iterations")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from DTCCore.config import DTCConfig

    def config() -> DTCConfig:
        c = DTCConfig()
        c.train.device = args.device
        c.train.num_workers = args.workers
        if args.tiny:
            c.network.base_filters, c.train.patch = 2, (16, 16, 16)
        c.validate()
        return c

    tmp = Path(tempfile.mkdtemp(prefix="dtc-train-bench-"))
    data = args.data
    if args.tiny:
        data = synthetic_data(tmp / "data")
        args.labeled, args.unlabeled, args.warmup, args.iterations, args.workers = 2, 1, 1, 2, 0
    manifest = make_manifest(data, args.labeled, args.unlabeled, tmp)
    device = torch.device(args.device)
    out = {"device": common.device_name(args.device), "labeled": args.labeled, "unlabeled": args.unlabeled,
           "warmup": args.warmup, "iterations": args.iterations}
    if args.only != "reference":
        out["ours_ms"] = 1000 * time_ours(config(), manifest, args.warmup, args.iterations)
    if args.only != "ours":
        out["reference_ms"] = 1000 * time_reference(config(), manifest, args.warmup, args.iterations, device)
    if "ours_ms" in out and "reference_ms" in out:
        out["speedup"] = out["reference_ms"] / out["ours_ms"]
    rows = [[k, out[k]] for k in ("ours_ms", "reference_ms", "speedup") if k in out]
    print(f"training iteration on {out['device']} ({args.labeled}+{args.unlabeled} cases, "
          f"{args.iterations} timed after {args.warmup} warm-up)")
    print(common.markdown_table(["quantity", "value"], rows))
    if args.json:
        common.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
    sys.exit(0)
