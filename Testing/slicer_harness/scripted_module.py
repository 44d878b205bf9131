"""Stand-ins for ``slicer.ScriptedLoadableModule`` (part of the Slicer application, not of slicer-core).

They mirror the behaviour of Slicer's ``Base/Python/slicer/ScriptedLoadableModule.py`` (v5.8.1) that the
module relies on, and define no name that file does not define (``Testing/test_slicer_harness.py`` checks
it against what every supported tag defines, ``api_versions.widget_api()``): the module object fills
``parent`` attributes; the widget gets a
real (PySide6) parent widget with a vertical layout, as Slicer gives it; the logic's
``getParameterNode`` returns the scene's singleton ``vtkMRMLScriptedModuleNode`` tagged with the module
name (a real MRML node); the test class is a ``unittest.TestCase`` whose ``delayDisplay`` only logs (as
in testing mode).
"""

from __future__ import annotations

import logging
import types
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""

    def getDefaultModuleDocumentationLink(self, docPage: str = "") -> str:
        return f"https://slicer.readthedocs.io/en/latest/user_guide/modules/{docPage}"


def make_parent() -> types.SimpleNamespace:
    """What Slicer passes as ``parent`` to the module class (a qSlicerScriptedLoadableModule) as plain attributes."""
    return types.SimpleNamespace()


def make_widget_parent():
    """What Slicer passes as ``parent`` to the widget class: a qSlicerScriptedLoadableModuleWidget."""
    return slicer.qSlicerScriptedLoadableModuleWidget()


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__[: -len("Widget")]
        self.developerMode = False  # Slicer reads the Developer/DeveloperMode setting; off in tests
        if not parent:
            parent = slicer.qMRMLWidget()
            parent.setLayout(__import__("qt").QVBoxLayout())
            parent.setMRMLScene(slicer.mrmlScene)
        self.parent = parent
        self.layout = self.parent.layout()

    def setup(self) -> None:
        pass  # Slicer adds the "Reload & Test" section here in developer mode only

    def cleanup(self) -> None:
        pass

    def onReload(self) -> None:
        """Slicer's Reload button (developer mode): the module file again, through slicer.util (5.6 to 5.12)."""
        slicer.util.reloadScriptedModule(self.moduleName)

    def resourcePath(self, filename: str) -> str:
        import os

        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        name = self.__class__.__name__
        self.moduleName = name[: -len("Logic")] if name.endswith("Logic") else name
        self.isSingletonParameterNode = True

    def createParameterNode(self):
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # CreateNodeByClass returns a new reference, as in Slicer's implementation
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        return node

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.AddNode(self.createParameterNode())
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, msec: int = 1000) -> None:
        logging.info(message)

    def takeScreenshot(self, name: str, description: str, type: int = -1) -> None:
        pass
