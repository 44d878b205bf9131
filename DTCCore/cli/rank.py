"""``dtc rank IMAGE...``: order unlabeled scans by how much the model's two heads disagree.

The scan to annotate next is the one where the segmentation head and the level-set head disagree
most (mean |p_seg - p_levelset| over the scan). With ``--jsonl``: ``{"event": "progress", "done",
"total", "case"}`` after each scan, then ``{"event": "ranked", "ranking": [[path, score], ...]}``
highest first. Window overlap 0.25 (fast: the ranking needs the mean, not a fine outline).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import DTCError
from ..protocol import Event
from . import device_argument, events

RANK_OVERLAP = 0.25  # our choice: half the windows of overlap 0.5; the mean disagreement barely moves


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rank", help="rank unlabeled scans by dual-task disagreement (what to annotate next)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="scans to rank")
    p.add_argument("--model", metavar="MODEL", help="model.pt (default: the bundled model)")
    p.add_argument("--device", type=device_argument, metavar="auto|cpu|cuda|cuda:N", default="auto",
                   help="default auto: CUDA when present")
    events.add_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.images import read_image
    from ..inference.predict import predict_volume
    from ..model.checkpoint import load_model
    from ..runtime.devices import describe_device, resolve_device

    cancelled = events.cancel_check(args.cancel_file)
    device = resolve_device(args.device)
    model, config = load_model(args.model, device)
    config.infer.overlap = RANK_OVERLAP
    events.log(f"model: {args.model or 'the bundled default model'}; device: {describe_device(device)}")
    if args.jsonl:
        events.emit(Event.START, device=describe_device(device), total=len(args.images),
                    threads=torch.get_num_threads())

    def check(done: int, total: int) -> None:
        events.raise_if_cancelled(cancelled, "ranking")

    scores = []
    for i, path in enumerate(args.images):
        events.raise_if_cancelled(cancelled, "ranking")
        if not Path(path).exists():
            raise DTCError(f"{path} does not exist; remove it from the dataset or restore the file")
        image, geometry = read_image(path)
        prediction = predict_volume(model, image, config, device, progress=check, spacing=geometry.spacing)
        scores.append((str(path), float(np.mean(prediction.disagreement))))
        if args.jsonl:
            events.emit(Event.PROGRESS, done=i + 1, total=len(args.images), case=str(path))
    ranking = sorted(scores, key=lambda s: s[1], reverse=True)
    if args.jsonl:
        events.emit(Event.RANKED, ranking=[list(s) for s in ranking])
    else:
        for path, score in ranking:
            print(f"{score:.5f}\t{path}", file=sys.stdout)
    return 0
