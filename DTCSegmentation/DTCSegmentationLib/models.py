"""The model registry: the bundled default model and the models trained in a models folder.

A model trained here lives in ``<models folder>/<run name>/model.pt`` (the trainer's run folder, next
to its ``log.jsonl`` and ``curves.png``; ``model.labels.json`` holds its label table). Listing only
looks at files (no torch in Slicer's process); what each model is and expects comes from ``dtc info``
run in the background (:class:`~DTCSegmentationLib.jobs.infojob.ModelInfoJob`) and :func:`describe`.
Import copies a model file (with its label table) into the models folder; export copies one out.
"""

from __future__ import annotations

import datetime
import shutil
from dataclasses import dataclass
from pathlib import Path

from DTCCore.planning.pools import REFERENCE_POOLS  # torch-free
from DTCCore.protocol import CHECKPOINT_DIR, CHECKPOINT_PATTERN, DEFAULT_MODEL, MODEL_MAGIC  # torch-free

DEFAULT_LABEL = "Bundled default (left atrium MRI)"
RUN_PREFIX = "finetune"  # run folders the panel creates: <models folder>/finetune-YYYYmmdd-HHMMSS
VALIDATION_KEYS = ("validation_dice", "val_dice", "dice")  # names the trainer may use in ``extra``


@dataclass
class ModelEntry:
    path: Path  # the model file (the bundled default included)
    label: str
    bundled: bool = False


def bundled_model_path() -> Path:
    """The bundled default model (next to DTCCore; no torch import)."""
    return DEFAULT_MODEL


def describe(info: dict) -> str:
    """What a model is and expects, from its ``dtc info`` record (one short paragraph)."""
    if "error" in info:
        return f"Unreadable: {info['error']}"
    parts = [info.get("title") or f"{info.get('iteration', '?')} iterations"]
    created = info.get("created")
    if isinstance(created, (int, float)):
        created = datetime.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M")
    if created:
        parts.append(f"created {str(created)[:16]}")
    names = ", ".join(entry["name"] for entry in info.get("labels", []))
    if names:
        parts.append(f"classes: {names}")
    plan = info.get("plan") or {}
    if plan.get("patch"):
        parts.append("patch " + "x".join(str(v) for v in plan["patch"]))
    spacing = plan.get("spacing")
    parts.append(f"spacing {spacing} mm" if spacing else "spacing: the scan's own")
    pools = plan.get("pools")
    if plan.get("dims") == 2:  # dtc train --dims 2: in-plane convolutions, slice by slice
        parts.append("2-D network (segments slice by slice along the scan's third axis)")
    elif pools and tuple(pools) != REFERENCE_POOLS:  # the paper's network halves every axis 4 times
        parts.append("thick-slice network (axes x/y/z halved " + "/".join(str(v) for v in pools) + " times)")
    data = info.get("data")
    if isinstance(data, dict):
        parts.append("trained on " + ", ".join(f"{k} {v}" for k, v in data.items() if not isinstance(v, (list, dict))))
    elif "labeled" in info:
        parts.append(f"trained on {info['labeled']} labeled, {info.get('unlabeled', 0)} unlabeled scans")
    for key in VALIDATION_KEYS:
        if isinstance(info.get(key), (int, float)):
            parts.append(f"validation Dice {100 * info[key]:.1f}%")
            break
    if isinstance(info.get("test_dice"), (int, float)):
        parts.append(f"test Dice {100 * info['test_dice']:.2f}% as Segment runs it")
    if ((info.get("config") or {}).get("infer") or {}).get("largest_component"):
        parts.append("keeps the largest connected component")
    if info.get("mode"):
        parts.append(f"mode {info['mode']}")
    return "; ".join(p for p in parts if p)


def list_models(models_folder: str | Path | None) -> list[ModelEntry]:
    """The bundled default (if present) then every ``*/model.pt`` under ``models_folder``, newest first."""
    entries = []
    bundled = bundled_model_path()
    if bundled.exists():
        entries.append(ModelEntry(bundled, DEFAULT_LABEL, bundled=True))
    if models_folder and str(models_folder) != "." and Path(models_folder).is_dir():
        found = sorted(Path(models_folder).glob("*/model.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        entries += [ModelEntry(path, path.parent.name) for path in found]
    return entries


def import_model(model_file: str | Path, models_folder: str | Path) -> Path:
    """Copy a model file (and its ``.labels.json`` when present) to ``<models>/<name>/model.pt``, atomically
    (an interrupted copy leaves no run folder)."""
    from DTCCore.atomic import atomic_copy_file
    from DTCCore.data.labels import sidecar_path
    from DTCCore.errors import DTCError

    source = Path(model_file)
    if not source.is_file():
        raise DTCError(f"{source} is not a file; pick a model .pt file")
    if source.read_bytes()[:len(MODEL_MAGIC)] != MODEL_MAGIC:
        raise DTCError(f"{source} is not a DTCSegmentation model; "
                       "pick a model.pt written by 'dtc train' or exported here")
    target = new_run_dir(models_folder, prefix=f"imported-{source.stem}") / "model.pt"
    target.parent.mkdir(parents=True)
    try:  # the label table first: the model list shows a model.pt only once it is whole, with its table
        if sidecar_path(source).exists():
            atomic_copy_file(sidecar_path(source), sidecar_path(target))
        atomic_copy_file(source, target)
    except BaseException:
        shutil.rmtree(target.parent, ignore_errors=True)
        raise
    return target


def export_model(model_file: str | Path, target: str | Path) -> Path:
    """Copy a model (with its label table and model card, when present) to ``target`` (never overwrites),
    each file atomically."""
    from DTCCore.atomic import atomic_copy_file
    from DTCCore.data.labels import sidecar_path
    from DTCCore.errors import DTCError

    source, target = Path(model_file), Path(target)
    if target.exists():
        raise DTCError(f"{target} already exists; choose another file name")
    if sidecar_path(source).exists():
        atomic_copy_file(sidecar_path(source), sidecar_path(target))
    card = source.with_suffix(".json")  # the bundled model's card (default.json)
    if card.exists():
        atomic_copy_file(card, target.with_suffix(".card.json"))
    atomic_copy_file(source, target)  # last: a whole model.pt means its table and card are there
    return target


def resumable_run(models_folder: str | Path | None) -> tuple[Path, int] | None:
    """The newest fine-tune a restart of Slicer can resume: ``(run folder, iteration)`` or None.

    A run folder qualifies when it has a checkpoint and no ``model.pt`` (it was cancelled, or Slicer quit
    or crashed while it trained). Newest = the most recently written checkpoint. Files only, no torch.
    """
    if models_folder is None or not Path(models_folder).is_dir():
        return None
    best: tuple[float, Path, int] | None = None
    for run in Path(models_folder).glob(f"{RUN_PREFIX}-*"):
        folder = run / CHECKPOINT_DIR
        if (run / "model.pt").exists() or not folder.is_dir():
            continue
        for file in folder.iterdir():
            m = CHECKPOINT_PATTERN.match(file.name)
            if m and (best is None or file.stat().st_mtime > best[0]):
                best = (file.stat().st_mtime, run, int(m.group(1)))
    return (best[1], best[2]) if best else None


def new_run_dir(models_folder: str | Path, prefix: str = RUN_PREFIX) -> Path:
    """A fresh run folder name ``<models>/<prefix>-YYYYmmdd-HHMMSS`` (suffixed if taken)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(models_folder) / f"{prefix}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
