"""Real MRML scene + module logics from slicer-core, wired as in the Slicer application.

Order matters (seen working with slicer-core 5.13.31053.0 and vtk 9.6.2): the application
logic first, then the Colors logic registered as module logic "Colors" with its default colour nodes
*before* the Volumes logic (label map display nodes look their colour table up), then the Volumes,
Segmentations, Subject hierarchy, Markups and Plots logics. ``slicer.mrmlScene`` and
``slicer.modules.<name>.logic()`` are set by hand because ``slicer.util`` reads them.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import slicer

from . import app as _app
from . import pythonqt, scripted_module, wrapper_versions
from .module_import import exec_module_file

_LOGICS = (  # (module name as in slicer.modules, logic class, registered module-logic name)
    ("colors", "vtkSlicerColorLogic", "Colors"),
    ("volumes", "vtkSlicerVolumesLogic", "Volumes"),
    ("segmentations", "vtkSlicerSegmentationsModuleLogic", "Segmentations"),
    ("subjecthierarchy", "vtkSlicerSubjectHierarchyModuleLogic", "SubjectHierarchy"),
    ("markups", "vtkSlicerMarkupsLogic", "Markups"),
    ("plots", "vtkSlicerPlotsLogic", "Plots"),
)


def install() -> None:
    """Register the stand-ins (idempotent): qt, ctk and slicer.q* (PythonQt layer over PySide6), slicer.app,
    ScriptedLoadableModule, and Slicer's own parameterNodeWrapper at v5.8.1 (vendored; wrapper_versions)."""
    if getattr(slicer, "_dtc_harness_installed", False):
        return
    pythonqt.application()
    sys.modules["qt"] = pythonqt.make_qt()
    sys.modules["ctk"] = pythonqt.make_ctk()
    for name, cls in pythonqt.slicer_classes().items():
        setattr(slicer, name, cls)
    slicer.app = _app.FakeApplication()
    slicer.selfTests = {}
    sys.modules["slicer.ScriptedLoadableModule"] = scripted_module
    slicer.ScriptedLoadableModule = scripted_module
    wrapper_versions.load(wrapper_versions.DEFAULT_TAG)  # Slicer's own package at that tag (vendor/README.md)
    slicer.modules = types.SimpleNamespace()
    slicer._dtc_harness_installed = True


def new_scene():
    """Create a fresh scene with the module logics; make it ``slicer.mrmlScene``. Returns the scene."""
    install()
    old = getattr(slicer, "mrmlScene", None)
    if old is not None and hasattr(old, "Clear"):
        old.Clear(True)
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {}
    for name, class_name, registered in _LOGICS:
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(registered, logic)
        if name == "colors":
            logic.AddDefaultColorNodes()
        logics[name] = logic
        setattr(slicer.modules, name, types.SimpleNamespace(logic=(lambda lg=logic: lg), name=registered))
    slicer.mrmlScene = scene
    slicer.app._applicationLogic = app_logic
    slicer._dtc_harness_logics = (app_logic, logics)  # keep the logics alive as long as the scene
    return scene


def import_module_file(path: str | Path, name: str | None = None) -> types.ModuleType:
    """Import a scripted module file (e.g. DTCSegmentation/DTCSegmentation.py) with its folder on sys.path,
    the stand-ins installed first (:func:`.module_import.exec_module_file`)."""
    install()
    return exec_module_file(path, name)
