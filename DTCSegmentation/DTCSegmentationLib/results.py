"""Result nodes of a Segment run, all on the input volume's exact grid and next to it in the scene.

Each run writes NEW nodes (an annotator's corrections in an earlier result are never overwritten),
unless the caller names an output segmentation (the panel's output selector, after asking):

- segmentation ``<input> DTC`` (made unique: ``<input> DTC_1`` ...): one segment per class of the
  model's label table (name, colour, terminology entry), reference geometry = the input, closed
  surface for the 3D view;
- level-set volume ``<input> DTC level set``: values in [-1, 1] (negative inside; the first class for a
  multi-class model), shown as the foreground layer with a diverging blue-white-red colour map centred
  on 0; its zero contour is the outline segmentation ``<input> DTC level-set zero contour``;
- disagreement volume ``<input> DTC disagreement``: |p_seg - p_levelset| in [0, 1], where the two
  heads disagree (where an annotator should look).

The terminology entry is stored with ``vtkSegment.SetTag(vtkSegment.GetTerminologyEntryTagName(), entry)``,
which every Slicer from 5.8 has (``vtkSegment.SetTerminology`` appeared only in 5.10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer

from DTCCore.errors import DTCError

from .sceneio import array_to_kji, ijk_to_ras, kji_to_xyz, no_new_nodes

CONTOUR_COLOR = (1.0, 1.0, 0.0)  # yellow: distinct from the segment colour on grey-level scans
LEVELSET_COLOR_NAME = "DTC level set (diverging)"
LEVELSET_OPACITY = 0.4  # foreground opacity: the scan stays readable under the overlay
# vtkSegmentationConverter's names (Libs/vtkSegmentationCore/vtkSegmentationConverter.h, the same at 5.6.2 and
# 5.12.3; the class itself is not reached from the module, so its names are spelled here)
BINARY_LABELMAP = "Binary labelmap"
REFERENCE_GEOMETRY = "Reference image geometry"


@dataclass
class ResultNodes:
    segmentation: object
    segment_ids: list  # one per class, in label-table order
    levelset: object
    disagreement: object
    contour: object

    @property
    def segment_id(self) -> str:
        return self.segment_ids[0]


def place_next_to(node, reference) -> None:
    """Same parent transform and same subject-hierarchy parent (study/patient folder) as ``reference``.

    A new segmentation is placed *before* its masks are imported: the import maps the labelmap (created
    under the reference's transform by ``updateSegmentBinaryLabelmapFromArray``) into the segmentation's
    frame, so a segmentation parented afterwards would carry the transform twice."""
    node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    reference_item = sh.GetItemByDataNode(reference)
    parent = sh.GetItemParent(reference_item) if reference_item else sh.GetSceneItemID()
    item = sh.GetItemByDataNode(node)
    if item:  # in Slicer the subject-hierarchy plugins create items for new nodes
        sh.SetItemParent(item, parent)
    else:
        sh.CreateItem(parent, node)


def _new_node(class_name: str, name: str, reference=None):
    """A new node called ``name``, or ``name_1``, ``name_2`` ... when the name is taken; placed next to
    ``reference`` (:func:`place_next_to`) when one is given."""
    scene = slicer.mrmlScene
    unique = name if scene.GetFirstNodeByName(name) is None else scene.GenerateUniqueName(name)
    node = scene.AddNewNodeByClass(class_name, unique)
    if reference is not None:
        place_next_to(node, reference)
    return node


def add_scalar_result(array_xyz: np.ndarray, reference, name: str):
    """A new scalar volume node ``name`` with ``array_xyz`` on the reference's grid."""
    node = _new_node("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras(reference)))
    slicer.util.updateVolumeFromArray(node, array_to_kji(np.asarray(array_xyz, np.float32)))
    node.CreateDefaultDisplayNodes()
    place_next_to(node, reference)
    return node


def diverging_color_node():
    """Blue (inside, -1) - white (0) - red (outside, +1) procedural colour map, created once per scene."""
    node = slicer.mrmlScene.GetFirstNodeByName(LEVELSET_COLOR_NAME)
    if node is not None:
        return node
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLProceduralColorNode", LEVELSET_COLOR_NAME)
    node.SetAttribute("Category", "DTCSegmentation")
    ctf = node.GetColorTransferFunction()
    ctf.RemoveAllPoints()
    ctf.AddRGBPoint(0.0, 0.23, 0.30, 0.75)
    ctf.AddRGBPoint(127.5, 1.0, 1.0, 1.0)
    ctf.AddRGBPoint(255.0, 0.71, 0.02, 0.15)
    return node


def set_terminology(segment, entry: str) -> None:
    """Terminology entry of a segment, on every Slicer from 5.8 (no ``SetTerminology`` before 5.10)."""
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)


def check_output(node, volume) -> None:
    """DTCError, before anything is written, when ``node`` (a user's output segmentation) cannot take the labels
    of ``volume`` as it is: another parent transform than the volume's, or a source representation that is not
    a binary labelmap (closed surfaces, for example)."""
    if node.GetTransformNodeID() != volume.GetTransformNodeID():
        raise DTCError(f"segmentation {node.GetName()} is not under the same transform as {volume.GetName()}; "
                       "choose another output segmentation, or none (Segment then creates a new one next to the "
                       "scan), or put both under the same transform (Data module)")
    source = node.GetSegmentation().GetSourceRepresentationName()
    if source != BINARY_LABELMAP:
        raise DTCError(f"segmentation {node.GetName()} is made of {source.lower()}s, not a binary labelmap; "
                       "choose another output segmentation, or none (Segment then creates a new one)")


def write_segments(node, masks: list, table: list, reference) -> list:
    """Write one segment per label-table entry into ``node`` (same-named segments are updated); their ids.

    ``node`` must already be in its place (:func:`place_next_to` for a new node): the masks are on the
    reference's grid and are imported into ``node``'s own frame through their parent transforms. A node
    that has a reference geometry keeps it (a user's output segmentation may be oversampled)."""
    node.CreateDefaultDisplayNodes()
    if not node.GetSegmentation().GetConversionParameter(REFERENCE_GEOMETRY):
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    segmentation = node.GetSegmentation()
    ids = []
    for mask, entry in zip(masks, table):
        segment_id = segmentation.GetSegmentIdBySegmentName(entry["name"])
        if not segment_id:
            segment_id = segmentation.AddEmptySegment("", entry["name"], list(entry["color"]))
        segment = segmentation.GetSegment(segment_id)
        segment.SetColor(*entry["color"])
        if entry.get("terminology"):
            set_terminology(segment, entry["terminology"])
        with no_new_nodes():  # its temporary label map's display node
            slicer.util.updateSegmentBinaryLabelmapFromArray(array_to_kji(np.asarray(mask, np.uint8)), node,
                                                             segment_id, reference)
        ids.append(segment_id)
    return ids


def show_results(volume, nodes: ResultNodes) -> None:
    """Display: scan as background, level set as foreground overlay, segment in 2D and 3D."""
    levelset_display = nodes.levelset.GetDisplayNode()
    levelset_display.SetAndObserveColorNodeID(diverging_color_node().GetID())
    levelset_display.AutoWindowLevelOff()
    levelset_display.SetWindowLevel(2.0, 0.0)  # [-1, 1] symmetric about the zero contour
    disagreement_display = nodes.disagreement.GetDisplayNode()
    disagreement_display.AutoWindowLevelOff()
    disagreement_display.SetWindowLevel(1.0, 0.5)  # |p_seg - p_lsf| lies in [0, 1]
    contour_display = nodes.contour.GetDisplayNode()
    contour_display.SetAllSegmentsOpacity2DFill(0.0)
    contour_display.SetAllSegmentsVisibility3D(False)
    nodes.segmentation.CreateClosedSurfaceRepresentation()
    slicer.util.setSliceViewerLayers(
        background=volume, foreground=nodes.levelset, foregroundOpacity=LEVELSET_OPACITY
    )


def create_results(volume, result, table: list, output=None, input_name: str | None = None) -> ResultNodes:
    """Result nodes of ``result`` (a :class:`~DTCSegmentationLib.jobs.segmentjob.SegmentResult` on the volume's grid).

    ``table``: the model's label table (one entry per class). ``output``: an existing segmentation node
    to write into (its same-named segments are replaced; it keeps its place, transform and reference
    geometry; refused before anything is written when it cannot take labels, :func:`check_output`);
    ``None`` creates a new node next to the volume.
    """
    base = input_name or volume.GetName()
    label = np.asarray(result.label)
    masks = [label == entry["value"] for entry in table]
    if output is not None:
        check_output(output, volume)  # before any node is touched
    seg_node = output if output is not None else _new_node("vtkMRMLSegmentationNode", f"{base} DTC", volume)
    segment_ids = write_segments(seg_node, masks, table, volume)
    levelset = np.asarray(result.levelsets[0], np.float32)
    contour = _new_node("vtkMRMLSegmentationNode", f"{base} DTC level-set zero contour", volume)
    write_segments(contour, [levelset < 0], [{"name": "Level set < 0", "color": CONTOUR_COLOR}], volume)
    nodes = ResultNodes(
        segmentation=seg_node,
        segment_ids=segment_ids,
        levelset=add_scalar_result(levelset, volume, f"{base} DTC level set"),
        disagreement=add_scalar_result(result.disagreement, volume, f"{base} DTC disagreement"),
        contour=contour,
    )
    show_results(volume, nodes)
    return nodes


def segment_array(segmentation_node, segment_id: str, reference) -> np.ndarray:
    """uint8 (X, Y, Z) mask of one segment exported on the reference volume's grid."""
    kji = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference)
    return kji_to_xyz(kji).astype(np.uint8)
