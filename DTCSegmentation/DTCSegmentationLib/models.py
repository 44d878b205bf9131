"""The model registry: the bundled default model and the models trained in a models folder.

A model trained here lives in ``<models folder>/<run name>/model.pt`` (the trainer's run folder, next
to its ``log.jsonl`` and ``curves.png``). Listing reads each checkpoint's metadata with
``DTCCore.checkpoint.read_model_info`` (lazy torch import: only when the list is refreshed).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LABEL = "Bundled default (left atrium MRI)"
VALIDATION_KEYS = ("validation_dice", "val_dice", "dice")  # names the trainer may use in ``extra``


@dataclass
class ModelEntry:
    path: Path | None  # None = the bundled default
    label: str
    description: str


def bundled_model_path() -> Path:
    from DTCCore import checkpoint

    return checkpoint.DEFAULT_MODEL


def describe(info: dict) -> str:
    """One line: iterations, date, data summary and validation Dice when known."""
    parts = [f"{info.get('iteration', '?')} iterations"]
    created = info.get("created")
    if isinstance(created, (int, float)):
        created = datetime.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M")
    if created:
        parts.append(str(created)[:16])
    data = info.get("data")
    if isinstance(data, dict):
        parts.append(", ".join(f"{k} {v}" for k, v in data.items() if not isinstance(v, (list, dict))))
    elif data:
        parts.append(str(data))
    for key in VALIDATION_KEYS:
        if isinstance(info.get(key), (int, float)):
            parts.append(f"validation Dice {100 * info[key]:.1f}%")
            break
    mode = info.get("config", {}).get("recipe", {}).get("mode")
    if mode:
        parts.append(f"mode {mode}")
    return "; ".join(p for p in parts if p)


def list_models(models_folder: str | Path | None) -> list[ModelEntry]:
    """The bundled default (if present) then every ``*/model.pt`` under ``models_folder``, newest first."""
    from DTCCore.checkpoint import read_model_info
    from DTCCore.errors import DTCError

    entries = []
    bundled = bundled_model_path()
    if bundled.exists():
        try:
            entries.append(ModelEntry(None, DEFAULT_LABEL, describe(read_model_info(bundled))))
        except DTCError as exc:
            entries.append(ModelEntry(None, DEFAULT_LABEL + " (unreadable)", str(exc)))
    if models_folder and str(models_folder) != "." and Path(models_folder).is_dir():
        found = sorted(Path(models_folder).glob("*/model.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in found:
            try:
                entries.append(ModelEntry(path, path.parent.name, describe(read_model_info(path))))
            except DTCError as exc:
                entries.append(ModelEntry(path, path.parent.name + " (unreadable)", str(exc)))
    return entries


def new_run_dir(models_folder: str | Path, prefix: str = "finetune") -> Path:
    """A fresh run folder name ``<models>/<prefix>-YYYYmmdd-HHMMSS`` (suffixed if taken)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(models_folder) / f"{prefix}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def run_losses(run_dir: str | Path) -> list[dict]:
    """Progress records of a run's ``log.jsonl`` (to redraw the loss curve of a finished run)."""
    log = Path(run_dir) / "log.jsonl"
    if not log.exists():
        return []
    records = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "progress":
            records.append(record)
    return records
