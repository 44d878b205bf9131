"""The dataset manifest: which volumes are labeled examples and which are unlabeled.

Format (JSON)::

    {"labeled": [{"image": "case01/image.nrrd", "label": "case01/label.nrrd"}, ...],
     "unlabeled": ["case50/image.nrrd", ...]}

Relative paths are relative to the folder of the manifest file. In memory every path is absolute
(normalised with ``os.path.abspath``, symlinks kept); duplicates are detected on resolved paths.
``save_manifest`` writes paths relative to the manifest's folder when they lie inside it, so a dataset
folder can be moved as a whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import DTCError

_MAX_LISTED = 5  # missing files named in one error message; the rest are counted


@dataclass
class LabeledPair:
    image: Path
    label: Path


@dataclass
class Manifest:
    labeled: list[LabeledPair] = field(default_factory=list)
    unlabeled: list[Path] = field(default_factory=list)
    path: Path | None = None  # the file it was loaded from / saved to


def _abs(p: str | os.PathLike, folder: Path) -> Path:
    return Path(os.path.abspath(folder / Path(p).expanduser()))


def _listing(paths: list) -> str:
    shown = ", ".join(str(p) for p in paths[:_MAX_LISTED])
    return shown + (f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else "")


def _parse(data: object, path: Path) -> Manifest:
    folder = path.parent
    if not isinstance(data, dict):
        raise DTCError(f"manifest {path} must be a JSON object with keys 'labeled' and 'unlabeled'")
    unknown = sorted(set(data) - {"labeled", "unlabeled"})
    if unknown:
        raise DTCError(f"manifest {path} has unknown key(s) {unknown}; only 'labeled' and 'unlabeled' are allowed")
    labeled_raw = data.get("labeled", [])
    unlabeled_raw = data.get("unlabeled", [])
    if not isinstance(labeled_raw, list):
        raise DTCError(f"manifest {path}: 'labeled' must be a list of {{\"image\": ..., \"label\": ...}} objects")
    if not isinstance(unlabeled_raw, list):
        raise DTCError(f"manifest {path}: 'unlabeled' must be a list of image paths")
    labeled = []
    for i, item in enumerate(labeled_raw):
        if not isinstance(item, dict) or set(item) != {"image", "label"}:
            raise DTCError(
                f"manifest {path}: 'labeled'[{i}] must be an object with exactly the keys 'image' and 'label'"
            )
        if not all(isinstance(item[k], str) and item[k] for k in ("image", "label")):
            raise DTCError(f"manifest {path}: 'labeled'[{i}] 'image' and 'label' must be non-empty path strings")
        labeled.append(LabeledPair(_abs(item["image"], folder), _abs(item["label"], folder)))
    unlabeled = []
    for i, item in enumerate(unlabeled_raw):
        if not isinstance(item, str) or not item:
            raise DTCError(f"manifest {path}: 'unlabeled'[{i}] must be a non-empty path string")
        unlabeled.append(_abs(item, folder))
    return Manifest(labeled, unlabeled, path)


def validate_manifest(m: Manifest, *, require_labeled: bool = True, check_files: bool = True) -> None:
    """Raise DTCError for missing files, duplicate cases or (if required) no labeled pair."""
    where = f"manifest {m.path}" if m.path is not None else "the manifest"
    if check_files:
        files = [p for pair in m.labeled for p in (pair.image, pair.label)] + list(m.unlabeled)
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise DTCError(f"{where} lists {len(missing)} missing file(s): {_listing(missing)}; fix the paths")
    seen: dict[Path, str] = {}
    for role, p in [("labeled image", pair.image) for pair in m.labeled] + [
        ("label", pair.label) for pair in m.labeled
    ] + [("unlabeled image", p) for p in m.unlabeled]:
        key = p.resolve()
        if key in seen:
            raise DTCError(
                f"{where} lists {p} twice (as {seen[key]} and as {role}); each volume may appear only once"
            )
        seen[key] = role
    if require_labeled and not m.labeled:
        raise DTCError(f"{where} has no labeled pairs; training needs at least 1 labeled image + label")


def load_manifest(path: str | os.PathLike, *, require_labeled: bool = True, check_files: bool = True) -> Manifest:
    """Load and validate a manifest (see the module docstring for the format).

    Raises DTCError for: a missing file, invalid JSON (line/column given), a wrong structure (key named),
    missing image/label files (up to 5 listed), a volume listed twice, no labeled pair (unless
    ``require_labeled=False``). Zero unlabeled volumes is fine.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DTCError(f"manifest {path} does not exist; create it or check the path") from None
    except IsADirectoryError:
        raise DTCError(f"manifest {path} is a folder; give the path of the manifest .json file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DTCError(f"cannot read manifest {path} ({exc}); check the file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DTCError(
            f"manifest {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); fix it"
        ) from None
    m = _parse(data, path)
    validate_manifest(m, require_labeled=require_labeled, check_files=check_files)
    return m


def _rel(p: Path, folder: Path) -> str:
    p = Path(os.path.abspath(p))
    if p.is_relative_to(folder):
        return p.relative_to(folder).as_posix()
    return str(p)


def save_manifest(m: Manifest, path: str | os.PathLike) -> None:
    """Write ``m`` to ``path`` atomically; paths inside the manifest's folder are written relative to it.

    Sets ``m.path`` to the absolute ``path``.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    folder = path.parent
    data = {
        "labeled": [{"image": _rel(pair.image, folder), "label": _rel(pair.label, folder)} for pair in m.labeled],
        "unlabeled": [_rel(p, folder) for p in m.unlabeled],
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    m.path = path


def _load_or_new(manifest_path: Path) -> Manifest:
    if manifest_path.exists():
        return load_manifest(manifest_path, require_labeled=False)
    return Manifest([], [], manifest_path)


def _existing(p: str | os.PathLike, what: str) -> Path:
    p = Path(os.path.abspath(Path(p).expanduser()))
    if not p.is_file():
        raise DTCError(f"{what} {p} does not exist; save it before adding it to the manifest")
    return p


def add_labeled(manifest_path: str | os.PathLike, image: str | os.PathLike, label: str | os.PathLike,
                replaces: str | os.PathLike | None = None) -> Manifest:
    """Append a labeled pair to the manifest (created if missing) and save it atomically.

    ``replaces``: an unlabeled entry that the pair labels (the annotator corrected that scan); it leaves the
    unlabeled list in the same write, so the scan is never both, nor ranked again. Raises DTCError when a
    file does not exist, the image/label is already in the manifest, or ``replaces`` is not unlabeled in it.
    """
    manifest_path = Path(os.path.abspath(Path(manifest_path).expanduser()))
    m = _load_or_new(manifest_path)
    if replaces is not None:
        target = Path(os.path.abspath(Path(replaces).expanduser())).resolve()
        kept = [p for p in m.unlabeled if p.resolve() != target]
        if len(kept) == len(m.unlabeled):
            raise DTCError(f"{replaces} is not an unlabeled volume of manifest {manifest_path}; "
                           "add the labeled pair without it")
        m.unlabeled = kept
    pair = LabeledPair(_existing(image, "image"), _existing(label, "label"))
    m.labeled.append(pair)
    try:
        validate_manifest(m, require_labeled=False, check_files=False)
    except DTCError:
        raise DTCError(
            f"{pair.image} or {pair.label} is already in manifest {manifest_path}; remove the old entry first"
        ) from None
    save_manifest(m, manifest_path)
    return m


def add_unlabeled(manifest_path: str | os.PathLike, image: str | os.PathLike) -> Manifest:
    """Append an unlabeled volume to the manifest (created if missing) and save it atomically.

    Raises DTCError when the file does not exist or is already in the manifest.
    """
    manifest_path = Path(os.path.abspath(Path(manifest_path).expanduser()))
    m = _load_or_new(manifest_path)
    p = _existing(image, "image")
    m.unlabeled.append(p)
    try:
        validate_manifest(m, require_labeled=False, check_files=False)
    except DTCError:
        raise DTCError(f"{p} is already in manifest {manifest_path}; remove the old entry first") from None
    save_manifest(m, manifest_path)
    return m
