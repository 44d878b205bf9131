"""A model's label table: one entry per foreground class (value, name, colour, terminology entry).

Where a model's table comes from, first found wins:

1. the checkpoint's extra metadata, key ``"labels"`` (a list of entries);
2. a sidecar file next to the model, ``<model stem>.labels.json`` (``model.labels.json`` next to a
   ``model.pt``; ``default.labels.json`` next to the bundled ``default.pt``), written atomically;
3. a generic table ``Class 1 .. Class C`` with distinct colours and no terminology.

An entry is ``{"value": int >= 1, "name": str, "color": [r, g, b] in [0, 1], "terminology": str}``;
``terminology`` is a 3D Slicer terminology entry string (``context~category~type~modifier~region
context~region~region modifier|``, each code ``scheme^value^meaning``) or ``""``. No torch here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import DTCError

# SNOMED CT 82471001 "Left atrium" is in the "DICOM master list" terminology context (not in 3D Slicer's
# "General Anatomy list"); category SCT 123037004 "Anatomical Structure".
LEFT_ATRIUM_TERMINOLOGY = (
    "Segmentation category and type - DICOM master list"
    "~SCT^123037004^Anatomical Structure~SCT^82471001^Left atrium~^^"
    "~Anatomic codes - DICOM master list~^^~^^|"
)
LEFT_ATRIUM = {"value": 1, "name": "Left atrium", "color": [0.85, 0.35, 0.35], "terminology": LEFT_ATRIUM_TERMINOLOGY}
# Generic colours for classes without a table (our choice: distinguishable on grey-level scans).
PALETTE = ([0.85, 0.35, 0.35], [0.35, 0.65, 0.35], [0.3, 0.45, 0.85], [0.9, 0.75, 0.2], [0.65, 0.35, 0.75],
           [0.2, 0.75, 0.8], [0.9, 0.5, 0.2], [0.6, 0.6, 0.6])


def sidecar_path(model_path: str | os.PathLike) -> Path:
    path = Path(model_path)
    return path.with_name(path.stem + ".labels.json")


def generic_table(num_classes: int) -> list[dict[str, Any]]:
    return [{"value": c, "name": f"Class {c}", "color": list(PALETTE[(c - 1) % len(PALETTE)]), "terminology": ""}
            for c in range(1, num_classes + 1)]


def validate_table(table: Any, num_classes: int, where: str = "label table") -> list[dict[str, Any]]:
    """The table with defaults filled in; DTCError when it does not describe classes 1..num_classes."""
    if not isinstance(table, list) or len(table) != num_classes:
        raise DTCError(f"{where} must list {num_classes} class(es), one entry each")
    out = []
    for c, entry in enumerate(table, start=1):
        if not isinstance(entry, dict) or not str(entry.get("name", "")).strip():
            raise DTCError(f"{where}: entry {c} needs a non-empty name")
        color = entry.get("color", PALETTE[(c - 1) % len(PALETTE)])
        if not (isinstance(color, (list, tuple)) and len(color) == 3 and all(0.0 <= float(v) <= 1.0 for v in color)):
            raise DTCError(f"{where}: entry {c} colour must be three numbers in [0, 1]")
        if int(entry.get("value", c)) != c:
            raise DTCError(f"{where}: entry {c} has value {entry.get('value')}; "
                           f"values must be 1..{num_classes} in order")
        out.append({"value": c, "name": str(entry["name"]), "color": [float(v) for v in color],
                    "terminology": str(entry.get("terminology", "") or "")})
    return out


def read_table(model_path: str | os.PathLike, extra: dict[str, Any], num_classes: int) -> list[dict[str, Any]]:
    """The model's label table (checkpoint metadata, else sidecar, else generic)."""
    if "labels" in extra:
        return validate_table(extra["labels"], num_classes, f"{model_path} labels")
    sidecar = sidecar_path(model_path)
    if sidecar.exists():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DTCError(f"{sidecar} is not readable JSON ({exc}); fix or delete it") from None
        return validate_table(data.get("labels") if isinstance(data, dict) else data, num_classes, str(sidecar))
    return generic_table(num_classes)


def write_sidecar(model_path: str | os.PathLike, table: list[dict[str, Any]]) -> Path:
    """Store ``table`` next to the model (atomic write); returns the sidecar path."""
    path = sidecar_path(model_path)
    atomic_write_text(path, json.dumps({"labels": table}, indent=1) + "\n")
    return path
