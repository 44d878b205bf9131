"""A volume under a parent transform (registered scans, DICOM with gantry tilt): results and ROI stay on it.

Real MRML (slicer-core). Each case puts the volume under a linear transform (a 40 mm translation, a
rotation, a chain of two transforms) and writes a two-class result; the round trip prediction ->
segmentation -> labelmap on the volume's grid must give the prediction back voxel for voxel, read back
two independent ways: Slicer's own export onto the volume (``ExportSegmentsToLabelmapNode``, what
"Add as labeled example" uses) and the segment resampled onto the stored reference geometry (what
Segment Editor paints on), whose matrix must be the volume's IJK-to-RAS in the shared parent frame.
Then the transforms are hardened on the volume and the segmentation, and the round trip still holds.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

from slicer_harness.fixtures import dtc_module, slicer_scene  # noqa: F401
from test_slicer_logic import IJK_TO_RAS, SHAPE_KJI, make_volume
from test_slicer_results_geometry import image_to_world, on_grid, stored_geometry

TABLE = [{"value": 1, "name": "Left ventricle", "color": [0.8, 0.2, 0.2], "terminology": ""},
         {"value": 2, "name": "Myocardium", "color": [0.2, 0.6, 0.2], "terminology": ""}]


def _rotation(angle_deg: float, axis: int) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(4)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _translation(x: float, y: float, z: float) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = [x, y, z]
    return m


CASES = {  # name -> the chain of matrices-to-parent, innermost (the volume's parent) first
    "translation": [_translation(40.0, 0.0, 0.0)],
    "rotation": [_rotation(30.0, 2) @ _rotation(-20.0, 0)],
    "chain": [_rotation(25.0, 1) @ _translation(5.0, -8.0, 3.0), _translation(-30.0, 12.0, 40.0) @ _rotation(40.0, 2)],
}


def _transformed_volume(scene, chain):
    """The oblique test volume under ``chain`` (innermost first)."""
    volume, _ = make_volume("Registered scan")
    parent = None
    for matrix in reversed(chain):  # outermost first, so each new node can be put under the previous one
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
        if parent is not None:
            node.SetAndObserveTransformNodeID(parent.GetID())
        parent = node
    volume.SetAndObserveTransformNodeID(parent.GetID())
    return volume


def _prediction():
    from DTCSegmentationLib.jobs.segmentjob import SegmentResult

    xyz = SHAPE_KJI[::-1]
    label = np.zeros(xyz, np.uint8)
    label[3:14, 4:20, 2:9] = 1  # off-centre boxes: a shifted or turned grid moves them
    label[20:33, 18:27, 11:18] = 2
    levelsets = [np.where(label == c, -0.5, 0.5).astype(np.float32) for c in (1, 2)]
    return label, SegmentResult(label, levelsets, np.zeros(xyz, np.float32))


def _exported(node, segment_id, volume) -> np.ndarray:
    """(K, J, I) mask of a segment exported by Slicer onto the volume's grid (transforms accounted for)."""
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
        node, ids, labelmap, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
    mask = slicer.util.arrayFromVolume(labelmap) > 0
    slicer.mrmlScene.RemoveNode(labelmap)
    return mask


def _check_round_trip(volume, nodes, label) -> None:
    label_kji = label.transpose(2, 1, 0)
    for value, segment_id in zip((1, 2), nodes.segment_ids):
        mask = _exported(nodes.segmentation, segment_id, volume)
        assert mask.sum() == (label_kji == value).sum() > 0
        assert np.array_equal(mask, label_kji == value), f"class {value}: {int((mask != (label_kji == value)).sum())}" \
                                                         " voxels differ on the volume's grid"
    assert nodes.segmentation.GetTransformNodeID() == volume.GetTransformNodeID()
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    for node in (nodes.segmentation, nodes.contour):
        geometry = stored_geometry(node)
        np.testing.assert_allclose(image_to_world(geometry), slicer.util.arrayFromVTKMatrix(ijk_to_ras), atol=1e-6)
    geometry = stored_geometry(nodes.segmentation)
    for value, segment_id in zip((1, 2), nodes.segment_ids):
        assert np.array_equal(on_grid(nodes.segmentation, segment_id, geometry) > 0, label_kji == value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_results_lie_on_a_transformed_volume_also_after_hardening(slicer_scene, dtc_module, case):
    volume = _transformed_volume(slicer_scene, CASES[case])
    label, result = _prediction()
    nodes = dtc_module.DTCSegmentationLogic().writeResults(volume, result, TABLE)
    _check_round_trip(volume, nodes, label)
    for node in (nodes.levelset, nodes.disagreement):  # placed correctly before the fix too: kept so
        assert node.GetTransformNodeID() == volume.GetTransformNodeID()
    for node in (volume, nodes.segmentation, nodes.contour):
        slicer.vtkSlicerTransformLogic.hardenTransform(node)
    assert volume.GetTransformNodeID() is None and nodes.segmentation.GetTransformNodeID() is None
    label_kji = label.transpose(2, 1, 0)
    for value, segment_id in zip((1, 2), nodes.segment_ids):
        assert np.array_equal(_exported(nodes.segmentation, segment_id, volume), label_kji == value)


def test_add_labeled_example_from_a_transformed_scene_writes_the_prediction(slicer_scene, dtc_module, tmp_path):
    volume = _transformed_volume(slicer_scene, CASES["chain"])
    label, result = _prediction()
    logic = dtc_module.DTCSegmentationLogic()
    nodes = logic.writeResults(volume, result, TABLE)
    image_path, label_path = logic.addLabeledExample(tmp_path / "ds", volume, nodes.segmentation, table=TABLE)
    written = sitk.ReadImage(str(label_path))
    assert np.array_equal(sitk.GetArrayFromImage(written).transpose(2, 1, 0), label)
    image = sitk.ReadImage(str(image_path))
    assert written.GetSize() == image.GetSize() and np.allclose(written.GetOrigin(), image.GetOrigin())
    assert np.allclose(written.GetDirection(), image.GetDirection())


@pytest.mark.parametrize("case", ["translation", "chain"])
def test_roi_box_is_placed_on_a_transformed_volume(slicer_scene, dtc_module, case):
    from DTCSegmentationLib import sceneio

    volume = _transformed_volume(slicer_scene, CASES[case])
    spacing = np.linalg.norm(IJK_TO_RAS[:3, :3], axis=0)
    roi = dtc_module.DTCSegmentationLogic().addRoiBox(volume, 12 * spacing)  # 12 voxels a side, centred
    assert roi.GetTransformNodeID() == volume.GetTransformNodeID()
    region = sceneio.roi_to_slices(roi, volume)
    dims = SHAPE_KJI[::-1]
    for axis, s in enumerate(region):
        centre = (dims[axis] - 1) / 2
        assert s.start >= centre - 6 - 1 and s.stop <= centre + 6 + 2 and s.stop - s.start >= 11, (axis, s)
