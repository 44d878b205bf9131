"""The physical size of a model's training scans, and the one-line warning for a much larger scan.

A model learns what its training scans show: the left-atrium models saw crops around the atrium, not a
clinician's whole field of view. Each model records the extent of its training scans (mm per axis, the
largest training scan's size along each axis, from the image headers), and ``dtc segment`` and the
Slicer panel say, in one line, when a scan is more than :data:`OVERSIZE_FACTOR` times larger along an
axis, pointing to the region of interest that crops it.

Where a model's extent comes from, first found wins: the checkpoint's metadata (key
:data:`EXTENT_KEY`, written by ``dtc train``), then the model's JSON card ``<model stem>.json`` next to it
(the bundled ``default.json``: its model file predates the key). No torch here (the Slicer module uses it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Issue 25 ("much larger, say > 2x along an axis"): a scan twice the size of the largest training scan
# along an axis holds at least as much unseen surroundings as the whole training field of view.
OVERSIZE_FACTOR = 2.0
EXTENT_KEY = "training_extent_mm"
AXES = "xyz"


def physical_extent(shape: Sequence[int], spacing: Sequence[float]) -> tuple[float, float, float]:
    """Size in mm along x, y, z of an (X, Y, Z) voxel grid with ``spacing`` (mm): voxels x spacing."""
    return tuple(float(n) * float(s) for n, s in zip(shape, spacing))  # type: ignore[return-value]


def training_extent(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> list[float]:
    """Per-axis largest physical size (mm) over training scans; one (sx, sy, sz) and one (X, Y, Z) per scan."""
    if not spacings or len(spacings) != len(shapes):
        return []
    sizes = np.asarray(shapes, dtype=np.float64) * np.asarray(spacings, dtype=np.float64)
    return [round(float(v), 2) for v in sizes.max(axis=0)]


def manifest_training_extent(manifest_path: str | os.PathLike) -> list[float]:
    """:func:`training_extent` of every scan a manifest names, from the file headers (no voxel read)."""
    from .spacing import manifest_geometry

    spacings, shapes = manifest_geometry(manifest_path)
    return training_extent(spacings, shapes)


def card_path(model_path: str | os.PathLike) -> Path:
    """The model's JSON card: ``default.json`` next to ``default.pt``."""
    return Path(model_path).with_suffix(".json")


def model_training_extent(model_path: str | os.PathLike, extra: dict[str, Any]) -> list[float] | None:
    """A model's training extent (mm, x y z): checkpoint metadata, else its JSON card, else None (unknown)."""
    value = extra.get(EXTENT_KEY)
    if value is None:
        card = card_path(model_path)
        if card.is_file():
            try:
                value = json.loads(card.read_text(encoding="utf-8")).get(EXTENT_KEY)
            except (OSError, ValueError, AttributeError):
                value = None
    if not (isinstance(value, (list, tuple)) and len(value) == 3):
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if all(v > 0 for v in out) else None


def oversize_axes(scan_mm: Sequence[float], model_mm: Sequence[float] | None,
                  factor: float = OVERSIZE_FACTOR) -> list[tuple[str, float]]:
    """``[(axis name, scan / training size)]`` for each axis where the scan exceeds ``factor`` x the model's."""
    if not model_mm:
        return []
    return [(AXES[i], float(s) / float(m)) for i, (s, m) in enumerate(zip(scan_mm, model_mm))
            if float(s) > factor * float(m)]


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{float(v):.0f}" for v in values) + " mm"


def oversize_warning(scan_mm: Sequence[float], model_mm: Sequence[float] | None, where: str) -> str | None:
    """One line when the scan is much larger than the model's training scans, else None.

    ``where``: how to draw the region of interest in the caller's interface (an option, a panel field).
    """
    axes = oversize_axes(scan_mm, model_mm)
    if not axes or model_mm is None:  # no extent recorded: nothing to compare with
        return None
    along = ", ".join(f"{a} ({r:.1f}x)" for a, r in axes)
    return (f"this scan ({_mm(scan_mm)}) is over {OVERSIZE_FACTOR:g}x larger along {along} than the scans the "
            f"model was trained on (at most {_mm(model_mm)}); results outside the trained field of view are "
            f"unreliable: segment a region of interest around the structure ({where})")
