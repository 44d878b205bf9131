"""A model loaded before its command arrives (``dtc spare --model``, :mod:`DTCCore.cli.spare`), used once.

Loading the bundled model takes about 0.45 s on the 2-core VM (unpickling, the fp16 -> float32 weights, the
network's construction; issue 41), a third of what is left of a warm Segment. A spare that knows the model
loads it while it waits, on the CPU only (a GPU would mean initialising CUDA for a process that may never
run). The command then gets it from :func:`take` when it asks for the same file, unchanged since (same
resolved path, modification time and size), on the CPU; anything else loads as usual.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import DTCError
from ..protocol import DEFAULT_MODEL

_held: dict[str, Any] = {}  # "key": file_key, "loaded": (model, config, extra)


def file_key(path: str | os.PathLike | None) -> tuple[str, int, int]:
    """(resolved path, mtime in ns, size in bytes) of a model file (None: the bundled model)."""
    target = Path(path) if path is not None else DEFAULT_MODEL
    stat = target.stat()
    return str(target.resolve()), stat.st_mtime_ns, stat.st_size


def preload(path: str | os.PathLike | None) -> bool:
    """Load ``path`` (None: the bundled model) on the CPU for a later :func:`take`; False when it cannot be
    loaded (the command will then say why, as it always does)."""
    from .checkpoint import load_model_with_extra

    _held.clear()
    try:
        key = file_key(path)
        loaded = load_model_with_extra(path, "cpu")
    except (DTCError, OSError, RuntimeError, ValueError):
        return False
    _held.update(key=key, loaded=loaded)
    return True


def take(path: str | os.PathLike | None, device: str | torch.device) -> tuple[Any, Any, dict[str, Any]] | None:
    """The preloaded (model, config, extra) when ``path`` is the preloaded file, unchanged, and ``device`` the
    CPU; None otherwise. Either way nothing stays held: a model is used by one command."""
    if not _held or torch.device(device).type != "cpu":
        _held.clear()
        return None
    key, (model, config, extra) = _held.pop("key"), _held.pop("loaded")
    try:
        if file_key(path) != key:
            return None
    except OSError:
        return None
    return model, config, {**extra, "path": str(path if path is not None else DEFAULT_MODEL)}
