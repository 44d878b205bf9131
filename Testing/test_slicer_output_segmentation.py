"""Writing a Segment result into the user's existing output segmentation (real MRML): the node keeps its
reference geometry, transform and subject-hierarchy place, its other segments stay, the labels land on the
volume's grid; a node that cannot take labels (closed-surface source) is refused before it is touched."""

from __future__ import annotations

import numpy as np
import pytest
import slicer

from DTCCore.errors import DTCError
from slicer_harness.fixtures import dtc_module, slicer_scene  # noqa: F401
from test_slicer_logic import IJK_TO_RAS, SHAPE_KJI, make_volume
from test_slicer_results_geometry import image_to_world, stored_geometry
from test_slicer_transformed_volume import TABLE, _exported, _prediction


def _user_segmentation(scene, volume, oversampling: float):
    """The user's segmentation: reference geometry = the volume's oversampled, an own segment, in a folder."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "My segmentation")
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    if oversampling != 1.0:
        geometry = slicer.vtkOrientedImageData()
        name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
        slicer.vtkSegmentationConverter.DeserializeImageGeometry(
            node.GetSegmentation().GetConversionParameter(name), geometry)
        spacing = np.array(geometry.GetSpacing()) / oversampling
        extent = [int(round((e + 1) * oversampling)) - 1 if i % 2 else e for i, e in enumerate(geometry.GetExtent())]
        geometry.SetSpacing(*spacing)
        geometry.SetExtent(*extent)
        node.GetSegmentation().SetConversionParameter(
            name, slicer.vtkSegmentationConverter.SerializeImageGeometry(geometry))
    own = node.GetSegmentation().AddEmptySegment("", "Tumour", [0.1, 0.1, 0.9])
    mask = np.zeros(SHAPE_KJI, np.uint8)
    mask[2:6, 3:8, 25:30] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, own, volume)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), "My work")
    item = sh.GetItemByDataNode(node)
    if item:  # Slicer's subject-hierarchy plugins made one; the harness has none
        sh.SetItemParent(item, folder)
    else:
        sh.CreateItem(folder, node)
    return node, own, folder


def test_an_existing_output_keeps_its_geometry_place_and_segments(slicer_scene, dtc_module):
    volume, _ = make_volume("Scan")
    node, own, folder = _user_segmentation(slicer_scene, volume, 2.0)
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    geometry_before = node.GetSegmentation().GetConversionParameter(name)
    own_before = _exported(node, own, volume)
    label, result = _prediction()
    nodes = dtc_module.DTCSegmentationLogic().writeResults(volume, result, TABLE, output=node)
    assert nodes.segmentation is node
    assert node.GetSegmentation().GetConversionParameter(name) == geometry_before, "its reference geometry changed"
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer_scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == folder, "the node was moved in the hierarchy"
    assert np.array_equal(_exported(node, own, volume), own_before)  # its own segment is untouched
    assert node.GetSegmentation().GetNumberOfSegments() == 3
    label_kji = label.transpose(2, 1, 0)
    for value, segment_id in zip((1, 2), nodes.segment_ids):  # on the oversampled grid, back on the volume's
        assert np.array_equal(_exported(node, segment_id, volume), label_kji == value)
    np.testing.assert_allclose(image_to_world(stored_geometry(nodes.contour)), IJK_TO_RAS, atol=1e-6)


def _under_a_transform(scene, node) -> None:
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, 3] = [40.0, 0.0, 0.0]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())


def _closed_surface(scene, node) -> None:
    node.CreateClosedSurfaceRepresentation()
    node.GetSegmentation().SetSourceRepresentationName(
        slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())


@pytest.mark.parametrize("case, message", [
    (_closed_surface, "closed surface.*choose another output segmentation"),
    (_under_a_transform, "not under the same transform as Scan; choose another output segmentation"),
])
def test_an_output_that_cannot_take_the_labels_is_refused_before_it_is_touched(slicer_scene, dtc_module, case,
                                                                               message):
    volume, _ = make_volume("Scan")
    node, own, _ = _user_segmentation(slicer_scene, volume, 1.0)
    case(slicer_scene, volume if case is _under_a_transform else node)
    segments_before = [node.GetSegmentation().GetNthSegmentID(i)
                       for i in range(node.GetSegmentation().GetNumberOfSegments())]
    nodes_before = slicer_scene.GetNumberOfNodes()
    _, result = _prediction()
    with pytest.raises(DTCError, match=message):
        dtc_module.DTCSegmentationLogic().writeResults(volume, result, TABLE, output=node)
    assert [node.GetSegmentation().GetNthSegmentID(i)
            for i in range(node.GetSegmentation().GetNumberOfSegments())] == segments_before
    assert slicer_scene.GetNumberOfNodes() == nodes_before
