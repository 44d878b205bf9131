"""A scan much larger than the model's training scans: the Segment status says so, and offers a box.

``dtc segment`` reports an ``extent-warning`` event (scan and training sizes in mm, DTCCore/planning/extent.py)
when the segmented scan, or its region of interest, is over 2x larger along an axis than the scans the
model was trained on. The panel appends :func:`note` to the Segment status and shows its "Add ROI box"
button, which calls :func:`add_roi_box`: a box of the training scans' size on the scan's axes, centred
on the scan, selected as the Region of interest for the user to move onto the structure.
"""

from __future__ import annotations

import numpy as np
import slicer

from DTCCore.planning.extent import oversize_warning

from . import results, sceneio

WHERE = "move the box of 'Add ROI box' onto the structure, or pick a Region of interest, then Segment again"


def note(job) -> str:
    """" Note: <one line>." for a Segment job whose engine warned about the scan's size, else ""."""
    extent = getattr(job, "extent", None)
    text = oversize_warning(extent["scan_mm"], extent["model_mm"], WHERE) if extent else None
    return f" Note: {text[0].upper()}{text[1:]}." if text else ""


def add_roi_box(volume, size_mm) -> object:
    """A new ``vtkMRMLMarkupsROINode`` on ``volume``'s axes, at its centre, ``size_mm`` (x y z mm, cut to
    the scan's own size) large; a box is symmetric, so a mirrored IJK-to-RAS is turned into a rotation. The box
    is put under the volume's parent transform, as the volume is."""
    sceneio.require_scalar_volume(volume)
    matrix = sceneio.ijk_to_ras(volume)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    axes = matrix[:3, :3] / spacing
    if np.linalg.det(axes) < 0:
        axes[:, 2] = -axes[:, 2]
    dims = np.array(volume.GetImageData().GetDimensions(), float)
    object_to_node = np.eye(4)
    object_to_node[:3, :3] = axes
    object_to_node[:3, 3] = (matrix @ np.r_[(dims - 1) / 2, 1.0])[:3]
    size = np.minimum(np.asarray(size_mm, float), dims * spacing)
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"{volume.GetName()} ROI")
    roi.CreateDefaultDisplayNodes()
    results.place_next_to(roi, volume)  # in the volume's frame: object-to-node is on the volume's own axes
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(object_to_node))
    roi.SetSize(*[float(v) for v in size])
    return roi
