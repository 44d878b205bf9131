"""Scene <-> arrays: volume nodes as DTCCore arrays (x, y, z) with SimpleITK/LPS geometry.

Slicer stores a volume as ``vtkImageData`` + an IJK-to-RAS matrix; ``slicer.util.arrayFromVolume``
returns (K, J, I). DTCCore works on (X, Y, Z) = (I, J, K) arrays with ``Geometry(spacing, origin,
direction)`` in LPS. LPS = diag(-1, -1, 1) * RAS, applied to the origin and to the direction columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import slicer
import vtk

from DTCCore.data.images import Geometry
from DTCCore.errors import DTCError

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])  # DICOM/ITK LPS vs Slicer RAS: x and y axes flipped
# The scan Segment hands the engine is written uncompressed: measured faster end to end (write + the engine's
# read) than zlib on the bundled sample (bench/speed/segment_click.py, bench/RESULTS.md).
SCAN_COMPRESSION = False


def ijk_to_ras(volume_node) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of a volume node (its own frame, without parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def geometry_from_ijk_to_ras(matrix: np.ndarray) -> Geometry:
    """DTCCore Geometry (LPS, mm) of a 4x4 IJK-to-RAS matrix."""
    linear = np.asarray(matrix, float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction_lps = LPS_FROM_RAS @ (linear / spacing)
    origin_lps = LPS_FROM_RAS @ np.asarray(matrix, float)[:3, 3]
    return Geometry(
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(float(v) for v in origin_lps),
        direction=tuple(float(v) for v in direction_lps.reshape(-1)),  # row-major, columns = axes
    )


@contextmanager
def no_new_nodes() -> Iterator[None]:
    """Remove every node added to the scene inside the block (the temporary label map volumes of
    ``updateSegmentBinaryLabelmapFromArray`` and ``ExportSegmentsToLabelmapNode`` leave their display nodes and
    a ``<name>_ColorTable`` colour node behind, which would be saved with the user's scene)."""
    scene = slicer.mrmlScene

    def ids() -> list[str]:
        return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]

    before = set(ids())
    try:
        yield
    finally:
        for node_id in ids():
            node = scene.GetNodeByID(node_id) if node_id not in before else None
            if node is not None:
                scene.RemoveNode(node)


def require_scalar_volume(volume_node, what: str = "input volume") -> None:
    """DTCError unless ``volume_node`` is a scalar volume with voxels."""
    if volume_node is None:
        raise DTCError(f"no {what} is selected; load a scan (File > Add Data) and pick it in the panel")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise DTCError(f"{volume_node.GetName()} is not a grey-level scalar volume; pick the scan itself")
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise DTCError(f"{volume_node.GetName()} has no voxels; load the scan again")
    if image.GetNumberOfScalarComponents() != 1:
        raise DTCError(f"{volume_node.GetName()} has several components per voxel (colour/vector); "
                       "use a grey-level scan")


def volume_to_array(volume_node) -> tuple[np.ndarray, Geometry]:
    """(array float32 (X, Y, Z), Geometry) of a scalar volume node; a copy, safe to use in a thread."""
    require_scalar_volume(volume_node)
    array = kji_to_xyz(slicer.util.arrayFromVolume(volume_node)).astype(np.float32, copy=False)
    return array, geometry_from_ijk_to_ras(ijk_to_ras(volume_node))


def write_volume_file(volume_node, path, compress: bool = SCAN_COMPRESSION) -> None:
    """Write a scalar volume node to ``path`` (atomic) for the engine: its voxels in their own type, with
    its geometry, straight from Slicer's (K, J, I) array, which is SimpleITK's (z, y, x) order: no transpose,
    no cast, the only copy SimpleITK's (the engine reads any type as float32, so the values it sees are the
    same as from a float32 copy)."""
    from DTCCore.data.images import write_image_zyx

    require_scalar_volume(volume_node)
    write_image_zyx(path, slicer.util.arrayFromVolume(volume_node),
                    geometry_from_ijk_to_ras(ijk_to_ras(volume_node)), compress=compress)


def kji_to_xyz(array_kji: np.ndarray) -> np.ndarray:
    """Slicer's (K, J, I) array (``slicer.util.arrayFromVolume``) -> contiguous (X, Y, Z), DTCCore's order."""
    return np.ascontiguousarray(np.asarray(array_kji).transpose(2, 1, 0))


def array_to_kji(array_xyz: np.ndarray) -> np.ndarray:
    """(X, Y, Z) -> contiguous (K, J, I) array for ``slicer.util.updateVolumeFromArray``."""
    return np.ascontiguousarray(np.asarray(array_xyz).transpose(2, 1, 0))


def roi_to_slices(roi_node, volume_node) -> tuple[slice, slice, slice] | None:
    """Voxel box (x, y, z slices) of the volume whose centres lie in the (possibly rotated) ROI's bounds.

    ``None`` when no ROI is given. DTCError when the ROI does not overlap the volume.
    """
    if roi_node is None:
        return None
    size = np.array(roi_node.GetSize(), float)
    object_to_world = slicer.util.arrayFromVTKMatrix(roi_node.GetObjectToWorldMatrix())
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    corners = np.c_[signs * size / 2, np.ones(8)] @ object_to_world.T  # world RAS, homogeneous
    world_to_local = vtk.vtkMatrix4x4()
    if volume_node.GetParentTransformNode() is not None:
        slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(None, volume_node.GetParentTransformNode(),
                                                                   world_to_local)
    ras_to_ijk = np.linalg.inv(ijk_to_ras(volume_node)) @ slicer.util.arrayFromVTKMatrix(world_to_local)
    ijk = (corners @ ras_to_ijk.T)[:, :3]
    dims = volume_node.GetImageData().GetDimensions()
    lo = np.maximum(np.ceil(ijk.min(axis=0) - 1e-6), 0).astype(int)
    hi = np.minimum(np.floor(ijk.max(axis=0) + 1e-6) + 1, dims).astype(int)
    if np.any(hi <= lo):
        raise DTCError(
            f"the ROI {roi_node.GetName()} does not overlap {volume_node.GetName()}; move it onto the scan or clear it"
        )
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]
