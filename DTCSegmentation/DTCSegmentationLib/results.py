"""Result nodes of a Segment run, all on the input volume's exact grid and next to it in the scene.

- segmentation ``<input> DTC``: one named, coloured segment (with a terminology entry), reference
  geometry = the input, closed surface for the 3D view;
- level-set volume ``<input> DTC level set``: values in [-1, 1] (negative inside), shown as the
  foreground layer with a diverging blue-white-red colour map centred on 0; its zero contour is the
  outline of the segmentation ``<input> DTC level-set zero contour`` (outline only);
- disagreement volume ``<input> DTC disagreement``: |p_seg - p_levelset| in [0, 1], where the two
  heads disagree (where an annotator should look).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer

from .sceneio import array_to_kji, ijk_to_ras

SEGMENT_NAME = "Left atrium"  # the bundled model's structure (LA 2018 challenge, label 1)
SEGMENT_COLOR = (0.85, 0.35, 0.35)  # our choice: a muted red, readable on grey-level MRI
# Terminology entry string (Slicer format: context~category~type~modifier~region context~region~modifier|)
# SNOMED CT 82471001 "Left atrium structure", category 123037004 "Anatomical structure".
SEGMENT_TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list"
    "~SCT^123037004^Anatomical Structure~SCT^82471001^Left atrium~^^"
    "~Anatomic codes - DICOM master list~^^~^^|"
)
CONTOUR_COLOR = (1.0, 1.0, 0.0)  # yellow: distinct from the segment colour on grey-level scans
LEVELSET_COLOR_NAME = "DTC level set (diverging)"
LEVELSET_OPACITY = 0.4  # foreground opacity: the scan stays readable under the overlay


@dataclass
class ResultNodes:
    segmentation: object
    segment_id: str
    levelset: object
    disagreement: object
    contour: object


def _place_next_to(node, reference) -> None:
    """Same parent transform and same subject-hierarchy parent (study/patient folder) as ``reference``."""
    node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    reference_item = sh.GetItemByDataNode(reference)
    parent = sh.GetItemParent(reference_item) if reference_item else sh.GetSceneItemID()
    item = sh.GetItemByDataNode(node)
    if item:  # in Slicer the subject-hierarchy plugins create items for new nodes
        sh.SetItemParent(item, parent)
    else:
        sh.CreateItem(parent, node)


def _get_or_add(class_name: str, name: str):
    node = slicer.mrmlScene.GetFirstNodeByName(name)
    if node is None or not node.IsA(class_name):
        node = slicer.mrmlScene.AddNewNodeByClass(class_name, name)
    return node


def add_scalar_result(array_xyz: np.ndarray, reference, name: str):
    """Scalar volume node ``name`` (reused if present) with ``array_xyz`` on the reference's grid."""
    node = _get_or_add("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras(reference)))
    slicer.util.updateVolumeFromArray(node, array_to_kji(np.asarray(array_xyz, np.float32)))
    node.CreateDefaultDisplayNodes()
    _place_next_to(node, reference)
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


def _binary_segmentation(mask_xyz, reference, name: str, segment_name: str, color) -> tuple[object, str]:
    node = _get_or_add("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    segmentation = node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        segment_id = segmentation.AddEmptySegment("", segment_name, list(color))
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        array_to_kji(np.asarray(mask_xyz, np.uint8)), node, segment_id, reference
    )
    _place_next_to(node, reference)
    return node, segment_id


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


def create_results(volume, prediction, input_name: str | None = None) -> ResultNodes:
    """Create (or update) the result nodes of ``prediction`` (a DTCCore Prediction on the volume's grid)."""
    base = input_name or volume.GetName()
    label = np.asarray(prediction.label) > 0
    seg_node, segment_id = _binary_segmentation(label, volume, f"{base} DTC", SEGMENT_NAME, SEGMENT_COLOR)
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    segment.SetTerminology(SEGMENT_TERMINOLOGY)
    levelset = np.asarray(prediction.levelset, np.float32)
    if levelset.ndim == 4:  # multi-class: the first foreground class
        levelset = levelset[0]
    contour, _ = _binary_segmentation(levelset < 0, volume, f"{base} DTC level-set zero contour", "Level set < 0", CONTOUR_COLOR)
    nodes = ResultNodes(
        segmentation=seg_node,
        segment_id=segment_id,
        levelset=add_scalar_result(levelset, volume, f"{base} DTC level set"),
        disagreement=add_scalar_result(prediction.disagreement, volume, f"{base} DTC disagreement"),
        contour=contour,
    )
    show_results(volume, nodes)
    return nodes


def segment_array(segmentation_node, segment_id: str, reference) -> np.ndarray:
    """uint8 (X, Y, Z) mask of one segment exported on the reference volume's grid."""
    kji = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference)
    return np.ascontiguousarray(kji.transpose(2, 1, 0)).astype(np.uint8)
