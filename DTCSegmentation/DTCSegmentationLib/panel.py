"""The module panel: Model, Segment, Training data, Fine-tune, Next case (see docs/slicer-module.md).

Each section is a mixin in a file of its own (:mod:`.panel_model`, :mod:`.panel_segment`,
:mod:`.panel_data`, :mod:`.panel_finetune`, :mod:`.panel_nextcase`); this file holds what they share:
set-up, the parameter node, which buttons can be used (``_checkCanApply``, Slicer's template) and the
job polling. Every operation goes through :class:`.logic.DTCSegmentationLogic`, which runs headless; the
sections keep only what the user sees.

Every torch job is an engine subprocess (:mod:`.jobs.enginejob`); the panel keeps one job per kind
("info", "segment", "rank", "train") in ``self._jobs``, polls all of them from one ``qt.QTimer`` and
stops the timer only when none is left, so Segment, ranking and fine-tuning can run side by side
without hiding each other's progress. The section that starts a job hands :meth:`_startJob` its own
handlers for the job's progress, other events and end; this file knows no kind of job.

The widget's own slots are connected after ``connectGui``: Slicer's connectors store a widget's new
value in the parameter node from the slot they connect, so slots connected later see the new value.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, NamedTuple

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import SlicerParameterNamePropertyName  # "SlicerParameterName", 5.6 to 5.12
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from DTCCore.protocol import EVENT_KEY, Event, JobEvent

from . import lifecycle, nextcase
from .logic import DTCSegmentationLogic
from .panel_data import DataSection
from .panel_finetune import FinetuneSection
from .panel_model import ModelSection
from .panel_nextcase import NextCaseSection
from .panel_segment import SegmentSection

CANCEL_TEXT = "Cancel"  # a job's button while the job runs
POLL_INTERVAL_MS = 200  # UI refresh period while a job runs (our choice: smooth, negligible cost)
# Why a button is disabled (its tooltip while it is; _checkCanApply)
NEEDS_VOLUME = "Select an input volume first (load a scan: File > Add Data)."
NEEDS_VOLUME_AND_SEGMENTATION = "Select the input volume and its corrected segmentation first."
# The user's settings that are not scene data: a scene close keeps them in the new scene's parameter node.
KEPT_ON_SCENE_CLOSE = ("modelsFolder", "datasetFolder", "modelPath", "device")


class JobHandlers(NamedTuple):
    """What the panel does with a running job's events (:meth:`DTCSegmentationWidget._startJob`)."""

    button: Any  # shows CANCEL_TEXT while the job runs; None: no button
    text: str  # the button's own text, put back when the job ends
    onProgress: Callable | None
    onEvent: Callable | None
    onEnd: Callable | None


class DTCSegmentationWidget(ModelSection, SegmentSection, DataSection, FinetuneSection, NextCaseSection,
                            ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiTag = None
        self._observed = None  # the parameter node _checkCanApply observes (not while the module is left)
        self._tips = {}  # button -> its own tooltip, shown while it is enabled
        self._jobs = {}  # kind -> EngineJob
        self._handlers = {}  # kind -> JobHandlers: what the section that started the job does with its events
        self._models = []
        self._modelInfo = {}  # model path -> dtc info record
        self._describedDevice = None
        self._curve = None
        self._plotView = None
        self._lastCancelledRun = None
        self._ranking = []  # [(path, mean disagreement)] highest first, the scans still unlabeled
        self._rankedCount = 0  # scans in the last ranking
        self._rankedSource = {}  # volume node ID -> the ranked unlabeled file Load the top-ranked volume read
        self._keptSettings = {}  # KEPT_ON_SCENE_CLOSE values across a scene close
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
        self._tips = {b: b.toolTip for b in (self.ui.segmentButton, self.ui.addLabeledButton)}
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
        """The module is unloaded (quit, or Reload before the new panel is built): the panel stops reacting
        (its widgets are disconnected from the parameter node) and every engine process it started ends
        within a bounded time, its temporary folders removed (:mod:`.lifecycle`). A fine-tune saves a
        checkpoint on the way; Resume continues from it after a restart."""
        if self.logic is not None:  # the waiting engine process exits too (jobs/spare.py)
            self.logic.spare.stop()
        self._timer.stop()
        self.setParameterNode(None)
        self.logic.stopAllJobs()
        self._jobs.clear()
        self._handlers.clear()
        self.removeObservers()

    def onReload(self):
        """Reload (developer mode): the module's own packages are imported afresh, then Slicer's Reload
        (``slicer.util.reloadScriptedModule``: the module file, this panel's cleanup(), a new panel)."""
        lifecycle.forget_packages()
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self):
        self.initializeParameterNode()  # connects the widgets only to a parameter node they are not connected to
        self._observe(self._parameterNode)
        if self._engineInstalled():  # the next job's engine process imports torch and loads the model now
            self.logic.spare.start(self.logic.modelFile(self._parameterNode.modelPath))

    def exit(self):
        """Leaving the module stops reacting to parameter node changes (Slicer's template; ``enter()`` checks
        the buttons again) but keeps the widgets connected: the template disconnects them here and reconnects
        on enter(), and before Slicer 5.10 that reconnect reset every choice combo box (see
        :meth:`setParameterNode`). Connected, the panel also shows what a job writes into the parameter node
        while another module is shown."""
        self._observe(None)

    def onSceneStartClose(self, caller, event):
        """A scene close: the running jobs go on (a fine-tune registers its model, ``dtc info`` and a ranking
        are about files; a Segment of the closed scene is dropped when it ends, :meth:`_endSegment`). The
        loaded-by-Next-case map is cleared: the new scene reuses node IDs (``vtkMRMLScene::Clear`` resets them)."""
        p = self._parameterNode
        self._keptSettings = {name: getattr(p, name) for name in KEPT_ON_SCENE_CLOSE} if p is not None else {}
        self._rankedSource.clear()
        self.logic.spare.stop()  # no spare engine process outlives the scene; a new one starts after
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        """The new scene's parameter node, with the user's folders and model, also while another module is
        shown: the jobs that end after the close write into it."""
        self.initializeParameterNode()
        for name, value in self._keptSettings.items():
            setattr(self._parameterNode, name, value)
        self._keptSettings = {}
        if not self.parent.isEntered:
            self._observe(None)  # as exit(): enter() checks the buttons again
        elif self._engineInstalled():
            self.logic.spare.start(self.logic.modelFile(self._parameterNode.modelPath))

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.inputVolume:
            p.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if self.logic.chosenFolder(p.modelsFolder) is None:
            p.modelsFolder = Path.home() / "DTCSegmentation" / "models"
        if self.logic.chosenFolder(p.datasetFolder) is None:
            p.datasetFolder = Path.home() / "DTCSegmentation" / "dataset"

    def setParameterNode(self, parameterNode):
        """Connect the widgets to ``parameterNode`` (a DTCSegmentationParameterNode, or None) once per MRML node.

        The same node again (enter() after exit()) keeps the connection: a second one refills the choice combo
        boxes, and before Slicer 5.10 the first one's connectors then write their first choice into the node
        (quality balanced -> fast, a chosen mode -> auto), because ``connectGui`` returns None there and
        ``disconnectGui(None)`` disconnects nothing (Slicer #7547, fixed by PR #8667 in 5.10). So the panel
        finds its bound widgets as ``connectGui`` does and calls ``connectParametersToGui``, which returns its
        tag in Slicer 5.6 to 5.12: a new node (after a scene close) is connected after the old one is
        disconnected for real."""
        if (parameterNode is not None and self._parameterNode is not None
                and parameterNode.parameterNode is self._parameterNode.parameterNode):
            return
        self._observe(None)
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._guiTag)
        self._parameterNode, self._guiTag = parameterNode, None
        if parameterNode is not None:
            widgets = {w.property(SlicerParameterNamePropertyName): w for w in vars(self.ui).values()
                       if w.property(SlicerParameterNamePropertyName)}  # the .ui sets it on each bound widget
            self._guiTag = parameterNode.connectParametersToGui(widgets)
            self._observe(parameterNode)

    def _observe(self, parameterNode):
        """Check the buttons on every change of ``parameterNode`` (None: on none), and check them now."""
        if self._observed is not None and self._observed is not parameterNode:
            self.removeObserver(self._observed, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._observed = None
        if parameterNode is not None and self._observed is None:
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._observed = parameterNode
        if parameterNode is not None:
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None):
        """Enable what the selection allows (Slicer's template): Segment needs an input volume (or runs, and
        is then Cancel); Add as labeled example an input volume and a segmentation. A disabled button's tooltip
        says what is missing."""
        p = self._parameterNode
        if p is None:
            return
        self._enable(self.ui.segmentButton, p.inputVolume is not None or "segment" in self._jobs, NEEDS_VOLUME)
        self._enable(self.ui.addLabeledButton, p.inputVolume is not None and p.segmentation is not None,
                     NEEDS_VOLUME_AND_SEGMENTATION)
        self._showModeChoice()

    def _enable(self, button, enabled: bool, why: str) -> None:
        button.enabled = enabled
        button.toolTip = self._tips.get(button, "") if enabled else why

    # ---- jobs ----
    def _installing(self, button, label) -> bool:
        """True while PyTorch is being installed (:meth:`_ensureEngine`): ``button`` then cancels the install it
        started, or ``label`` says to wait for the one another button started."""
        job = self._jobs.get("install")
        if job is None:
            return False
        if self._handlers["install"].button is button:
            job.cancel()
            label.text = "Cancelling the PyTorch installation..."
        else:
            label.text = "PyTorch is being installed; wait for it to finish (or cancel it), then click again."
        return True

    def _ensureEngine(self, button, label, bar=None) -> bool:
        """True when the engine can run. Else offers to install what it needs (:mod:`.dependencies`; raises
        DTCError when declined) and starts the PyTorch install as the panel's "install" job: polled, its output
        in ``label``, its phase in ``bar``, ``button`` its Cancel; once it is done the user clicks ``button`` again."""
        job = self.logic.startEngineInstall(
            lambda text: slicer.util.confirmOkCancelDisplay(text, "DTCSegmentation"), f"'{button.text}'")
        if job is None:
            return True
        label.text = "Installing PyTorch: starting the installer..."
        self._startJob("install", job, button, onProgress=functools.partial(self._installProgress, label, bar),
                       onEnd=functools.partial(self._endInstall, label, button.text))
        return False

    @staticmethod
    def _installProgress(label, bar, job, event):
        if bar is not None:
            bar.maximum, bar.value = event["total"], event["done"]
        label.text = f"Installing PyTorch ({job.elapsed_s:.0f} s): {event['line']}"

    def _endInstall(self, label, action, job, event):
        if event["event"] == JobEvent.DONE:
            with slicer.util.tryWithErrorDisplay("PyTorch was installed but cannot be imported."):
                self.logic.checkEngineInstalled()
                label.text = f"PyTorch is installed ({job.elapsed_s:.0f} s): click {action} again."
                self.refreshModels()  # dtc info of the models, now that the engine runs
        elif event["event"] == JobEvent.CANCELLED:
            label.text = "PyTorch installation cancelled; nothing was installed while it downloaded."
        else:
            label.text = f"PyTorch was not installed: {job.error}"
            slicer.util.errorDisplay(job.error)

    def _startJob(self, kind, job, button=None, onProgress=None, onEvent=None, onEnd=None):
        """Poll ``job`` (started) as the panel's ``kind`` job until it ends. The section that starts it handles
        it: ``onProgress(job, event)`` each ``progress`` event, ``onEvent(job, event)`` any other engine event,
        ``onEnd(job, event)`` once with the job's end event (job-done / job-cancelled / job-failed), after the
        job has left ``self._jobs`` and ``button`` (Cancel while it runs) has its own text back."""
        self.logic.registerJob(job)  # stopped on quit and Reload (cleanup)
        self._jobs[kind] = job
        self._handlers[kind] = JobHandlers(button, button.text if button is not None else "", onProgress, onEvent,
                                           onEnd)
        if button is not None:
            button.text = CANCEL_TEXT
        self._timer.start()

    def onTimer(self):
        for kind, job in list(self._jobs.items()):
            handlers = self._handlers[kind]
            for event in job.poll():
                name = event[EVENT_KEY]
                if name.startswith(JobEvent.PREFIX):
                    self._endJob(kind, job, event)  # the job's last event
                    continue
                handler = handlers.onProgress if name == Event.PROGRESS else handlers.onEvent
                if handler is not None:
                    handler(job, event)
        if not self._jobs:
            self._timer.stop()

    def _endJob(self, kind, job, event):
        del self._jobs[kind]
        handlers = self._handlers.pop(kind)
        if handlers.button is not None:
            handlers.button.text = handlers.text
        if handlers.onEnd is not None:
            handlers.onEnd(job, event)
        self._checkCanApply()  # Segment is no longer Cancel

    @staticmethod
    def _succeeded(job, event, label, what) -> bool:
        """Say in ``label`` how a Segment / ranking job ended (failures also in a message box)."""
        if event["event"] == JobEvent.CANCELLED:
            label.text = "Cancelled."
        elif event["event"] == JobEvent.FAILED:
            label.text = f"Failed: {job.error}"
            slicer.util.errorDisplay(f"{what} failed: {job.error}")
        return event["event"] == JobEvent.DONE
