"""A segmentation (or label map) as a label array holding a label table's values, on a volume's grid.

"Add as labeled example" writes what a model trains on: 0 = background, 1..C = the classes of its
label table (DTCCore.data.labels). Each segment is matched to one entry of the table:

- by name, ignoring case and surrounding spaces ("myocardium " is "Myocardium");
- else by its terminology entry's codes (type, type modifier, region, region modifier; code meanings
  and context names are ignored: they differ between terminology files);
- a one-class table takes the one segment of a one-segment segmentation whatever its name, as the
  single-class (left atrium) module always did.

Refused with a DTCError naming the segment and the fix: no segment, a segment the table does not
list, two segments matching one class, overlapping segments (a label holds one class per voxel), a
class without a segment (draw it, or add it empty when the structure is not in the scan), an empty
result. Each segment is exported on its own with ``ExportSegmentsToLabelmapNode(...,
EXTENT_REFERENCE_GEOMETRY)`` on the volume's grid, so overlaps are seen and the values are the table's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import vtk

from DTCCore.errors import DTCError

from .sceneio import geometry_from_ijk_to_ras, ijk_to_ras, kji_to_xyz, no_new_nodes

# Fields of a serialized terminology entry, "context~category~type~type modifier~region context~region~region
# modifier" with codes "scheme^value^meaning" (vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry,
# the same at Slicer v5.6.2 and v5.12.3): the ones that say which structure a segment is.
TERMINOLOGY_FIELDS = 7
TERMINOLOGY_STRUCTURE_FIELDS = (2, 3, 5, 6)  # type, type modifier, region, region modifier
MAX_LABEL_VALUE = 255  # label files are uint8 (DTCCore.data.images.read_label returns uint8)
MODEL_TABLE = "the model's label table"
DATASET_TABLE = "the dataset's label table"
SCRATCH_HINT = " (to train new labels, set Fine-tune > Start from to scratch)"


def name_key(name: str) -> str:
    """A class or segment name as compared: case and runs of spaces ignored."""
    return " ".join(str(name).split()).casefold()


def terminology_key(entry: str) -> tuple | None:
    """The structure codes of a serialized terminology entry ((scheme, value) per field); None without a type."""
    fields = str(entry or "").strip().rstrip("|").split("~")
    if len(fields) != TERMINOLOGY_FIELDS:
        return None
    codes = []
    for i in TERMINOLOGY_STRUCTURE_FIELDS:
        parts = fields[i].split("^")
        codes.append((parts[0].strip().upper(), parts[1].strip()) if len(parts) >= 2 else ("", ""))
    return tuple(codes) if codes[0][1] else None


def segment_terminology(segment) -> str:
    """The segment's terminology entry string ("" when it has none); works from Slicer 5.6 (no GetTerminology)."""
    entry = vtk.reference("")
    return str(entry) if segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry) else ""


def segment_entry(segment, value: int) -> dict[str, Any]:
    """A label-table entry (DTCCore.data.labels) from a segment: its name, colour and terminology."""
    return {"value": value, "name": segment.GetName(), "color": [float(c) for c in segment.GetColor()],
            "terminology": segment_terminology(segment)}


def segmentation_table(segmentation_node) -> list[dict[str, Any]]:
    """The label table a segmentation defines: its segments in order, values 1..N ([] for a label map)."""
    if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        return []
    segmentation = segmentation_node.GetSegmentation()
    return [segment_entry(segmentation.GetNthSegment(i), i + 1) for i in range(segmentation.GetNumberOfSegments())]


def describe_table(table: list[dict[str, Any]]) -> str:
    """"3 classes (Right ventricle, Myocardium, Left ventricle)"."""
    n = len(table)
    return f"{n} class{'' if n == 1 else 'es'} ({', '.join(e['name'] for e in table)})"


def match_segments(node, table: list[dict[str, Any]], source: str = MODEL_TABLE) -> list[tuple[str, int]]:
    """(segment ID, label value) for every segment of ``node``; DTCError when they do not fit ``table``."""
    segmentation = node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = ", ".join(e["name"] for e in table)
    if not ids:
        which = f" for each class of {source} ({names})" if source.startswith((MODEL_TABLE, DATASET_TABLE)) else ""
        raise DTCError(f"segmentation {node.GetName()} has no segment; draw one{which} with Segment Editor")
    if len(table) == 1 and len(ids) == 1:
        return [(ids[0], int(table[0]["value"]))]
    hint = SCRATCH_HINT if source == MODEL_TABLE else ""
    by_name = {name_key(e["name"]): e for e in table}
    by_terminology: dict[tuple, dict[str, Any]] = {}
    for e in table:
        key = terminology_key(e.get("terminology", ""))
        if key is not None:
            by_terminology.setdefault(key, e)
    claimed: dict[int, str] = {}  # label value -> name of the segment that has it
    pairs = []
    for sid in ids:
        segment = segmentation.GetSegment(sid)
        name = segment.GetName()
        entry = by_name.get(name_key(name)) or by_terminology.get(terminology_key(segment_terminology(segment)))
        if entry is None:
            raise DTCError(f"segment '{name}' of {node.GetName()} is not in {source} ({names}); rename it to one "
                           f"of these names or delete it{hint}")
        value = int(entry["value"])
        if value in claimed:
            raise DTCError(f"segments '{claimed[value]}' and '{name}' both match label {value} ({entry['name']}); "
                           "merge them (Segment Editor > Logical operators > Add) or rename or delete one")
        claimed[value] = name
        pairs.append((sid, value))
    missing = [e["name"] for e in table if int(e["value"]) not in claimed]
    if missing:
        raise DTCError(f"no segment for {', '.join(missing)} in {node.GetName()} ({source}: {names}); add it "
                       "(an empty segment when the structure is not in this scan: every voxel of it is background)"
                       f"{hint}")
    return pairs


def _export_segment(node, segment_id: str, volume) -> np.ndarray:
    """(K, J, I) bool mask of one segment on ``volume``'s grid."""
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    with no_new_nodes():  # the label map, its display node and the colour table the export makes
        labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__dtc_export__")
        ok = slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
            node, ids, labelmap, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        )
        if not ok:
            raise DTCError(f"cannot export segment '{node.GetSegmentation().GetSegment(segment_id).GetName()}' of "
                           f"{node.GetName()} onto {volume.GetName()}'s grid; check the segment")
        mask = slicer.util.arrayFromVolume(labelmap) > 0
    if mask.shape != tuple(reversed(volume.GetImageData().GetDimensions())):  # EXTENT_REFERENCE_GEOMETRY: never
        raise DTCError(f"segment export of {node.GetName()} is not on {volume.GetName()}'s grid; check the segment")
    return mask


def _segmentation_labels(node, volume, table: list[dict[str, Any]], source: str) -> np.ndarray:
    pairs = match_segments(node, table, source)
    shape = tuple(reversed(volume.GetImageData().GetDimensions()))
    label = np.zeros(shape, np.uint8)
    owner: dict[int, str] = {}
    for sid, value in pairs:
        mask = _export_segment(node, sid, volume)
        clash = mask & (label > 0)
        name = node.GetSegmentation().GetSegment(sid).GetName()
        if clash.any():
            other = owner[int(label[clash][0])]
            raise DTCError(f"segments '{other}' and '{name}' overlap in {int(clash.sum()):,} voxels; a label holds "
                           "one class per voxel: remove the overlap (Segment Editor > Logical operators > Subtract, "
                           "or paint with Masking > Modify other segments: Overwrite all)")
        label[mask] = value
        owner[value] = name
    return label


def _labelmap_labels(node, volume, table: list[dict[str, Any]], source: str) -> np.ndarray:
    a, b = ijk_to_ras(node), ijk_to_ras(volume)
    same_dims = node.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    if not (same_dims and geometry_from_ijk_to_ras(a).same_grid(geometry_from_ijk_to_ras(b))):
        raise DTCError(
            f"label map {node.GetName()} is not on {volume.GetName()}'s grid; convert it to a "
            "segmentation (right-click > Convert to segmentation) or resample it to the scan"
        )
    kji = slicer.util.arrayFromVolume(node)
    if len(table) == 1:
        return (kji > 0).astype(np.uint8)  # one class: any label value is the structure, as always
    values = np.unique(kji)
    unknown = [v for v in values.tolist() if v != 0 and not (1 <= v <= len(table) and float(v).is_integer())]
    if unknown:
        shown = ", ".join(f"{v:g}" for v in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise DTCError(f"label map {node.GetName()} has values {shown} outside {source} (values 1..{len(table)}: "
                       f"{', '.join(e['name'] for e in table)}); remap them, or convert it to a segmentation and "
                       "name its segments as the classes")
    return kji.astype(np.uint8)


def label_array(node, volume, table: list[dict[str, Any]], source: str = MODEL_TABLE) -> np.ndarray:
    """uint8 (X, Y, Z) label on ``volume``'s grid with ``table``'s values (0 = background).

    ``node``: a segmentation (segments matched to ``table``, see the module docstring) or a label map
    volume on the volume's grid (values taken as label values; with a one-class table any value > 0 is
    the class). ``source`` names the table in messages. DTCError for anything that does not fit.
    """
    if node is None:
        raise DTCError("no segmentation is selected; run Segment or create one with Segment Editor, then pick it")
    if len(table) > MAX_LABEL_VALUE:
        raise DTCError(f"{source} has {len(table)} classes; a label file holds at most {MAX_LABEL_VALUE}")
    if node.IsA("vtkMRMLSegmentationNode"):
        kji = _segmentation_labels(node, volume, table, source)
    elif node.IsA("vtkMRMLLabelMapVolumeNode"):
        kji = _labelmap_labels(node, volume, table, source)
    else:
        raise DTCError(f"{node.GetName()} is neither a segmentation nor a label map; pick a segmentation")
    if not kji.any():
        raise DTCError(
            f"{node.GetName()} is empty on {volume.GetName()}'s grid; draw the structure with "
            "Segment Editor (or check that it lies on this scan)"
        )
    return kji_to_xyz(kji)
