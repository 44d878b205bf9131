"""``dtc info [MODEL...]``: what a model is and expects, as JSON lines (the Slicer panel reads them).

One line per model: ``{"event": "model", "path", "title", "iteration", "created", "num_classes",
"labels", "plan": {"patch", "spacing", "normalization", "overlap"}, "data", "validation_dice",
"test_dice", "mode", "config", "training_extent_mm"}`` (the largest training scan's size, mm x y z; null
when the model does not record it), or ``{"event": "model-error", "path", "error"}`` for an unreadable
file (the command goes on with the next one). ``--device auto|cuda|cpu`` adds ``{"event": "device",
"requested", "resolved", "description", "cuda_available", "why_no_gpu"}``. Without MODEL the bundled
default model is described.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import DTCError
from ..planning.extent import EXTENT_KEY, model_training_extent
from ..planning.pools import REFERENCE_POOLS
from ..protocol import Event
from . import device_argument
from .events import emit

CARD_KEYS = ("title", "data", "validation_dice", "test_dice", "trained_on", "iterations_done", "train_seconds",
             "labeled", "unlabeled")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe models (label table, plan, training data) as JSON lines",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", metavar="MODEL", help="model files (default: the bundled model)")
    p.add_argument("--device", type=device_argument, metavar="auto|cpu|cuda|cuda:N",
                   help="also describe what this device choice resolves to")
    p.set_defaults(run=run)


def describe_model(path: Path) -> dict[str, Any]:
    from ..data.labels import read_table
    from ..model.checkpoint import read_model_info

    info = read_model_info(path)
    config = info.pop("config")
    extra = {k: v for k, v in info.items() if k not in ("path", "iteration", "created", "dtc_version")}
    num_classes = int(config["network"]["num_classes"])
    out = {
        "path": str(path), "iteration": info["iteration"], "created": str(info["created"]),
        "dtc_version": info["dtc_version"], "num_classes": num_classes,
        "labels": read_table(path, extra, num_classes),
        "plan": {"patch": list(config["train"]["patch"]), "spacing": (config.get("plan") or {}).get("spacing"),
                 "normalization": "z-score over the scan (or the region of interest)",
                 "overlap": config.get("infer", {}).get("overlap"),
                 "pools": list(config["network"].get("pools", REFERENCE_POOLS)),
                 "dims": int(config["network"].get("dims", 3))},
        "mode": config.get("recipe", {}).get("mode"), "base_filters": config["network"]["base_filters"],
        "config": config,
    }
    out.update({k: extra[k] for k in CARD_KEYS if k in extra})
    out[EXTENT_KEY] = model_training_extent(path, extra)  # mm x y z of its training scans; None: unknown
    return out


def run(args: argparse.Namespace) -> int:
    from ..model.checkpoint import DEFAULT_MODEL

    paths = [Path(p) for p in args.models] or [DEFAULT_MODEL]
    for path in paths:
        try:
            emit(Event.MODEL, **json.loads(json.dumps(describe_model(path), default=str)))
        except DTCError as exc:
            emit(Event.MODEL_ERROR, path=str(path), error=str(exc))
    if args.device:
        from ..runtime.devices import device_report  # torch: only when asked

        emit(Event.DEVICE, **device_report(args.device))
    return 0
