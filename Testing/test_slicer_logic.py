"""DTCSegmentation logic on real MRML (slicer-core): Segment, ROI, annotator round trip, messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

from DTCCore.data.labels import LEFT_ATRIUM
from DTCCore.protocol import OUTSIDE_LEVELSET
from slicer_harness.fixtures import REPO, dtc_module, slicer_scene, tiny_model  # noqa: F401

# Oblique IJK-to-RAS: rotated axes, non-unit anisotropic spacing (0.7, 1.3, 2.1 mm), non-zero origin.
_ROT = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
    [[1.0, 0.0, 0.0], [0.0, np.cos(0.3), -np.sin(0.3)], [0.0, np.sin(0.3), np.cos(0.3)]])
IJK_TO_RAS = np.eye(4)
IJK_TO_RAS[:3, :3] = _ROT * np.array([0.7, 1.3, 2.1])
IJK_TO_RAS[:3, 3] = [-12.5, 30.25, 7.0]
SHAPE_KJI = (20, 30, 36)  # (K, J, I): 21,600 voxels


def make_volume(name="Patient 7 MRI", seed=0):
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(s) for s in SHAPE_KJI], indexing="ij")
    blob = ((i - 18) / 9.0) ** 2 + ((j - 15) / 8.0) ** 2 + ((k - 10) / 6.0) ** 2 <= 1
    kji = (100 + 80 * blob + rng.normal(0, 10, SHAPE_KJI)).astype(np.int16)
    return slicer.util.addVolumeFromArray(kji, IJK_TO_RAS, name), kji


def read_xyz(path):
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0), img


def node_ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def test_segment_matches_cli_on_the_same_file(slicer_scene, dtc_module, tiny_model, tmp_path):
    volume, kji = make_volume()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer_scene)
    study = sh.CreateFolderItem(sh.GetSceneItemID(), "Study 1")
    sh.CreateItem(study, volume)
    nodes = dtc_module.DTCSegmentationLogic().segment(volume, modelPath=str(tiny_model), device="cpu",
                                                      table=[LEFT_ATRIUM])

    # geometry: every result on the input grid, next to the input in the subject hierarchy
    for node in (nodes.levelset, nodes.disagreement):
        assert np.allclose(node_ijk_to_ras(node), IJK_TO_RAS, atol=1e-9)
        assert slicer.util.arrayFromVolume(node).shape == SHAPE_KJI
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    assert sh.GetItemParent(sh.GetItemByDataNode(nodes.segmentation)) == study
    seg = nodes.segmentation
    assert seg.GetName() == "Patient 7 MRI DTC"
    segment = seg.GetSegmentation().GetSegment(nodes.segment_id)
    entry = vtk.reference("")
    assert segment.GetName() == "Left atrium" and segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
    assert "DICOM master list~SCT^123037004^Anatomical Structure~SCT^82471001^Left atrium" in str(entry)
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is volume
    assert slicer.util.arrayFromVolume(nodes.levelset).min() >= -1.0

    # the same file through the command line
    storage = slicer_scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(tmp_path / "case7.nrrd"))
    assert storage.WriteData(volume)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "DTCCore", "segment", str(tmp_path / "case7.nrrd"), "-o", str(out),
                          "--model", str(tiny_model), "--device", "cpu", "--overlap", "0.5"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    cli_label, cli_img = read_xyz(out / "case7_seg.nrrd")
    ours = slicer.util.arrayFromSegmentBinaryLabelmap(seg, nodes.segment_id, volume).transpose(2, 1, 0)
    assert 0 < ours.sum() < ours.size, "the tiny model should predict some but not all voxels"
    assert np.array_equal(ours > 0, cli_label > 0)
    # the CLI's file geometry (LPS) equals the node's RAS geometry flipped on x and y
    lps = np.diag([-1.0, -1.0, 1.0])
    assert np.allclose(np.array(cli_img.GetOrigin()), lps @ IJK_TO_RAS[:3, 3], atol=1e-4)
    direction = np.array(cli_img.GetDirection()).reshape(3, 3) * np.array(cli_img.GetSpacing())
    assert np.allclose(direction, lps @ IJK_TO_RAS[:3, :3], atol=1e-4)


def test_roi_restricts_output(slicer_scene, dtc_module, tiny_model):
    volume, _ = make_volume()
    roi = slicer_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    # box around voxels i in [10, 20], j in [5, 15], k in [4, 12]: axes along the volume's, sizes in mm
    centre_ras = (IJK_TO_RAS @ np.array([15.0, 10.0, 8.0, 1.0]))[:3]
    object_to_node = np.eye(4)
    object_to_node[:3, :3], object_to_node[:3, 3] = _ROT, centre_ras
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(object_to_node))
    roi.SetSize(10.5 * 0.7, 10.5 * 1.3, 8.5 * 2.1)  # half-voxel margins: no centre on a face
    logic = dtc_module.DTCSegmentationLogic()
    from DTCSegmentationLib import sceneio

    region = sceneio.roi_to_slices(roi, volume)
    assert region == (slice(10, 21), slice(5, 16), slice(4, 13))
    nodes = logic.segment(volume, roi=roi, modelPath=str(tiny_model), device="cpu")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(nodes.segmentation, nodes.segment_id, volume).transpose(2, 1, 0)
    outside = np.ones(mask.shape, bool)
    outside[region] = False
    assert mask[region].any() and not mask[outside].any()
    disagreement = slicer.util.arrayFromVolume(nodes.disagreement).transpose(2, 1, 0)
    assert not disagreement[outside].any()
    levelset = slicer.util.arrayFromVolume(nodes.levelset).transpose(2, 1, 0)
    assert np.all(levelset[outside] == OUTSIDE_LEVELSET) and (levelset[region] != OUTSIDE_LEVELSET).any()  # engine fill


def corrected_segmentation(scene, volume):
    """An annotator's corrected segmentation of ``volume`` (one segment) and its mask (K, J, I)."""
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "corrected")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment_id = seg.GetSegmentation().AddEmptySegment("", "Left atrium", [1, 0, 0])
    truth = np.zeros(SHAPE_KJI, np.uint8)
    truth[5:12, 8:20, 10:25] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(truth, seg, segment_id, volume)
    return seg, truth


def test_annotator_round_trip(slicer_scene, dtc_module, tmp_path):
    volume, kji = make_volume("Case A")
    seg, truth = corrected_segmentation(slicer_scene, volume)
    logic = dtc_module.DTCSegmentationLogic()
    image_path, label_path = logic.addLabeledExample(tmp_path / "ds", volume, seg)

    image, img = read_xyz(image_path)
    label, _ = read_xyz(label_path)
    assert np.array_equal(image, kji.transpose(2, 1, 0)) and image.dtype == kji.dtype
    assert np.array_equal(label, truth.transpose(2, 1, 0))
    # reloading the files through Slicer's own storage node gives the same voxels and geometry
    reloaded = slicer_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = slicer_scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(label_path))
    assert storage.ReadData(reloaded)
    assert np.array_equal(slicer.util.arrayFromVolume(reloaded), truth)
    assert np.allclose(node_ijk_to_ras(reloaded), IJK_TO_RAS, atol=1e-6)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest == {"labeled": [{"image": "images/Case_A.nrrd", "label": "labels/Case_A.nrrd"}], "unlabeled": []}

    with pytest.raises(dtc_module.DTCError, match="already in the dataset"):
        logic.addLabeledExample(tmp_path / "ds", volume, seg)
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text()) == manifest  # untouched
    other, _ = make_volume("Case B", seed=1)
    logic.addUnlabeledVolumes(tmp_path / "ds", [other])
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["unlabeled"] == ["images/Case_B.nrrd"]


def test_a_ranked_unlabeled_scan_once_corrected_becomes_its_labeled_pair(slicer_scene, dtc_module, tmp_path):
    """The annotation loop: an unlabeled scan of the dataset is loaded (Next case), corrected and added as
    labeled. The pair keeps the dataset's own image file (not rewritten), the scan leaves the unlabeled list in
    the same manifest write, and a scan changed in the scene since loading is refused with nothing written."""
    logic, ds = dtc_module.DTCSegmentationLogic(), tmp_path / "ds"
    scans = [make_volume(name, seed)[0] for seed, name in enumerate(("Case B", "Case C", "Case D"))]
    logic.addUnlabeledVolumes(ds, scans)
    for node in scans:
        slicer_scene.RemoveNode(node)
    image = ds / "images" / "Case_B.nrrd"
    stamp = image.stat().st_mtime_ns
    loaded = slicer.util.loadVolume(str(image))  # what "Load the top-ranked volume" does
    seg, truth = corrected_segmentation(slicer_scene, loaded)
    assert logic.addLabeledExample(ds, loaded, seg, loadedFrom=str(image)) == (image, ds / "labels" / "Case_B.nrrd")
    assert image.stat().st_mtime_ns == stamp  # the scan's file is kept as it was
    assert np.array_equal(read_xyz(ds / "labels" / "Case_B.nrrd")[0], truth.transpose(2, 1, 0))
    manifest = json.loads((ds / "manifest.json").read_text())
    assert manifest == {"labeled": [{"image": "images/Case_B.nrrd", "label": "labels/Case_B.nrrd"}],
                        "unlabeled": ["images/Case_C.nrrd", "images/Case_D.nrrd"]}

    changed = slicer.util.loadVolume(str(ds / "images" / "Case_C.nrrd"))
    slicer.util.updateVolumeFromArray(changed, slicer.util.arrayFromVolume(changed) + 1)
    with pytest.raises(dtc_module.DTCError, match=r"differs from the file it was loaded from .*Case_C\.nrrd"):
        logic.addLabeledExample(ds, changed, seg, loadedFrom=str(ds / "images" / "Case_C.nrrd"))
    assert json.loads((ds / "manifest.json").read_text()) == manifest
    assert not (ds / "labels" / "Case_C.nrrd").exists()

    changed.SetName("Case C edited")  # the fix the message names: a new case; the scan still leaves the pool
    image_c, _ = logic.addLabeledExample(ds, changed, seg, loadedFrom=str(ds / "images" / "Case_C.nrrd"))
    assert image_c == ds / "images" / "Case_C_edited.nrrd" and (ds / "images" / "Case_C.nrrd").is_file()
    assert json.loads((ds / "manifest.json").read_text())["unlabeled"] == ["images/Case_D.nrrd"]


def test_clear_messages(slicer_scene, dtc_module, tmp_path):
    logic = dtc_module.DTCSegmentationLogic()
    DTCError = dtc_module.DTCError
    with pytest.raises(DTCError, match="no input volume is selected"):
        logic.segment(None)
    volume, _ = make_volume()
    empty = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty seg")
    empty.GetSegmentation().AddEmptySegment("", "nothing", [0, 1, 0])
    with pytest.raises(DTCError, match="is empty on"):
        logic.addLabeledExample(tmp_path / "ds", volume, empty)
    shifted = IJK_TO_RAS.copy()
    shifted[:3, 3] += 5.0
    labelmap = slicer.util.addVolumeFromArray(np.ones(SHAPE_KJI, np.uint8), shifted, "other grid",
                                              nodeClassName="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(DTCError, match="is not on .* grid"):
        logic.addLabeledExample(tmp_path / "ds", volume, labelmap)
    assert not (tmp_path / "ds" / "manifest.json").exists()  # nothing written by the failed adds
    p = logic.getParameterNode()
    p.datasetFolder = tmp_path / "ds"
    p.modelsFolder = tmp_path / "models"
    with pytest.raises(DTCError, match="no labeled pairs"):
        logic.trainingRequest(p)
    for message in ("no input volume is selected",):
        assert "\n" not in message


def test_segment_job_leaves_no_temporary_files(slicer_scene, dtc_module, tiny_model):
    volume, _ = make_volume()
    logic = dtc_module.DTCSegmentationLogic()
    job = logic.startSegment(volume, None, str(tiny_model), "cpu", "fast")
    assert (job.work_dir / "input.nrrd").exists()
    job.wait(180)
    assert job.state == "done" and job.result.label.shape == SHAPE_KJI[::-1]
    assert not job.work_dir.exists()
    info = logic.startModelInfo([str(tiny_model)], "cpu")
    info.wait(120)
    assert info.state == "done" and info.models[str(tiny_model)]["num_classes"] == 1 and not info.work_dir.exists()


def test_one_segment_per_class_of_the_label_table(slicer_scene, dtc_module):
    from DTCSegmentationLib.jobs.segmentjob import SegmentResult

    volume, _ = make_volume("Heart")
    xyz = SHAPE_KJI[::-1]
    label = np.zeros(xyz, np.uint8)
    label[2:10, 2:10, 2:8] = 1
    label[20:30, 15:25, 10:18] = 2
    levelsets = [np.where(label == c, -0.5, 0.5).astype(np.float32) for c in (1, 2)]
    table = [{"value": 1, "name": "Left ventricle", "color": [0.8, 0.2, 0.2], "terminology": ""},
             {"value": 2, "name": "Myocardium", "color": [0.2, 0.6, 0.2], "terminology": ""}]
    result = SegmentResult(label, levelsets, np.zeros(xyz, np.float32))
    nodes = dtc_module.DTCSegmentationLogic().writeResults(volume, result, table)
    segmentation = nodes.segmentation.GetSegmentation()
    assert [segmentation.GetSegment(s).GetName() for s in nodes.segment_ids] == ["Left ventricle", "Myocardium"]
    assert segmentation.GetSegment(nodes.segment_ids[1]).GetColor() == pytest.approx((0.2, 0.6, 0.2))
    for value, segment_id in zip((1, 2), nodes.segment_ids):
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(nodes.segmentation, segment_id, volume).transpose(2, 1, 0)
        assert np.array_equal(mask > 0, label == value)


def test_quality_sets_test_time_mirroring(slicer_scene, dtc_module, monkeypatch):
    # "best" = dense windows + the average over the flips the model was trained with (dtc segment --mirror);
    # "fast" switches it off (--no-mirror); "balanced" keeps the model's own setting (neither flag).
    from DTCSegmentationLib.jobs.segmentjob import SegmentJob
    from DTCSegmentationLib.logic import QUALITY_OVERLAP

    monkeypatch.setattr(SegmentJob, "start", lambda self: None)  # the command line is what is checked here
    volume, _ = make_volume()
    logic = dtc_module.DTCSegmentationLogic()
    for quality, overlap in QUALITY_OVERLAP.items():
        job = logic.startSegment(volume, quality=quality)
        assert ("--tta" in job.args) == (quality == "best")
        assert ("--no-tta" in job.args) == (quality == "fast")
        assert job.args[job.args.index("--overlap") + 1] == str(overlap)
