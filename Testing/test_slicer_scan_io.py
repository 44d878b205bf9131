"""What Segment hands the engine: the scan in its own voxel type, uncompressed, on its own grid, and the
same float32 values the engine read from the float32 copy it was given before (issue 41)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from DTCCore.data.images import read_image
from slicer_harness.fixtures import dtc_module, slicer_scene  # noqa: F401
from test_slicer_logic import IJK_TO_RAS, SHAPE_KJI


@pytest.mark.parametrize("dtype, itk_type", [(np.int16, "16-bit signed integer"), (np.uint8, "8-bit unsigned integer"),
                                             (np.float64, "64-bit float")])
def test_segment_writes_the_scan_in_its_own_type(slicer_scene, dtc_module, monkeypatch, dtype, itk_type):
    from DTCSegmentationLib import sceneio
    from DTCSegmentationLib.jobs.segmentjob import SegmentJob

    monkeypatch.setattr(SegmentJob, "start", lambda self: None)  # the file handed to the engine is under test
    rng = np.random.default_rng(3)
    kji = (rng.uniform(0, 200, SHAPE_KJI) + (0.25 if dtype == np.float64 else 0)).astype(dtype)
    volume = slicer.util.addVolumeFromArray(kji, IJK_TO_RAS, "scan")
    job = dtc_module.DTCSegmentationLogic().startSegment(volume)
    path = job.work_dir / "input.nrrd"
    image = sitk.ReadImage(str(path))
    assert image.GetPixelIDTypeAsString() == itk_type
    assert np.array_equal(sitk.GetArrayFromImage(image), kji)  # SimpleITK's (z, y, x) is Slicer's (K, J, I)
    assert b"encoding: raw" in path.read_bytes()[:2000]  # uncompressed (measured faster end to end)
    seen, geometry = read_image(path)  # what the engine reads
    assert np.array_equal(seen, kji.transpose(2, 1, 0).astype(np.float32))
    assert geometry.same_grid(sceneio.geometry_from_ijk_to_ras(IJK_TO_RAS))
    old_image, old_geometry = sceneio.volume_to_array(volume)  # the float32 copy written before
    assert np.array_equal(seen, old_image) and geometry.same_grid(old_geometry)
