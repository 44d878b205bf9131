"""Add as labeled example with a multi-class model, on real MRML (slicer-core).

The label file holds the model's label values (segments matched by name, else by terminology), on the
scan's exact grid; a segmentation that does not fit the model's label table is refused, naming the
segment and the fix, and nothing is written. The single-class (left atrium) path is unchanged.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import slicer

from DTCCore.data.labels import LEFT_ATRIUM, write_sidecar
from slicer_harness.fixtures import dtc_module, slicer_scene  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401
from test_slicer_logic import IJK_TO_RAS, SHAPE_KJI, make_volume, node_ijk_to_ras, read_xyz
from test_slicer_widget import choose_model, panel  # noqa: F401

LV_TERMINOLOGY = (  # Slicer's serialized entry (vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry)
    "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
    "~SCT^87878005^Left ventricle~^^~Anatomic codes - DICOM master list~^^~^^|"
)
# ACDC-like table: values 1..3 (right ventricle, myocardium, left ventricle)
TABLE = [
    {"value": 1, "name": "Right ventricle", "color": [0.3, 0.45, 0.85], "terminology": ""},
    {"value": 2, "name": "Myocardium", "color": [0.35, 0.65, 0.35], "terminology": ""},
    {"value": 3, "name": "Left ventricle", "color": [0.85, 0.35, 0.35], "terminology": LV_TERMINOLOGY},
]


def _boxes() -> dict[str, np.ndarray]:
    """Three disjoint (K, J, I) masks, one per class name."""
    masks = {}
    for name, box in (("Right ventricle", np.s_[2:8, 3:12, 4:14]), ("Myocardium", np.s_[9:15, 3:12, 4:14]),
                      ("Left ventricle", np.s_[5:12, 15:25, 18:30])):
        mask = np.zeros(SHAPE_KJI, np.uint8)
        mask[box] = 1
        masks[name] = mask
    return masks


def _segmentation(scene, volume, segments):
    """A segmentation node with ``segments``: (name, (K, J, I) mask, terminology or "") in this order."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "corrected")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for name, mask, terminology in segments:
        sid = node.GetSegmentation().AddEmptySegment("", name, [0.5, 0.5, 0.5])
        if terminology:
            node.GetSegmentation().GetSegment(sid).SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology)
        if mask.any():
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, sid, volume)
    return node


def _expected(masks) -> np.ndarray:
    """(K, J, I) label with TABLE's values."""
    out = np.zeros(SHAPE_KJI, np.uint8)
    for entry in TABLE:
        out[masks[entry["name"]] > 0] = entry["value"]
    return out


def test_three_classes_round_trip_with_the_model_values_and_geometry(slicer_scene, dtc_module, tmp_path):
    volume, kji = make_volume("Case A")
    masks = _boxes()
    # segments in another order than the label values; the left ventricle is found by its terminology
    seg = _segmentation(slicer_scene, volume, [("Segment_1", masks["Left ventricle"], LV_TERMINOLOGY),
                                               ("myocardium ", masks["Myocardium"], ""),
                                               ("Right ventricle", masks["Right ventricle"], "")])
    logic = dtc_module.DTCSegmentationLogic()
    image_path, label_path = logic.addLabeledExample(tmp_path / "ds", volume, seg, table=TABLE)

    label, label_img = read_xyz(label_path)
    expected = _expected(masks)
    assert np.array_equal(label, expected.transpose(2, 1, 0))  # voxel for voxel, the model's values
    assert sorted(np.unique(label)) == [0, 1, 2, 3]
    image, image_img = read_xyz(image_path)
    assert np.array_equal(image, kji.transpose(2, 1, 0))
    for a, b in ((label_img.GetSpacing(), image_img.GetSpacing()), (label_img.GetOrigin(), image_img.GetOrigin()),
                 (label_img.GetDirection(), image_img.GetDirection())):
        assert a == b  # the same grid, exactly
    reloaded = slicer_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = slicer_scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(label_path))
    assert storage.ReadData(reloaded)
    assert np.array_equal(slicer.util.arrayFromVolume(reloaded), expected)
    assert np.allclose(node_ijk_to_ras(reloaded), IJK_TO_RAS, atol=1e-6)  # oblique direction kept
    # the dataset's label table is the model's
    labels = json.loads((tmp_path / "ds" / "labels.json").read_text())["labels"]
    assert [(e["value"], e["name"]) for e in labels] == [(1, "Right ventricle"), (2, "Myocardium"),
                                                         (3, "Left ventricle")]

    # a second example that agrees is added; labels.json stays the model's table
    other, _ = make_volume("Case B", seed=1)
    seg2 = _segmentation(slicer_scene, other, [(e["name"], masks[e["name"]], "") for e in reversed(TABLE)])
    logic.addLabeledExample(tmp_path / "ds", other, seg2, table=TABLE)
    assert json.loads((tmp_path / "ds" / "labels.json").read_text())["labels"] == labels
    assert len(json.loads((tmp_path / "ds" / "manifest.json").read_text())["labeled"]) == 2


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("case, message", [
    ("unknown", r"segment 'Aorta' .* not in the model's label table .*Right ventricle, Myocardium, Left ventricle"
                r".*rename"),
    ("same label", r"segments 'Myocardium' and 'myocardium' both .* label 2 \(Myocardium\).*"),
    ("overlap", r"segments 'Right ventricle' and 'Myocardium' overlap in 24 voxels.*one class per voxel"),
    ("missing", r"no segment for Left ventricle .*add .*empty"),
    ("no segment", r"has no segment; draw one for each class of the model's label table \(Right ventricle, "
                   r"Myocardium, Left ventricle\) with Segment Editor"),
])
def test_mismatching_segmentation_is_refused_and_nothing_written(slicer_scene, dtc_module, tmp_path, case, message):
    volume, _ = make_volume("Case A")
    masks = _boxes()
    segments = [(e["name"], masks[e["name"]], "") for e in TABLE]
    if case == "unknown":
        segments.append(("Aorta", np.zeros(SHAPE_KJI, np.uint8), ""))
    elif case == "same label":
        segments.append(("myocardium", np.zeros(SHAPE_KJI, np.uint8), ""))
    elif case == "overlap":
        segments[1][1][6:8, 3:5, 4:10] = 1  # 2 x 2 x 6 = 24 voxels shared with the right ventricle
    elif case == "missing":
        segments = segments[:2]
    elif case == "no segment":
        segments = []
    seg = _segmentation(slicer_scene, volume, segments)
    logic = dtc_module.DTCSegmentationLogic()
    with pytest.raises(dtc_module.DTCError, match=message):
        logic.addLabeledExample(tmp_path / "ds", volume, seg, table=TABLE)
    assert _listing(tmp_path / "ds") == []  # nothing written


def test_dataset_table_must_agree_with_the_model(slicer_scene, dtc_module, tmp_path):
    """A dataset started with left-atrium examples refuses 3-class labels (and the other way round)."""
    volume, _ = make_volume("Case A")
    masks = _boxes()
    logic = dtc_module.DTCSegmentationLogic()
    la = _segmentation(slicer_scene, volume, [("Left atrium", masks["Left ventricle"], "")])
    logic.addLabeledExample(tmp_path / "ds", volume, la, table=[LEFT_ATRIUM])
    before = {p: (tmp_path / "ds" / p).read_bytes() for p in _listing(tmp_path / "ds")
              if (tmp_path / "ds" / p).is_file()}
    other, _ = make_volume("Case B", seed=1)
    seg = _segmentation(slicer_scene, other, [(e["name"], masks[e["name"]], "") for e in TABLE])
    refusal = (r"labels.json lists 1 class \(Left atrium\) from earlier examples, but the model's label table has "
               r"3 classes \(Right ventricle, Myocardium, Left ventricle\); add this model's examples to a new "
               r"dataset folder")
    with pytest.raises(dtc_module.DTCError, match=refusal):
        logic.addLabeledExample(tmp_path / "ds", other, seg, table=TABLE)
    after = {p: (tmp_path / "ds" / p).read_bytes() for p in _listing(tmp_path / "ds")
             if (tmp_path / "ds" / p).is_file()}
    assert after == before  # nothing written, nothing changed


def test_without_a_model_table_the_segments_define_it(slicer_scene, dtc_module, tmp_path):
    """Console use / training from scratch: segment order gives the values (not only the first segment)."""
    volume, _ = make_volume("Case A")
    masks = _boxes()
    seg = _segmentation(slicer_scene, volume, [(e["name"], masks[e["name"]], "") for e in TABLE])
    _, label_path = dtc_module.DTCSegmentationLogic().addLabeledExample(tmp_path / "ds", volume, seg)
    label, _ = read_xyz(label_path)
    assert np.array_equal(label, _expected(masks).transpose(2, 1, 0))
    labels = json.loads((tmp_path / "ds" / "labels.json").read_text())["labels"]
    assert [e["name"] for e in labels] == ["Right ventricle", "Myocardium", "Left ventricle"]


def test_label_map_volume_keeps_its_values_and_refuses_unknown_ones(slicer_scene, dtc_module, tmp_path):
    volume, _ = make_volume("Case A")
    expected = _expected(_boxes())
    labelmap = slicer.util.addVolumeFromArray(expected, IJK_TO_RAS, "labels", nodeClassName="vtkMRMLLabelMapVolumeNode")
    logic = dtc_module.DTCSegmentationLogic()
    bad = slicer.util.addVolumeFromArray(expected * 2, IJK_TO_RAS, "bad", nodeClassName="vtkMRMLLabelMapVolumeNode")
    with pytest.raises(dtc_module.DTCError, match=r"label map bad has values 4, 6 .*1..3"):
        logic.addLabeledExample(tmp_path / "ds", volume, bad, table=TABLE)
    assert _listing(tmp_path / "ds") == []
    _, label_path = logic.addLabeledExample(tmp_path / "ds", volume, labelmap, table=TABLE)
    assert np.array_equal(read_xyz(label_path)[0], expected.transpose(2, 1, 0))


def test_left_atrium_path_unchanged(slicer_scene, dtc_module, tmp_path):
    """One class: the one segment is the class whatever its name; the file is the 0/1 mask as before."""
    volume, _ = make_volume("Case A")
    mask = _boxes()["Left ventricle"]
    seg = _segmentation(slicer_scene, volume, [("Segment_1", mask, "")])
    logic = dtc_module.DTCSegmentationLogic()
    _, label_path = logic.addLabeledExample(tmp_path / "ds", volume, seg, table=[LEFT_ATRIUM])
    label, _ = read_xyz(label_path)
    assert label.dtype == np.uint8 and np.array_equal(label, mask.transpose(2, 1, 0))
    labels = json.loads((tmp_path / "ds" / "labels.json").read_text())["labels"]
    assert [(e["value"], e["name"]) for e in labels] == [(1, "Segment_1")]  # the segment's own entry, as before
    # two segments for a one-class model: the old code kept the first silently; now the extra one is named
    other, _ = make_volume("Case B", seed=1)
    two = _segmentation(slicer_scene, other, [("Left atrium", mask, ""), ("Notes", mask, "")])
    with pytest.raises(dtc_module.DTCError, match=r"segment 'Notes' .* not in the model's label table \(Left atrium\)"):
        logic.addLabeledExample(tmp_path / "ds", other, two, table=[LEFT_ATRIUM])


@pytest.fixture
def three_class_models(tmp_path):
    """A models folder with a tiny untrained 3-class network carrying TABLE (built here: the module never
    imports torch)."""
    import torch

    from DTCCore.config import DTCConfig
    from DTCCore.model import checkpoint, network

    torch.manual_seed(0)
    config = DTCConfig.from_dict({"network": {"base_filters": 2, "num_classes": 3}, "train": {"patch": [16, 16, 16]}})
    model = network.DualTaskVNet(num_classes=3, base_filters=2).eval()
    path = tmp_path / "models" / "heart" / "model.pt"
    path.parent.mkdir(parents=True)
    checkpoint.save_checkpoint(path, model, None, 0, config, {})
    write_sidecar(path, TABLE)
    return path.parent.parent


def test_panel_adds_a_three_class_example_with_the_model_values(panel, three_class_models, tmp_path, monkeypatch):
    w = panel
    choose_model(w, three_class_models, name="heart")
    assert "classes: Right ventricle, Myocardium, Left ventricle" in w.ui.modelInfoLabel.text, w.ui.modelInfoLabel.text
    w.ui.datasetFolderButton.directory = str(tmp_path / "dataset")
    volume, _ = make_volume("Case A")
    masks = _boxes()
    shown = []
    monkeypatch.setattr(slicer.app, "testingEnabled", lambda: False)  # a user's click: the message box is shown
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: shown.append(text))
    wrong = _segmentation(slicer.mrmlScene, volume, [("Right ventricle", masks["Right ventricle"], ""),
                                                     ("Aorta", masks["Myocardium"], "")])
    w.ui.inputVolumeSelector.setCurrentNode(volume)
    w.ui.segmentationSelector.setCurrentNode(wrong)
    w.ui.addLabeledButton.click()
    assert len(shown) == 1 and "segment 'Aorta'" in shown[0] and "rename it" in shown[0], shown
    assert _listing(tmp_path / "dataset") == []

    seg = _segmentation(slicer.mrmlScene, volume, [(e["name"], masks[e["name"]], "") for e in reversed(TABLE)])
    w.ui.segmentationSelector.setCurrentNode(seg)
    w.ui.addLabeledButton.click()
    assert len(shown) == 1 and w.ui.labeledTable.rowCount == 1, (shown, w.ui.datasetStatusLabel.text)
    label, _ = read_xyz(tmp_path / "dataset" / "labels" / "Case_A.nrrd")
    assert np.array_equal(label, _expected(masks).transpose(2, 1, 0))


def test_training_from_scratch_builds_the_datasets_classes(slicer_scene, dtc_module, tmp_path):
    """A 3-class dataset trained from scratch gets a 3-class network (read_label refuses values 2..C else)."""
    volume, _ = make_volume("Case A")
    masks = _boxes()
    seg = _segmentation(slicer_scene, volume, [(e["name"], masks[e["name"]], "") for e in TABLE])
    logic = dtc_module.DTCSegmentationLogic()
    logic.addLabeledExample(tmp_path / "ds", volume, seg)
    p = logic.getParameterNode()
    p.datasetFolder, p.modelsFolder, p.startFrom = tmp_path / "ds", tmp_path / "models", "scratch"
    request = logic.trainingRequest(p)
    assert request.config["network"]["num_classes"] == 3 and request.init_from is None
    assert [e["name"] for e in request.labels] == [e["name"] for e in TABLE]
