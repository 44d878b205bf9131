"""The panel's Model section: the model list, what each model is (``dtc info`` in the background), the
device line, import and export. A mixin of :class:`.panel.DTCSegmentationWidget`; every operation goes
through its Logic, only presentation (:func:`.models.describe`) is read here."""

from __future__ import annotations

import qt
import slicer

from DTCCore.errors import DTCError
from DTCCore.protocol import JobEvent

from . import models
from .cores import job_threads

MODEL_FILTER = "DTCSegmentation model (*.pt)"


class ModelSection:
    def _engineInstalled(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("torch") is not None  # finds, never imports

    def refreshModels(self, *args):
        """List model files (no torch here), then read what each is with ``dtc info`` in the background."""
        self._findResumableRun()
        self._models = self.logic.listModels(self._parameterNode.modelsFolder)
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        for entry in self._models:
            combo.addItem(entry.label)
        paths = [self._modelKey(e) for e in self._models]
        if self._parameterNode.modelPath in paths:
            combo.currentIndex = paths.index(self._parameterNode.modelPath)
        combo.blockSignals(False)
        self.onModelSelected()
        if not self._engineInstalled():
            self.ui.deviceInfoLabel.text = "PyTorch is not installed yet: it will be offered on the first Segment."
            return
        self._startInfo([e.path for e in self._models if str(e.path) not in self._modelInfo])

    def _startInfo(self, paths):
        if "info" in self._jobs:
            return
        self._describedDevice = self._parameterNode.device
        with slicer.util.tryWithErrorDisplay("Could not read the models."):
            self._startJob("info", self.logic.startModelInfo(paths, self._describedDevice,
                                                             job_threads("info", self._jobs)), onEnd=self._endInfo)

    def _endInfo(self, job, event):
        self._modelInfo.update(job.models)
        if job.device:
            why = f" (no GPU: {job.device['why_no_gpu']})" if job.device.get("why_no_gpu") else ""
            self.ui.deviceInfoLabel.text = f"Device: {job.device['description']}{why}"
        elif event["event"] == JobEvent.FAILED:
            self.ui.deviceInfoLabel.text = f"Could not start the engine: {job.error}"
        self.onModelSelected()
        missing = [e.path for e in self._models if str(e.path) not in self._modelInfo]  # listed while it ran
        if event["event"] == JobEvent.DONE and (missing or self._describedDevice != self._parameterNode.device):
            self._startInfo(missing)

    @staticmethod
    def _modelKey(entry) -> str:
        return "" if entry.bundled else str(entry.path)

    def _currentEntry(self):
        i = self.ui.modelComboBox.currentIndex
        return self._models[i] if 0 <= i < len(self._models) else None

    def onModelSelected(self, index=None):
        entry = self._currentEntry()
        if entry is None:
            self.ui.modelInfoLabel.text = "No model: fine-tune one (Fine-tune section) or import a model"
            return
        self._parameterNode.modelPath = self._modelKey(entry)
        info = self._modelInfo.get(str(entry.path))
        self.ui.modelInfoLabel.text = models.describe(info) if info else "Reading the model..."
        self._showModeChoice()  # auto's pick depends on the model's classes and dims, known once it is read

    def updateDeviceInfo(self, index=None):
        if self._describedDevice == self._parameterNode.device or not self._engineInstalled():
            return  # connectGui refilling the combo box on module entry starts no process
        self.ui.deviceInfoLabel.text = f"Device: {self._parameterNode.device} (checking...)"
        self._startInfo([])

    def _knownInfo(self, modelPath: str) -> dict:
        """``dtc info`` of a model ("" = bundled) as read in the background. Not read yet: starts reading it and
        raises a DTCError asking to click again (reading it here would block the GUI while a child process
        imports torch)."""
        path = self.logic.modelFile(modelPath)
        info = self._modelInfo.get(str(path))
        if info and "error" in info:
            raise DTCError(f"cannot read model {path}: {info['error']}; pick another model")
        if info:
            return info
        self._startInfo([path])
        raise DTCError(f"the model {path.name} is still being read (its classes and settings); click again in a "
                       "moment")

    def _labelTable(self, modelPath: str):
        """The label table of a model ("" = bundled), from the background ``dtc info`` (:meth:`_knownInfo`)."""
        return self._knownInfo(modelPath)["labels"]

    def onImportModel(self):
        path = qt.QFileDialog.getOpenFileName(None, "Import model", "", MODEL_FILTER)
        if path:
            with slicer.util.tryWithErrorDisplay("Could not import the model."):
                target = self.logic.importModel(path, self._parameterNode.modelsFolder)
                self._parameterNode.modelPath = str(target)
                self.refreshModels()

    def onExportModel(self):
        entry = self._currentEntry()
        path = entry and qt.QFileDialog.getSaveFileName(None, "Export model", entry.label + ".pt", MODEL_FILTER)
        if path:
            with slicer.util.tryWithErrorDisplay("Could not export the model."):
                self.logic.exportModel(entry.path, path)
