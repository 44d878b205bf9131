"""The module panel: Model, Segment, Training data, Fine-tune, Next case (see docs/slicer-module.md).

Every torch job is an engine subprocess (:mod:`.enginejob`); the panel keeps one job per kind
("info", "segment", "rank", "train") in ``self._jobs``, polls all of them from one ``qt.QTimer`` and
stops the timer only when none is left, so Segment, ranking and fine-tuning can run side by side
without hiding each other's progress. The widget's own slots are connected after ``connectGui``:
Slicer's connectors store a widget's new value in the parameter node from the slot they connect, so
slots connected later see the new value.
"""

from __future__ import annotations

import time
from pathlib import Path

import qt
import slicer
from slicer.parameterNodeWrapper import SlicerParameterNamePropertyName  # "SlicerParameterName", 5.6 to 5.12
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from DTCCore.errors import DTCError
from DTCCore.protocol import Event, JobEvent

from . import dataset, models, nextcase, roihint, sceneio
from .cores import job_threads
from .logic import DTCSegmentationLogic, _folder
from .trainjob import TrainingJob

POLL_INTERVAL_MS = 200  # UI refresh period while a job runs (our choice: smooth, negligible cost)
MODEL_FILTER = "DTCSegmentation model (*.pt)"
VOLUME_FILTER = "Volumes (*.nrrd *.nii *.nii.gz *.mha)"


class DTCSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiTag = None
        self._jobs = {}  # kind -> EngineJob
        self._buttonTexts = {}  # kind -> (button, its text before "Cancel")
        self._models = []
        self._modelInfo = {}  # model path -> dtc info record
        self._describedDevice = None
        self._curve = None
        self._plotView = None
        self._lastCancelledRun = None
        self._ranking = []
        self._segmentTarget = None
        self._roiSize = None  # mm x y z of the model's training scans, for the "Add ROI box" button
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onTimer)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DTCSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DTCSegmentationLogic()
        self.ui.labeledTable.setHorizontalHeaderLabels(["Image", "Label"])
        self.ui.rankingTable.setHorizontalHeaderLabels(["Volume", "Mean disagreement"])
        self.ui.rankingTable.horizontalHeaderItem(1).setToolTip(nextcase.SCORE_TOOLTIP)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()  # connectGui first: the slots below then see updated values
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.roiButton.connect("clicked(bool)", self.onAddRoi)
        self.ui.roiButton.visible = False  # offered when a scan is much larger than the training scans (roihint)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.exportModelButton.connect("clicked(bool)", self.onExportModel)
        self.ui.modelsFolderButton.connect("directoryChanged(QString)", self.refreshModels)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.addLabeledButton.connect("clicked(bool)", self.onAddLabeled)
        self.ui.addLabeledFilesButton.connect("clicked(bool)", self.onAddLabeledFiles)
        self.ui.addUnlabeledButton.connect("clicked(bool)", self.onAddUnlabeled)
        self.ui.addUnlabeledFilesButton.connect("clicked(bool)", self.onAddUnlabeledFiles)
        self.ui.datasetFolderButton.connect("directoryChanged(QString)", self.refreshDataset)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.resumeButton.connect("clicked(bool)", self.onResume)
        self.ui.rankButton.connect("clicked(bool)", self.onRank)
        self.ui.loadTopButton.connect("clicked(bool)", self.onLoadTop)
        self.refreshModels()
        self.refreshDataset()

    def cleanup(self):
        self._timer.stop()
        for job in self._jobs.values():
            job.cancel()  # the trainer saves a checkpoint; Resume continues from it after a restart
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()  # connects the widgets only to a parameter node they are not connected to

    def exit(self):
        """Leaving the module keeps the widgets connected (Slicer's template disconnects here and reconnects on
        enter(): before Slicer 5.10 the reconnect reset every choice combo box, see :meth:`setParameterNode`).
        Connected, the panel also shows what a job writes into the parameter node while another module is shown."""

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.inputVolume:
            p.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if _folder(p.modelsFolder) is None:
            p.modelsFolder = Path.home() / "DTCSegmentation" / "models"
        if _folder(p.datasetFolder) is None:
            p.datasetFolder = Path.home() / "DTCSegmentation" / "dataset"

    def setParameterNode(self, parameterNode):
        """Connect the widgets to ``parameterNode`` (a DTCSegmentationParameterNode, or None) once per MRML node.

        The same node again (enter() after exit()) keeps the connection: a second one refills the choice combo
        boxes, and before Slicer 5.10 the first one's connectors then write their first choice into the node
        (quality balanced -> fast, mode dtc -> seg), because ``connectGui`` returns None there and
        ``disconnectGui(None)`` disconnects nothing (Slicer #7547, fixed by PR #8667 in 5.10). So the panel
        finds its bound widgets as ``connectGui`` does and calls ``connectParametersToGui``, which returns its
        tag in Slicer 5.6 to 5.12: a new node (after a scene close) is connected after the old one is
        disconnected for real."""
        if (parameterNode is not None and self._parameterNode is not None
                and parameterNode.parameterNode is self._parameterNode.parameterNode):
            return
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._guiTag)
        self._parameterNode, self._guiTag = parameterNode, None
        if parameterNode is not None:
            widgets = {w.property(SlicerParameterNamePropertyName): w for w in vars(self.ui).values()
                       if w.property(SlicerParameterNamePropertyName)}  # the .ui sets it on each bound widget
            self._guiTag = parameterNode.connectParametersToGui(widgets)

    # ---- jobs ----
    def _startJob(self, kind, job, button=None, cancelText="Cancel"):
        self._jobs[kind] = job
        if button is not None:
            self._buttonTexts[kind] = (button, button.text)
            button.text = cancelText
        self._timer.start()

    def onTimer(self):
        for kind, job in list(self._jobs.items()):
            for event in job.poll():
                if event["event"].startswith(JobEvent.PREFIX):
                    self._finishJob(kind, job, event)
                else:
                    self._onJobEvent(kind, job, event)
        if not self._jobs:
            self._timer.stop()

    def _finishJob(self, kind, job, event):
        del self._jobs[kind]
        button, text = self._buttonTexts.pop(kind, (None, None))
        if button is not None:
            button.text = text
        ends = {"info": self._endInfo, "segment": self._endSegment, "rank": self._endRank, "train": self._endTrain}
        ends[kind](job, event)

    def _onJobEvent(self, kind, job, event):
        if event["event"] == Event.EXTENT_WARNING:
            self.ui.segmentStatusLabel.text += roihint.note(job)
            self.ui.roiButton.visible, self._roiSize = True, job.extent["model_mm"]
        if event["event"] != Event.PROGRESS:
            return
        if kind == "segment":
            bar = self.ui.segmentProgressBar
            bar.maximum, bar.value = event["total"], event["done"]
            self.ui.segmentStatusLabel.text = (f"Running: window {event['done']}/{event['total']}, "
                                               f"{job.elapsed_s:.0f} s elapsed" + roihint.note(job))
        elif kind == "rank":
            self.ui.rankStatusLabel.text = (f"Ranking: {event['done']}/{event['total']} volumes, "
                                            f"{job.elapsed_s:.0f} s elapsed")
        elif kind == "train":
            self._curve.add(event)
            self.ui.trainProgressBar.maximum, self.ui.trainProgressBar.value = event["total"], event["iteration"]
            eta = time.strftime("%H:%M:%S", time.gmtime(event.get("eta_s", 0) or 0))
            self.ui.trainStatusLabel.text = (f"Iteration {event['iteration']}/{event['total']}, "
                                             f"loss {event['losses']['total']:.3f}, ETA {eta}")

    # ---- model ----
    def _ensureEngine(self):
        from .dependencies import ensure_torch

        ensure_torch(lambda text: slicer.util.confirmOkCancelDisplay(text, "DTCSegmentation"))

    def _engineInstalled(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("torch") is not None  # finds, never imports

    def refreshModels(self, *args):
        """List model files (no torch here), then read what each is with ``dtc info`` in the background."""
        self._findResumableRun()
        self._models = models.list_models(_folder(self._parameterNode.modelsFolder))
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
                                                             job_threads("info", self._jobs)))

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

    def updateDeviceInfo(self, index=None):
        if self._describedDevice == self._parameterNode.device or not self._engineInstalled():
            return  # connectGui refilling the combo box on module entry starts no process
        self.ui.deviceInfoLabel.text = f"Device: {self._parameterNode.device} (checking...)"
        self._startInfo([])

    def _labelTable(self, modelPath: str):
        """The label table of a model ("" = bundled): from the background ``dtc info``, else read now."""
        path = modelPath or str(models.bundled_model_path())
        info = self._modelInfo.get(path)
        if info and "labels" in info:
            return info["labels"]
        return self.logic.modelInfo(modelPath)["labels"]  # rare: Segment ended before the model list was read

    def onImportModel(self):
        path = qt.QFileDialog.getOpenFileName(None, "Import model", "", MODEL_FILTER)
        if path:
            with slicer.util.tryWithErrorDisplay("Could not import the model."):
                target = models.import_model(path, self._parameterNode.modelsFolder)
                self._parameterNode.modelPath = str(target)
                self.refreshModels()

    def onExportModel(self):
        entry = self._currentEntry()
        path = entry and qt.QFileDialog.getSaveFileName(None, "Export model", entry.label + ".pt", MODEL_FILTER)
        if path:
            with slicer.util.tryWithErrorDisplay("Could not export the model."):
                models.export_model(entry.path, path)

    # ---- segment ----
    def onSegmentButton(self):
        if "segment" in self._jobs:
            self._jobs["segment"].cancel()
            self.ui.segmentStatusLabel.text = "Cancelling..."
            return
        with slicer.util.tryWithErrorDisplay("Segment failed to start.", waitCursor=True):
            p = self._parameterNode
            sceneio.require_scalar_volume(p.inputVolume)
            output = p.outputSegmentation
            if output is not None and output.GetSegmentation().GetNumberOfSegments() > 0:
                if not slicer.util.confirmOkCancelDisplay(
                        f"Replace the segments of '{output.GetName()}' with the model's result? "
                        "Edits in them are lost.",
                        "DTCSegmentation"):
                    return
            self._ensureEngine()
            job = self.logic.startSegment(p.inputVolume, p.inputROI, p.modelPath, p.device, p.quality,
                                          p.largestComponent, job_threads("segment", self._jobs))
            self.ui.roiButton.visible = False
            self._segmentTarget = (p.inputVolume, output, p.modelPath)  # the table is read when results arrive
            self.ui.segmentStatusLabel.text = "Loading the model..."
            self._startJob("segment", job, self.ui.segmentButton)

    @staticmethod
    def _succeeded(job, event, label, what) -> bool:
        """Say in ``label`` how a Segment / ranking job ended (failures also in a message box)."""
        if event["event"] == JobEvent.CANCELLED:
            label.text = "Cancelled."
        elif event["event"] == JobEvent.FAILED:
            label.text = f"Failed: {job.error}"
            slicer.util.errorDisplay(f"{what} failed: {job.error}")
        return event["event"] == JobEvent.DONE

    def _endSegment(self, job, event):
        label = self.ui.segmentStatusLabel
        if self._succeeded(job, event, label, "Segment"):
            volume, output, modelPath = self._segmentTarget
            with slicer.util.tryWithErrorDisplay("Could not create the result nodes."):
                nodes = self.logic.writeResults(volume, job.result, self._labelTable(modelPath), output)
                self._parameterNode.segmentation = nodes.segmentation
                label.text = (f"Done in {job.elapsed_s:.1f} s on {job.device}: {nodes.segmentation.GetName()}"
                              + roihint.note(job))

    def onAddRoi(self):
        """The scan is much larger than the training scans: a box of their size, selected as the ROI."""
        with slicer.util.tryWithErrorDisplay("Could not add the ROI box."):
            self._parameterNode.inputROI = roihint.add_roi_box(self._parameterNode.inputVolume, self._roiSize)
            self.ui.roiButton.visible = False
            self.ui.segmentStatusLabel.text = "ROI box added at the scan's centre: move it onto the structure, Segment."

    # ---- training data ----
    def refreshDataset(self, *args):
        try:
            m = dataset.DatasetFolder(self._parameterNode.datasetFolder).load()
        except DTCError as exc:
            self.ui.datasetStatusLabel.text = str(exc)
            return
        self.ui.labeledTable.setRowCount(len(m.labeled))
        for row, pair in enumerate(m.labeled):
            self.ui.labeledTable.setItem(row, 0, qt.QTableWidgetItem(pair.image.name))
            self.ui.labeledTable.setItem(row, 1, qt.QTableWidgetItem(pair.label.name))
        self.ui.unlabeledList.clear()
        for path in m.unlabeled:
            self.ui.unlabeledList.addItem(path.name)
        self.ui.datasetStatusLabel.text = f"{len(m.labeled)} labeled, {len(m.unlabeled)} unlabeled"

    def onAddLabeled(self):
        with slicer.util.tryWithErrorDisplay("Could not add the labeled example.", waitCursor=True):
            p = self._parameterNode
            # fine-tuning the current model: the label holds its label values; from scratch the dataset's own
            table = self._labelTable(p.modelPath) if p.startFrom == "current model" else None
            image, _ = self.logic.addLabeledExample(p.datasetFolder, p.inputVolume, p.segmentation, table)
            self.refreshDataset()
            self.ui.datasetStatusLabel.text += f" (saved {image.name})"

    def onAddLabeledFiles(self):
        image = qt.QFileDialog.getOpenFileName(None, "Image", "", VOLUME_FILTER)
        label = image and qt.QFileDialog.getOpenFileName(None, "Label of " + image, "", VOLUME_FILTER)
        if image and label:
            with slicer.util.tryWithErrorDisplay("Could not add the labeled pair."):
                dataset.DatasetFolder(self._parameterNode.datasetFolder).add_labeled_files(image, label)
                self.refreshDataset()

    def onAddUnlabeled(self):
        with slicer.util.tryWithErrorDisplay("Could not add the unlabeled volumes.", waitCursor=True):
            volumes = self.ui.unlabeledVolumesSelector.checkedNodes()
            if not volumes:
                raise DTCError("no volume is checked; tick volumes in 'Unlabeled volumes' first")
            self.logic.addUnlabeledVolumes(self._parameterNode.datasetFolder, volumes)
            self.refreshDataset()

    def onAddUnlabeledFiles(self):
        files = qt.QFileDialog.getOpenFileNames(None, "Unlabeled volumes", "", VOLUME_FILTER)
        with slicer.util.tryWithErrorDisplay("Could not add the unlabeled files."):
            folder = dataset.DatasetFolder(self._parameterNode.datasetFolder)
            for path in files:
                folder.add_unlabeled_file(path)
            self.refreshDataset()

    # ---- fine-tune ----
    def onTrainButton(self):
        if "train" in self._jobs:
            self._jobs["train"].cancel()
            self.ui.trainStatusLabel.text = "Cancelling: the trainer saves a checkpoint at the end of this iteration..."
            return
        self._startTraining(None)

    def onResume(self):
        self._startTraining(self._lastCancelledRun)

    def _findResumableRun(self):
        """Enable Resume for the newest stopped fine-tune in the models folder (found on disk: it survives
        a restart of Slicer), unless a fine-tune is running."""
        found = models.resumable_run(_folder(self._parameterNode.modelsFolder))
        self._lastCancelledRun = found[0] if found else None
        self.ui.resumeButton.enabled = found is not None and "train" not in self._jobs
        self.ui.resumeButton.toolTip = (f"Continue {found[0].name} from its checkpoint at iteration {found[1]}"
                                        if found else "No stopped fine-tune in the models folder")

    def _showCurve(self, curve):
        """Show the loss chart in the panel's plot widget (qMRMLPlotWidget shows a plot view node's chart)."""
        if self._plotView is None or self._plotView.GetScene() is None:
            # Owned by the parameter node before it joins the scene: the layout manager builds a (hidden) plot
            # widget of its own for every view node without a parent layout node (qMRMLLayoutViewFactory).
            view = slicer.vtkMRMLPlotViewNode()
            view.SetName("DTC fine-tune plot view")
            view.SetAndObserveParentLayoutNodeID(self._parameterNode.parameterNode.GetID())
            self._plotView = slicer.mrmlScene.AddNode(view)
        self._plotView.SetPlotChartNodeID(curve.chart.GetID())
        self.ui.lossPlotWidget.setMRMLPlotViewNode(self._plotView)

    def _startTraining(self, resumeRunDir):
        with slicer.util.tryWithErrorDisplay("Fine-tuning failed to start."):
            self._ensureEngine()
            p = self._parameterNode
            entry = self._currentEntry()
            initInfo = self._modelInfo.get(str(entry.path)) if entry is not None else None
            request = self.logic.trainingRequest(p, resumeRunDir, initInfo, job_threads("train", self._jobs))
            job = TrainingJob(request)
            from .curves import LossCurve

            self._curve = LossCurve()
            self._showCurve(self._curve)  # before the process starts: a failure here leaves nothing running
            job.start()
            self.ui.resumeButton.enabled = False
            self.ui.trainStatusLabel.text = (f"Starting in {request.run_dir}"
                                             + (f" ({request.note})" if request.note else "") + "...")
            self._startJob("train", job, self.ui.trainButton)

    def _endTrain(self, job, event):
        if event["event"] == JobEvent.DONE:
            self._parameterNode.modelPath = event["model"]
            self.refreshModels()
            self.ui.trainStatusLabel.text = f"Done: new model {event['model']} is selected."
        elif event["event"] == JobEvent.CANCELLED:
            self._findResumableRun()
            self.ui.trainStatusLabel.text = (f"Cancelled; checkpoint kept: {event['checkpoint']}"
                                             if event.get("checkpoint") else "Cancelled before the first checkpoint.")
        else:
            self._findResumableRun()  # its last good checkpoint, if any, can be resumed
            self.ui.trainStatusLabel.text = f"Failed: {job.error}"
            slicer.util.errorDisplay(f"Fine-tuning failed: {job.error}")

    # ---- next case ----
    def onRank(self):
        if "rank" in self._jobs:
            self._jobs["rank"].cancel()
            return
        with slicer.util.tryWithErrorDisplay("Ranking failed to start.", waitCursor=True):
            self._ensureEngine()
            p = self._parameterNode
            job = self.logic.startRanking(p.datasetFolder, p.modelPath, p.device, job_threads("rank", self._jobs))
            self.ui.rankStatusLabel.text = "Ranking..."
            self._startJob("rank", job, self.ui.rankButton)

    def _endRank(self, job, event):
        label = self.ui.rankStatusLabel
        if self._succeeded(job, event, label, "Ranking"):
            self._ranking = job.ranking
            self.ui.rankingTable.setRowCount(len(job.ranking))
            for row, (path, score) in enumerate(job.ranking):
                name, value = qt.QTableWidgetItem(Path(path).name), qt.QTableWidgetItem(nextcase.score_text(score))
                name.setToolTip(str(path))
                value.setToolTip(nextcase.SCORE_TOOLTIP)
                self.ui.rankingTable.setItem(row, 0, name)
                self.ui.rankingTable.setItem(row, 1, value)
            label.text = nextcase.ranked_note(job.ranking, job.elapsed_s)

    def onLoadTop(self):
        with slicer.util.tryWithErrorDisplay("Could not load the volume."):
            if not self._ranking:
                raise DTCError("nothing is ranked yet; click 'Rank unlabeled volumes' first")
            node = slicer.util.loadVolume(self._ranking[0][0])
            self._parameterNode.inputVolume = node
            self.ui.rankStatusLabel.text = nextcase.loaded_note(self._ranking)
