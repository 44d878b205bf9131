"""The grid a Segment result stores in the scene: the segmentation's reference image geometry (real MRML).

Segment Editor paints on the segmentation's reference image geometry, not on the volume the tests export
through, so it is read back here as stored (``vtkSegmentationConverter``'s serialised geometry) and
compared with the input volume's IJK-to-RAS matrix and extent; then each segment is resampled onto that
stored grid, as Segment Editor would, and must be the label voxel for voxel. An export *through the
volume* resamples the segment onto the volume's grid and cannot see a wrong stored grid.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from slicer_harness.fixtures import dtc_module, slicer_scene  # noqa: F401
from test_slicer_logic import IJK_TO_RAS, SHAPE_KJI, make_volume


def stored_geometry(segmentation_node):
    """The segmentation's reference image geometry as stored: an empty vtkOrientedImageData with its grid."""
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    serialized = segmentation_node.GetSegmentation().GetConversionParameter(name)
    assert serialized, "the segmentation stores no reference image geometry"
    geometry = slicer.vtkOrientedImageData()
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(serialized, geometry)
    return geometry


def image_to_world(image) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def on_grid(segmentation_node, segment_id: str, geometry) -> np.ndarray:
    """The segment's binary labelmap resampled (nearest neighbour) onto ``geometry``'s grid, (K, J, I)."""
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    out = slicer.vtkOrientedImageData()
    assert slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, geometry, out, False, True)  # no linear interpolation; pad to the reference extent
    assert out.GetExtent() == geometry.GetExtent()
    i, j, k = (out.GetExtent()[2 * a + 1] - out.GetExtent()[2 * a] + 1 for a in range(3))
    return vtk_to_numpy(out.GetPointData().GetScalars()).reshape(k, j, i)


def test_the_segmentation_stores_the_oblique_volumes_grid(slicer_scene, dtc_module):
    from DTCSegmentationLib.jobs.segmentjob import SegmentResult

    volume, _ = make_volume("Oblique scan")  # rotated axes, 0.7 x 1.3 x 2.1 mm, origin off zero
    xyz = SHAPE_KJI[::-1]
    label = np.zeros(xyz, np.uint8)
    label[3:14, 4:20, 2:9] = 1  # off-centre boxes: a grid turned or shifted moves them
    label[20:33, 18:27, 11:18] = 2
    levelsets = [np.where(label == c, -0.5, 0.5).astype(np.float32) for c in (1, 2)]
    table = [{"value": 1, "name": "Left ventricle", "color": [0.8, 0.2, 0.2], "terminology": ""},
             {"value": 2, "name": "Myocardium", "color": [0.2, 0.6, 0.2], "terminology": ""}]
    nodes = dtc_module.DTCSegmentationLogic().writeResults(volume, SegmentResult(label, levelsets,
                                                                                 np.zeros(xyz, np.float32)), table)
    for node in (nodes.segmentation, nodes.contour):  # the result and the level set's zero contour
        geometry = stored_geometry(node)
        np.testing.assert_allclose(image_to_world(geometry), IJK_TO_RAS, atol=1e-9)
        assert geometry.GetExtent() == volume.GetImageData().GetExtent() == (0, 35, 0, 29, 0, 19)
    geometry = stored_geometry(nodes.segmentation)
    label_kji = label.transpose(2, 1, 0)
    for value, segment_id in zip((1, 2), nodes.segment_ids):
        assert np.array_equal(on_grid(nodes.segmentation, segment_id, geometry) > 0, label_kji == value)
