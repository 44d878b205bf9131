"""Segment and "Add as labeled example" leave in the user's scene only what they show (real MRML).

``updateSegmentBinaryLabelmapFromArray`` and ``ExportSegmentsToLabelmapNode`` work through temporary label
map volumes; removing such a volume leaves its display node behind, and the export adds a
``<name>_ColorTable`` colour node. All of these would be saved with the user's scene.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from slicer_harness.fixtures import dtc_module, slicer_scene  # noqa: F401
from test_slicer_logic import SHAPE_KJI, make_volume

TABLE = [{"value": 1, "name": "Left ventricle", "color": [0.8, 0.2, 0.2], "terminology": ""},
         {"value": 2, "name": "Myocardium", "color": [0.2, 0.6, 0.2], "terminology": ""}]


def scene_nodes(scene) -> Counter:
    """Class name -> number of nodes in the scene."""
    nodes = scene.GetNodes()
    return Counter(nodes.GetItemAsObject(i).GetClassName() for i in range(nodes.GetNumberOfItems()))


def _result():
    from DTCSegmentationLib.jobs.segmentjob import SegmentResult

    label = np.zeros(SHAPE_KJI[::-1], np.uint8)
    label[3:14, 4:20, 2:9] = 1
    label[20:33, 18:27, 11:18] = 2
    levelsets = [np.where(label == c, -0.5, 0.5).astype(np.float32) for c in (1, 2)]
    return SegmentResult(label, levelsets, np.zeros(label.shape, np.float32))


def test_segment_and_add_labeled_leave_no_temporary_nodes(slicer_scene, dtc_module, tmp_path):
    logic = dtc_module.DTCSegmentationLogic()
    volume, _ = make_volume("Scan")
    logic.writeResults(volume, _result(), TABLE)  # creates the level-set colour map once
    before = scene_nodes(slicer_scene)
    nodes = logic.writeResults(volume, _result(), TABLE)
    added = scene_nodes(slicer_scene) - before
    # what a Segment shows: the result and the contour segmentations, the level-set and disagreement volumes,
    # each with its display node
    assert added == Counter({"vtkMRMLSegmentationNode": 2, "vtkMRMLSegmentationDisplayNode": 2,
                             "vtkMRMLScalarVolumeNode": 2, "vtkMRMLScalarVolumeDisplayNode": 2}), added
    before = scene_nodes(slicer_scene)
    logic.addLabeledExample(tmp_path / "ds", volume, nodes.segmentation, table=TABLE)
    assert scene_nodes(slicer_scene) == before, scene_nodes(slicer_scene) - before
    names = [slicer_scene.GetNodes().GetItemAsObject(i).GetName() for i in range(slicer_scene.GetNumberOfNodes())]
    assert not [n for n in names if n and n.endswith("_ColorTable")]
