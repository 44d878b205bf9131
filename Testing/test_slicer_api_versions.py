"""The harness is strict per supported Slicer (v5.6.2, v5.8.1, v5.10.0, v5.12.3), not only per slicer-core 5.13.

The API lists are ``slicer_harness/api/slicer-<tag>.json`` (``extract_api.py``, from Slicer's source at
each tag); these tests read them, never a Slicer checkout.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import slicer

from slicer_harness import api_check, api_versions, python_stand_ins, pythonqt
from slicer_harness.fixtures import MODULE_FILE, slicer_scene  # noqa: F401

# isort: split
from DTCSegmentationLib import dependencies  # noqa: E402  (on sys.path once slicer_harness.fixtures ran)

TAGS = api_versions.SUPPORTED_TAGS
MODULE_DIR = MODULE_FILE.parent
RESULTS_FILE = MODULE_DIR / "DTCSegmentationLib" / "results.py"
SET_TERMINOLOGY = "segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)"


def module_sources() -> list[Path]:
    return [MODULE_FILE, *sorted((MODULE_DIR / "DTCSegmentationLib").rglob("*.py"))]


# ---------------------------------------------------------------------------------------------- the lists
def test_one_api_file_per_supported_tag_naming_its_sources():
    assert TAGS == ("v5.6.2", "v5.8.1", "v5.10.0", "v5.12.3")
    ctk = {"v5.6.2": "f53820a4e6ebfc9649897577a6157d94833e9699", "v5.8.1": "82cae5781621845486bad2697aed095f04cfbe76",
           "v5.10.0": "dd4caeae7e979cf441e44ee85d3b0780120d113d", "v5.12.3": "5056664a20a3d0a393bb6d91f040525581e0dcdf"}
    for tag in TAGS:
        source = api_versions.load(tag)["source"]
        assert source["Slicer"].endswith(f"tag {tag}") and ctk[tag] in source["CTK"], tag
        assert all(entry["header"].split(":")[0] in (tag, "v9.0.1") for entry in api_versions.load(tag)["vtk"].values())


def test_lists_hold_the_known_differences_between_tags():
    """Facts read in Slicer's source (git show TAG:path), so a broken extractor cannot pass silently."""
    segment = {tag: api_versions.vtk_names(tag, "vtkSegment") for tag in TAGS}
    for tag in TAGS:  # Libs/vtkSegmentationCore/vtkSegment.h
        assert {"GetTerminologyEntryTagName", "SetTag", "GetTag", "SetColor", "IsA", "Modified"} <= segment[tag]
        assert ("HasTerminology" in segment[tag]) == (tag in ("v5.10.0", "v5.12.3")), tag
        assert "PlotTypeScatter" in api_versions.vtk_names(tag, "vtkMRMLPlotSeriesNode")  # an enum constant
        assert "StartCloseEvent" in api_versions.vtk_names(tag, "vtkMRMLScene")
        assert "AutoWindowLevelOff" in api_versions.vtk_names(tag, "vtkMRMLScalarVolumeNode") | api_versions.vtk_names(
            tag, "vtkMRMLScalarVolumeDisplayNode")  # vtkBooleanMacro(AutoWindowLevel, int)
        util = api_versions.module_api(tag, "slicer.util")
        assert {"arrayFromVolume", "updateSegmentBinaryLabelmapFromArray", "loadVolume"} <= set(util["functions"])
        assert "updateSegmentationFromLabelmap" not in util["functions"]  # DESIGN section 4: never existed
        assert "VTKObservationMixin" in util["classes"]
        assert (api_versions.module_api(tag, "slicer.packaging") is not None) == (tag == "v5.12.3"), tag
    register = [api_versions.module_member(tag, "SampleData", ["SampleDataLogic", "registerCustomSampleDataSource"])
                for tag in TAGS]
    assert "loadFileTypes" not in register[0]["args"] and all("loadFileTypes" in r["args"] for r in register[1:])
    assert all("loadFileType" in r["args"] and r["decorators"] == ["staticmethod"] for r in register)


def test_widget_stand_ins_serve_the_intersection():
    api = pythonqt.API["classes"]
    newest = api_versions.load("v5.12.3")["classes"]
    assert "nodeAddedByUserAction(vtkMRMLNode*)" in newest["qMRMLNodeComboBox"]["signals"]  # 5.12 only
    assert "nodeAddedByUserAction(vtkMRMLNode*)" not in api["qMRMLNodeComboBox"]["signals"]
    assert "mainApplicationDisplayName" in newest["qSlicerCoreApplication"]["properties"]
    assert "mainApplicationDisplayName" not in pythonqt.proxy_class("qSlicerApplication")._allowed()
    for name, entry in api.items():  # a class keeps one base: every tag declares the same
        assert {api_versions.load(tag)["classes"][name]["base"] for tag in TAGS} == {entry["base"]}, name


def test_widget_name_of_one_tag_only_raises(slicer_scene):
    combo = slicer.qMRMLNodeComboBox()
    with pytest.raises(AttributeError):
        combo.connect("nodeAddedByUserAction(vtkMRMLNode*)", print)  # exists in 5.12.3 only
    with pytest.raises(NotImplementedError):  # every tag has this one: declared, not implemented by the harness
        combo.connect("nodeAddedByUser(vtkMRMLNode*)", print)
    assert combo.connect("currentNodeChanged(vtkMRMLNode*)", print)


# ---------------------------------------------------------------------------------------------- the check
def test_every_vtk_class_the_module_names_is_extracted():
    """Class names in the code (slicer.vtkSegment, vtk.vtkDoubleArray, "vtkMRMLTableNode" in AddNewNodeByClass)."""
    named = set()
    for path in module_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else (
                node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "")
            if re.fullmatch(r"vtk[A-Z]\w*", name):
                named.add(name)
    named -= set(api_versions.module_api(TAGS[0], "slicer.util")["functions"])  # slicer.util.vtkMatrixFromArray
    assert len(named) > 10
    for tag in TAGS:
        assert named - set(api_versions.load(tag)["vtk"]) == set(), tag


def test_module_uses_only_names_every_supported_slicer_has():
    problems = api_check.check_sources(module_sources())
    assert problems == [], "\n".join(map(str, problems))


def _planted(tmp_path, old: str, new: str, text: str | None = None) -> list[str]:
    text = text if text is not None else RESULTS_FILE.read_text()
    assert old in text
    copy = tmp_path / "results_planted.py"
    copy.write_text(text.replace(old, new))
    return [str(p) for p in api_check.check_file(copy)]


def test_planted_has_terminology_is_refused_naming_the_tags_that_lack_it(tmp_path):
    problems = _planted(tmp_path, SET_TERMINOLOGY, "segment.HasTerminology() or " + SET_TERMINOLOGY)
    assert len(problems) == 1 and "HasTerminology" in problems[0], problems
    assert "v5.6.2, v5.8.1" in problems[0] and "v5.10.0" not in problems[0]
    problems = _planted(tmp_path, SET_TERMINOLOGY, "slicer.vtkSegment.HasTerminology(segment)")
    assert problems and "vtkSegment.HasTerminology is missing in Slicer v5.6.2, v5.8.1" in problems[0]


def test_planted_signature_and_namespace_errors_are_refused(tmp_path):
    layers = "background=volume, foreground=nodes.levelset, foregroundOpacity=LEVELSET_OPACITY"
    problems = _planted(tmp_path, layers, layers + ", labelOpacity=1, noSuchKeyword=1")
    assert len(problems) == 1 and "setSliceViewerLayers" in problems[0] and "noSuchKeyword" in problems[0]
    problems = _planted(tmp_path, "slicer.util.arrayFromSegmentBinaryLabelmap(", "slicer.util.noSuchFunction(")
    assert len(problems) == 1 and "slicer.util.noSuchFunction is missing in Slicer v5.6.2, v5.8.1" in problems[0]
    problems = _planted(tmp_path, "node.CreateDefaultDisplayNodes()", "node.CreateDefaultDisplayNodez()")
    assert len(problems) == 2 and all("CreateDefaultDisplayNodez" in p for p in problems)


def test_planted_vtk_name_gone_from_the_installed_vtk_is_refused(tmp_path):
    """VTK's own headers are read at v9.0.1: a name VTK 9.6.2 (Slicer 5.12.3's) no longer has must fail."""
    assert "UpdateCellGhostArrayCache" in api_versions.vtk_names("v5.12.3", "vtkImageData")  # vtkDataSet, 9.0.1
    problems = _planted(tmp_path, "nodes.segmentation.CreateClosedSurfaceRepresentation()",
                        "volume.GetImageData().UpdateCellGhostArrayCache()")
    assert len(problems) == 1 and "installed vtk (9.6.2" in problems[0], problems


def test_sample_data_call_is_checked_against_every_tag(tmp_path):
    text = MODULE_FILE.read_text()
    problems = _planted(tmp_path, "loadFileType=[", "loadFileTypes=[", text)
    assert len(problems) == 1 and "at Slicer v5.6.2: got an unexpected keyword argument 'loadFileTypes'" in problems[0]


def test_guarded_names_are_really_missing_somewhere_and_reached_only_by_a_feature_check(tmp_path):
    for name in api_check.GUARDED:  # no stale entry: each is missing at some tag and present at another
        module = name
        present = [tag for tag in TAGS if api_versions.module_api(tag, module) is not None]
        assert present and len(present) < len(TAGS), name
    text = (MODULE_DIR / "DTCSegmentationLib" / "dependencies.py").read_text()
    guard = re.search(r"(\w+) = getattr\(slicer, \"packaging\", None\)", text)
    assert guard, "dependencies.py reaches slicer.packaging through getattr (the guard tested below)"
    problems = _planted(tmp_path, guard.group(0), f"{guard.group(1)} = slicer.packaging", text)
    assert len(problems) == 1 and "slicer.packaging is missing in Slicer v5.6.2, v5.8.1, v5.10.0" in problems[0]


# ---------------------------------------------------------------------------------------------- guards, both ways
def _strict_pip_install(calls: list):
    """slicer.util.pip_install with the signature every tag accepts (requirements only, as at v5.6.2)."""
    return python_stand_ins._strict_function("slicer.util", ["pip_install"], TAGS, calls, None, True)


def test_pip_uses_slicer_packaging_where_it_exists(monkeypatch):
    """Slicer 5.12.3: slicer.packaging with exactly that tag's API; slicer.util.pip_install is not used."""
    calls = []
    packaging = python_stand_ins.strict_module("slicer.packaging", ("v5.12.3",), calls, {"pip_ensure": None})
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", _strict_pip_install(calls))
    dependencies._pip(["torch>=2.2,<3", "scipy>=1.10,<2"])
    assert [name for name, _ in calls] == ["pip_ensure"], calls
    assert calls[0][1]["requirements"] == ["torch>=2.2,<3", "scipy>=1.10,<2"]
    assert calls[0][1]["prompt_install"] is False  # ensure_torch has asked already: no second dialog


def test_pip_falls_back_on_util_pip_install_before_5_12(monkeypatch):
    """Slicer 5.6 to 5.10: no slicer.packaging; slicer.util.pip_install with its one-argument signature."""
    calls = []
    monkeypatch.delattr(slicer, "packaging", raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", _strict_pip_install(calls))
    dependencies._pip(["torch>=2.2,<3", "scipy>=1.10,<2"])
    assert calls == [("pip_install", {"requirements": '"torch>=2.2,<3" "scipy>=1.10,<2"'})]


def test_packaging_stand_in_refuses_what_5_12_3_refuses():
    packaging = python_stand_ins.strict_module("slicer.packaging", ("v5.12.3",), [], {"pip_ensure": None})
    with pytest.raises(TypeError, match="v5.12.3"):
        packaging.pip_ensure(["x"], ask=False)
    with pytest.raises(NotImplementedError):
        packaging.pip_check(["x"])  # exists, but the test gave it no behaviour
    with pytest.raises(AttributeError):
        packaging.ensure  # not in the API


def test_sample_data_stand_in_takes_only_the_real_signature():
    calls = []
    sample_data = python_stand_ins.strict_module(
        "SampleData", calls=calls, implementations={"SampleDataLogic.registerCustomSampleDataSource": None})
    register = sample_data.SampleDataLogic.registerCustomSampleDataSource
    with pytest.raises(TypeError, match="v5.6.2.*loadFileTypes"):
        register(category="x", loadFileTypes=["VolumeFile"])  # 5.8.1+ only
    with pytest.raises(TypeError, match="anyKeyword"):
        register(category="x", anyKeyword=1)
    with pytest.raises(TypeError, match="too many positional"):
        register(*range(13))
    register(category="x", sampleName="s", uris=["file:///a"], loadFileType="VolumeFile")
    assert calls == [("SampleDataLogic.registerCustomSampleDataSource",
                      {"category": "x", "sampleName": "s", "uris": ["file:///a"], "loadFileType": "VolumeFile"})]
    assert sys.modules.get("SampleData") is not sample_data  # only installed by the tests that need it


def test_vtk_command_events_come_from_its_event_macros():
    """vtkCommand declares its EventIds enum through macros (vtkEventDeclarationMacro, vtkAllEventsMacro): the
    extractor expands them, so vtk.vtkCommand.ModifiedEvent (Slicer's template observes it) is known, and a
    made-up event is not."""
    for tag in TAGS:
        events = set(api_versions.load(tag)["vtk"]["vtkCommand"]["constants"])
        assert {"NoEvent", "ModifiedEvent", "DeleteEvent", "UserEvent"} <= events and "ModifiedEvnt" not in events
