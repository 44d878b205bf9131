"""Stand-in for ``slicer.app.coreIOManager()`` (qSlicerCoreIOManager), which ``slicer-core`` lacks.

``slicer-core`` has the real ``slicer.util.loadVolume`` / ``loadNodeFromFile`` (the same code and the same
signature, ``(filename, properties={}, returnNode=False)``, as Slicer v5.6.2, v5.8.1, v5.10.0 and v5.12.3:
``Testing/test_slicer_widget.py`` checks it against ``api/slicer-<tag>.json``); they call
``slicer.app.coreIOManager().loadNodes(fileType, properties, loadedNodes, userMessages)`` (and ``fileType``
when no type is given). This stand-in exposes exactly those two Q_INVOKABLE methods of
``Base/QTCore/qSlicerCoreIOManager.h`` (same signatures at the four tags) and implements the one reader
the module needs, "VolumeFile", as ``Modules/Loadable/Volumes/qSlicerVolumesReader.cxx::load`` does at
those tags (same logic, reformatted between them): the real ``vtkSlicerVolumesLogic.AddArchetypeVolume``
reads the file through MRML's storage nodes into the real scene. Any other file type raises
``NotImplementedError`` (never a silent success); a failed read returns False with a user message, as
``qSlicerCoreIOManager::loadNodes`` does.
"""

from __future__ import annotations

from pathlib import Path

import slicer
import vtk

VOLUME_FILE = "VolumeFile"  # qSlicerVolumesReader::fileType() at every supported tag
# qSlicerVolumesReader::extensions(), the "Volume" filter (v5.6.2 to v5.12.3)
VOLUME_EXTENSIONS = (".hdr", ".nhdr", ".nrrd", ".mhd", ".mha", ".mnc", ".nii", ".nii.gz", ".mgh", ".mgz", ".mgh.gz",
                     ".img", ".img.gz", ".pic")
# qSlicerVolumesReader::load: IO property -> vtkSlicerVolumesLogic loading option bit
LOADING_OPTION_BITS = {"labelmap": 0x1, "center": 0x2, "singleFile": 0x4, "autoWindowLevel": 0x8,
                       "discardOrientation": 0x10}


class qSlicerCoreIOManager:
    """``fileType`` and ``loadNodes`` of Slicer's core IO manager; every other name raises AttributeError."""

    __slots__ = ()

    def fileType(self, file: str) -> str:
        """The file type of the reader for ``file`` (here only volumes: "VolumeFile")."""
        if str(file).lower().endswith(VOLUME_EXTENSIONS):
            return VOLUME_FILE
        raise NotImplementedError(f"the harness reads volumes only ({', '.join(VOLUME_EXTENSIONS)}), not {file}")

    def loadNodes(self, fileType: str, parameters: dict, loadedNodes=None, userMessages=None) -> bool:
        """Load ``parameters["fileName"]`` with the reader of ``fileType`` into ``slicer.mrmlScene``; the new
        nodes go into the vtkCollection ``loadedNodes``. Returns False (with a message) when reading fails."""
        if fileType != VOLUME_FILE:
            raise NotImplementedError(f"the harness implements the {VOLUME_FILE} reader only, not {fileType}")
        fileName = str(parameters["fileName"])
        node = _read_volume(fileName, parameters)
        if node is None:
            if userMessages is not None:  # qSlicerCoreIOManager::loadNodes: at least one message on failure
                userMessages.AddMessage(vtk.vtkCommand.ErrorEvent, f"Loading {fileName} -  load failed.")
            return False
        if loadedNodes is not None:
            loadedNodes.AddItem(node)
        return True


def _read_volume(fileName: str, properties: dict):
    """qSlicerVolumesReader::load (v5.6.2 to v5.12.3): the volume node read from ``fileName``, or None."""
    name = properties.get("name", Path(fileName).name.split(".")[0])  # QFileInfo::baseName(): up to the first dot
    options = 0
    for key, bit in LOADING_OPTION_BITS.items():
        if properties.get(key, False):
            options |= bit
    fileList = None
    if "fileNames" in properties:
        fileList = vtk.vtkStringArray()
        for file in properties["fileNames"]:
            fileList.InsertNextValue(str(file))
    logic = slicer.modules.volumes.logic()
    node = logic.AddArchetypeVolume(fileName, name, options, fileList)
    if node is None:
        return None
    colorNodeID = properties.get("colorNodeID", "")
    if colorNodeID and node.GetVolumeDisplayNode() is not None:
        node.GetVolumeDisplayNode().SetAndObserveColorNodeID(colorNodeID)
    if properties.get("show", True):
        appLogic = logic.GetApplicationLogic()
        selectionNode = appLogic.GetSelectionNode() if appLogic is not None else None
        if selectionNode is not None:
            if node.IsA("vtkMRMLLabelMapVolumeNode"):
                selectionNode.SetActiveLabelVolumeID(node.GetID())
            else:
                selectionNode.SetActiveVolumeID(node.GetID())
            appLogic.PropagateVolumeSelection()
    return node


_MANAGER = qSlicerCoreIOManager()


def core_io_manager() -> qSlicerCoreIOManager:
    """The application's one IO manager (``slicer.app.coreIOManager()``)."""
    return _MANAGER
