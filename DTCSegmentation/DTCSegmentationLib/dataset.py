"""The dataset folder an annotator builds: ``images/``, ``labels/``, ``manifest.json`` and ``labels.json``.

The manifest is the one ``dtc train`` reads (DTCCore.data.manifest). Adding a case writes the image and
the label with ``DTCCore.data.images.write_image`` (temp file + rename), then appends to the manifest with
``DTCCore.data.manifest.add_labeled`` (also atomic), so a crash never leaves a half-written file or a
manifest naming a missing one. A case already present is refused, never overwritten. A scan loaded from one
of the dataset's unlabeled entries by the annotation loop's Next case becomes that entry's labeled pair: it
leaves the unlabeled list in the same manifest write, and a file inside the dataset is kept as the pair's
image (refused if the scene's copy has changed since it was loaded).

``labels.json`` is the dataset's label table (DTCCore.data.labels entries), the one a model fine-tuned on
the dataset carries. The first labeled example writes it: the model's table when the segmentation
has several classes, the segment's own name, colour and terminology for a one-class model (as the
module always did). Later examples must agree with it (same classes, same names per value), else
they are refused before anything is written; it is never rewritten.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from DTCCore.atomic import atomic_write_text
from DTCCore.data import manifest as dtc_manifest
from DTCCore.data.images import Geometry, read_image, read_label, write_image
from DTCCore.data.labels import generic_table, validate_table
from DTCCore.errors import DTCError

from . import labelexport
from .sceneio import geometry_from_ijk_to_ras, ijk_to_ras, kji_to_xyz, require_scalar_volume

MANIFEST_NAME = "manifest.json"
IMAGE_DIR, LABEL_DIR = "images", "labels"
FILE_EXTENSION = ".nrrd"  # lossless, keeps the geometry, read by SimpleITK and Slicer
LABELS_NAME = "labels.json"  # the dataset's label table, for models fine-tuned on it


def case_name_from_node(node) -> str:
    """A file-safe case name from a node name ("CT chest 1/2" -> "CT_chest_1_2")."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", node.GetName()).strip("._")
    return name or "case"


class DatasetFolder:
    """A folder holding ``images/<case>.nrrd``, ``labels/<case>.nrrd`` and ``manifest.json``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        if not str(folder) or str(folder) == ".":
            raise DTCError("no dataset folder is set; choose one in Training data > Dataset folder")
        self.folder = Path(folder).expanduser().absolute()
        self.manifest_path = self.folder / MANIFEST_NAME
        self.labels_path = self.folder / LABELS_NAME

    def load(self) -> dtc_manifest.Manifest:
        """The manifest (empty when the folder has none yet); files are not checked."""
        if not self.manifest_path.exists():
            return dtc_manifest.Manifest(path=self.manifest_path)
        return dtc_manifest.load_manifest(self.manifest_path, require_labeled=False, check_files=False)

    def require_labeled(self) -> dtc_manifest.Manifest:
        """The manifest, or DTCError when it has no labeled pair (training needs at least one)."""
        m = self.load()
        if not m.labeled:
            raise DTCError(
                f"the dataset {self.folder} has no labeled pairs; add at least one with "
                "'Add current segmentation as labeled example'"
            )
        return m

    def _new_paths(self, case: str, labeled: bool, replacing: Path | None = None) -> tuple[Path, Path]:
        """Image and label paths of a new case; ``replacing``: the unlabeled entry it labels (may be the image)."""
        image = self.folder / IMAGE_DIR / f"{case}{FILE_EXTENSION}"
        label = self.folder / LABEL_DIR / f"{case}{FILE_EXTENSION}"
        m = self.load()
        known = ({p.image for p in m.labeled} | {p.label for p in m.labeled}
                 | {p for p in m.unlabeled if p != replacing})
        if image in known or (labeled and label in known):
            raise DTCError(
                f"case {case} is already in the dataset {self.folder}; rename the volume to add it as a new case "
                "or remove the old entry from manifest.json"
            )
        for p in (image, label) if labeled else (image,):
            if p.exists() and p != replacing:
                raise DTCError(f"{p} already exists (not in the manifest); move it away or rename the volume")
        return image, label

    def label_table(self) -> list[dict[str, Any]] | None:
        """The dataset's label table (``labels.json``), None before the first labeled example."""
        if not self.labels_path.exists():
            return None
        try:
            data = json.loads(self.labels_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DTCError(f"{self.labels_path} is not readable JSON ({exc}); fix or delete it") from None
        table = data.get("labels") if isinstance(data, dict) else data
        return validate_table(table, len(table) if isinstance(table, list) else 0, str(self.labels_path))

    def _require_agreement(self, existing: list[dict[str, Any]], table: list[dict[str, Any]]) -> None:
        """DTCError unless ``table`` has the classes of the dataset's ``labels.json`` (names per value)."""
        names = [[labelexport.name_key(e["name"]) for e in t] for t in (existing, table)]
        if len(existing) == len(table) and (len(table) == 1 or names[0] == names[1]):
            return
        raise DTCError(
            f"{self.labels_path} lists {labelexport.describe_table(existing)} from earlier examples, but "
            f"{labelexport.MODEL_TABLE} has {labelexport.describe_table(table)}; add this model's examples to a "
            f"new dataset folder, or pick the model the dataset was made for{labelexport.SCRATCH_HINT}"
        )

    def _target_table(self, label_node, table: list[dict[str, Any]] | None
                      ) -> tuple[list[dict[str, Any]], str, list[dict[str, Any]] | None]:
        """(table the label's values follow, its name in messages, table to write as labels.json or None)."""
        existing = self.label_table()
        own = labelexport.segmentation_table(label_node)
        if table is not None:
            table, source = validate_table(table, len(table), labelexport.MODEL_TABLE), labelexport.MODEL_TABLE
            if existing is not None:
                self._require_agreement(existing, table)
        elif existing is not None:
            table, source = existing, f"{labelexport.DATASET_TABLE} ({self.labels_path})"
        else:  # console, training from scratch: the segments define the classes, in their order
            table = own or generic_table(1)
            source = f"the label table of {label_node.GetName()}" if label_node is not None else "the label table"
        if existing is not None:
            return table, source, None
        if len(table) == 1:  # one class: the segment's own name, colour and terminology (none for a label map)
            return table, source, own[:1] if len(own) == 1 else None
        return table, source, table

    def add_labeled_from_scene(self, volume, label_node, table: list[dict[str, Any]] | None = None,
                               loaded_from: str | os.PathLike | None = None) -> tuple[Path, Path]:
        """Write the volume and its label (on the volume's exact grid) as a new labeled case.

        ``loaded_from``: the file the volume was loaded from (the panel's Load the top-ranked volume); when it is
        one of the dataset's unlabeled scans, the pair replaces that entry (``manifest.add_labeled(replaces=)``)
        and a file inside the dataset is kept as the pair's image.

        ``table``: the label table (DTCCore.data.labels) of the model the example is for; the label file holds
        its values, segments matched by name or terminology (:mod:`.labelexport`). None: the dataset's
        ``labels.json``, else the segments in their order. Everything is checked before anything is written.
        """
        require_scalar_volume(volume)
        target, source, new_table = self._target_table(label_node, table)
        label = labelexport.label_array(label_node, volume, target, source)
        unlabeled = self.unlabeled_entry(loaded_from)
        image_path, label_path = self._new_paths(case_name_from_node(volume), labeled=True, replacing=unlabeled)
        image, geometry = _native_array(volume)
        files = [(label_path, label)]
        if image_path != unlabeled:
            files.insert(0, (image_path, image))
        else:  # the scan is the dataset's own unlabeled file: kept as the pair's image (never rewritten)
            _require_unchanged(image_path, image, geometry)
        written: list[Path] = []
        try:
            for path, array in files:
                write_image(path, array, geometry)  # the label on the image's exact grid
                written.append(path)
            if new_table is not None:
                atomic_write_text(self.labels_path, json.dumps({"labels": new_table}, indent=1) + "\n")
                written.append(self.labels_path)
            dtc_manifest.add_labeled(self.manifest_path, image_path, label_path, replaces=unlabeled)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        return image_path, label_path

    def unlabeled_entry(self, path: str | os.PathLike | None) -> Path | None:
        """The manifest's unlabeled entry that is the file ``path`` (resolved paths), or None."""
        if not path:
            return None
        loaded = Path(path).resolve()
        return next((p for p in self.load().unlabeled if p.resolve() == loaded), None)

    def add_unlabeled_from_scene(self, volume) -> Path:
        """Write the volume as a new unlabeled case."""
        require_scalar_volume(volume)
        image_path, _ = self._new_paths(case_name_from_node(volume), labeled=False)
        image, geometry = _native_array(volume)
        write_image(image_path, image, geometry)
        try:
            dtc_manifest.add_unlabeled(self.manifest_path, image_path)
        except BaseException:
            image_path.unlink(missing_ok=True)
            raise
        return image_path

    def add_labeled_files(self, image: str | os.PathLike, label: str | os.PathLike) -> None:
        """Reference an image + label pair from disk (not copied); DTCError if the label is on another grid."""
        array, geometry = read_image(image)
        mask = read_label(label, geometry, array.shape)
        if not mask.any():
            raise DTCError(f"label {label} is empty; draw the structure before adding it")
        dtc_manifest.add_labeled(self.manifest_path, image, label)

    def add_unlabeled_file(self, image: str | os.PathLike) -> None:
        read_image(image)  # refuses unreadable / non-3D files with a clear message
        dtc_manifest.add_unlabeled(self.manifest_path, image)


def _require_unchanged(path: Path, image: np.ndarray, geometry: Geometry) -> None:
    """DTCError unless the file at ``path`` holds ``image`` (X, Y, Z) with ``geometry`` (the scene's copy)."""
    on_disk, disk_geometry = read_image(path)
    same = (on_disk.shape == image.shape and np.array_equal(on_disk, image.astype(on_disk.dtype))
            and all(np.allclose(getattr(disk_geometry, k), getattr(geometry, k), rtol=0, atol=1e-5)
                    for k in ("spacing", "origin", "direction")))
    if not same:
        raise DTCError(f"the volume differs from the file it was loaded from ({path}, an unlabeled scan of the "
                       "dataset): its voxels or geometry changed in the scene; rename the volume to add it as a "
                       "new labeled case, or reload the file")


def _native_array(volume) -> tuple[np.ndarray, Geometry]:
    """The volume's voxels (X, Y, Z) in their own dtype (no float conversion) and its geometry."""
    geometry = geometry_from_ijk_to_ras(ijk_to_ras(volume))
    return kji_to_xyz(slicer.util.arrayFromVolume(volume)), geometry
