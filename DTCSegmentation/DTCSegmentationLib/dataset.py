"""The dataset folder an annotator builds: ``images/``, ``labels/`` and ``manifest.json``.

The manifest is the one ``dtc train`` reads (DTCCore.manifest). Adding a case writes the image and
the label with ``DTCCore.io.write_image`` (temp file + rename), then appends to the manifest with
``DTCCore.manifest.add_labeled`` (also atomic), so a crash never leaves a half-written file or a
manifest naming a missing one. A case already present is refused, never overwritten.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import slicer
import vtk

from DTCCore import manifest as dtc_manifest
from DTCCore.errors import DTCError
from DTCCore.io import Geometry, read_image, read_label, write_image

from .sceneio import geometry_from_ijk_to_ras, ijk_to_ras, kji_to_xyz, require_scalar_volume

MANIFEST_NAME = "manifest.json"
IMAGE_DIR, LABEL_DIR = "images", "labels"
FILE_EXTENSION = ".nrrd"  # lossless, keeps the geometry, read by SimpleITK and Slicer


def case_name_from_node(node) -> str:
    """A file-safe case name from a node name ("CT chest 1/2" -> "CT_chest_1_2")."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", node.GetName()).strip("._")
    return name or "case"


def label_array_from_node(label_node, volume, segment_id: str | None = None) -> np.ndarray:
    """uint8 (X, Y, Z) 0/1 mask on ``volume``'s grid from a segmentation or a label map volume node."""
    if label_node is None:
        raise DTCError("no segmentation is selected; run Segment or create one with Segment Editor, then pick it")
    if label_node.IsA("vtkMRMLSegmentationNode"):
        segmentation = label_node.GetSegmentation()
        if segmentation.GetNumberOfSegments() == 0:
            raise DTCError(f"segmentation {label_node.GetName()} has no segment; draw one with Segment Editor")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id or segmentation.GetNthSegmentID(0))
        labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__dtc_export__")
        try:
            ok = slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                label_node, ids, labelmap, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
            )
            if not ok:
                raise DTCError(f"cannot export {label_node.GetName()} onto {volume.GetName()}'s grid; "
                               "check the segment")
            kji = slicer.util.arrayFromVolume(labelmap)
        finally:
            slicer.mrmlScene.RemoveNode(labelmap)
    elif label_node.IsA("vtkMRMLLabelMapVolumeNode"):
        a, b = ijk_to_ras(label_node), ijk_to_ras(volume)
        same_dims = label_node.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
        same_grid = geometry_from_ijk_to_ras(a).same_grid(geometry_from_ijk_to_ras(b))
        if not (same_dims and same_grid):
            raise DTCError(
                f"label map {label_node.GetName()} is not on {volume.GetName()}'s grid; convert it to a "
                "segmentation (right-click > Convert to segmentation) or resample it to the scan"
            )
        kji = slicer.util.arrayFromVolume(label_node)
    else:
        raise DTCError(f"{label_node.GetName()} is neither a segmentation nor a label map; pick a segmentation")
    mask = (kji_to_xyz(kji) > 0).astype(np.uint8)
    if not mask.any():
        raise DTCError(
            f"{label_node.GetName()} is empty on {volume.GetName()}'s grid; draw the structure with "
            "Segment Editor (or check that it lies on this scan)"
        )
    return mask


class DatasetFolder:
    """A folder holding ``images/<case>.nrrd``, ``labels/<case>.nrrd`` and ``manifest.json``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        if not str(folder) or str(folder) == ".":
            raise DTCError("no dataset folder is set; choose one in Training data > Dataset folder")
        self.folder = Path(folder).expanduser().absolute()
        self.manifest_path = self.folder / MANIFEST_NAME

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

    def _new_paths(self, case: str, labeled: bool) -> tuple[Path, Path]:
        image = self.folder / IMAGE_DIR / f"{case}{FILE_EXTENSION}"
        label = self.folder / LABEL_DIR / f"{case}{FILE_EXTENSION}"
        m = self.load()
        known = {p.image for p in m.labeled} | {p.label for p in m.labeled} | set(m.unlabeled)
        if image in known or (labeled and label in known):
            raise DTCError(
                f"case {case} is already in the dataset {self.folder}; rename the volume to add it as a new case "
                "or remove the old entry from manifest.json"
            )
        for p in (image, label) if labeled else (image,):
            if p.exists():
                raise DTCError(f"{p} already exists (not in the manifest); move it away or rename the volume")
        return image, label

    def add_labeled_from_scene(self, volume, label_node, segment_id: str | None = None) -> tuple[Path, Path]:
        """Write the volume and its segmentation (on the volume's grid) as a new labeled case."""
        require_scalar_volume(volume)
        mask = label_array_from_node(label_node, volume, segment_id)
        image_path, label_path = self._new_paths(case_name_from_node(volume), labeled=True)
        image, geometry = _native_array(volume)
        write_image(image_path, image, geometry)
        try:
            write_image(label_path, mask, geometry)
            dtc_manifest.add_labeled(self.manifest_path, image_path, label_path)
        except BaseException:
            for p in (image_path, label_path):
                p.unlink(missing_ok=True)
            raise
        return image_path, label_path

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


def _native_array(volume) -> tuple[np.ndarray, Geometry]:
    """The volume's voxels (X, Y, Z) in their own dtype (no float conversion) and its geometry."""
    geometry = geometry_from_ijk_to_ras(ijk_to_ras(volume))
    return kji_to_xyz(slicer.util.arrayFromVolume(volume)), geometry
