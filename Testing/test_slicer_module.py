"""The module file as Slicer loads it: self-test, module registration, .ui widgets and parameter node."""

from __future__ import annotations

import ast
import os
import pathlib
import sys
import types
import xml.etree.ElementTree as ET

import pytest
import slicer

from slicer_harness import app as harness_app
from slicer_harness import python_stand_ins
from slicer_harness.fixtures import MODULE_FILE, dtc_module, slicer_scene  # noqa: F401

UI_FILE = MODULE_FILE.parent / "Resources" / "UI" / "DTCSegmentation.ui"
# Widget classes Slicer's parameterNodeWrapper connects to each field type (Slicer guiConnectors.py).
CONNECTABLE = {
    bool: {"QCheckBox", "QPushButton"},
    int: {"QSpinBox", "QSlider", "QComboBox"},
    float: {"QDoubleSpinBox", "ctkSliderWidget", "QComboBox"},
    str: {"QLineEdit", "QTextEdit", "QComboBox"},
    pathlib.Path: {"ctkPathLineEdit", "ctkDirectoryButton"},
}


def test_self_test_runs_and_checks(slicer_scene, dtc_module):
    test = dtc_module.DTCSegmentationTest()
    test.runTest()  # asserts geometry, voxel shapes, files and duplicate detection inside
    assert slicer.mrmlScene.GetFirstNodeByName("DTCTestVolume DTC") is not None


def test_module_metadata_and_sample_registration(dtc_module, monkeypatch):
    parent = types.SimpleNamespace()
    dtc_module.DTCSegmentation(parent)
    assert parent.title == "DTC Segmentation" and parent.categories == ["Segmentation"]
    calls = []  # SampleData with the real signatures of every supported tag (python_stand_ins)
    fake = python_stand_ins.strict_module("SampleData", calls=calls,
                                          implementations={"SampleDataLogic.registerCustomSampleDataSource": None})
    monkeypatch.setitem(sys.modules, "SampleData", fake)
    harness_app.fire(slicer.app, "startupCompleted()")
    assert calls, "startupCompleted() must register the sample"
    kw = calls[-1][1]
    assert kw["loadFileType"] == ["VolumeFile", "SegmentationFile"]
    for uri in kw["uris"]:
        assert pathlib.Path(uri.removeprefix("file://")).exists()


def _ui_tree():
    return ET.parse(UI_FILE).getroot()


def _ui_widgets() -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in _ui_tree().iter("widget")}


def test_ui_loads_with_quiloader_offscreen():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QWidget

    app = QApplication.instance() or QApplication([])  # noqa: F841
    f = QFile(str(UI_FILE))
    assert f.open(QFile.ReadOnly)
    root = QUiLoader().load(f)
    f.close()
    assert root is not None and root.objectName() == "DTCSegmentation"
    loaded = {w.objectName() for w in root.findChildren(QWidget)}
    assert {"segmentButton", "trainButton", "lossPlotWidget", "inputVolumeSelector"} <= loaded
    params = {w.objectName(): w.property("SlicerParameterName") for w in root.findChildren(QWidget)
              if w.property("SlicerParameterName")}
    assert params["inputVolumeSelector"] == "inputVolume"


def test_every_ui_name_used_in_code_exists():
    widgets = _ui_widgets()
    used = set()
    for path in [MODULE_FILE, *sorted((MODULE_FILE.parent / "DTCSegmentationLib").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
                    and node.value.value.id == "self"):
                used.add(node.attr)
    assert len(used) > 20
    assert used - set(widgets) == set()


def test_every_parameter_name_maps_to_a_field_with_a_connector(dtc_module):
    Choice = slicer.parameterNodeWrapper.Choice
    split = slicer.parameterNodeWrapper.splitAnnotations
    fields = {name: (lambda t: (t[0], t[1], None))(split(info.unalteredType))
              for name, info in dtc_module.DTCSegmentationParameterNode.allParameters.items()}
    bound = {}
    for w in _ui_tree().iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = w.get("class")
    assert bound, "the .ui declares no SlicerParameterName"
    for name, cls in bound.items():
        assert name in fields, f"SlicerParameterName {name} is not a parameter-node field"
        base, extras, _ = fields[name]
        extras = list(extras)
        if isinstance(base, type) and base.__name__.startswith("vtkMRML"):
            assert cls == "qMRMLNodeComboBox", (name, cls)
        else:
            assert cls in CONNECTABLE[base], (name, cls, base)
            if cls == "QComboBox":  # Slicer's QComboBox connector requires a Choice annotation
                assert any(isinstance(e, Choice) for e in extras), name
    # every field except the model path (set from the model list) has a widget
    assert set(fields) - set(bound) == {"modelPath"}


def test_parameter_node_is_typed_and_validated(slicer_scene, dtc_module):
    p = dtc_module.DTCSegmentationLogic().getParameterNode()
    assert p.iterations == 1000 and p.quality == "balanced" and p.largestComponent is False
    p.patchX = 32
    assert dtc_module.DTCSegmentationLogic().getParameterNode().patchX == 32  # stored in the scene node
    with pytest.raises(ValueError):
        p.device = "tpu"
    with pytest.raises(ValueError):
        p.iterations = 0
    with pytest.raises(TypeError):  # Slicer's serializers check types: no silent conversion
        p.iterations = "12"
