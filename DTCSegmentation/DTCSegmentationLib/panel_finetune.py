"""The panel's Fine-tune section: Fine-tune / Cancel, Resume (the newest stopped run, found on disk), the
loss plot and progress. A mixin of :class:`.panel.DTCSegmentationWidget`; the request and the job are the
Logic's (:meth:`.logic.DTCSegmentationLogic.trainingRequest`, ``startTraining``)."""

from __future__ import annotations

import time

import slicer

from DTCCore.errors import DTCError
from DTCCore.protocol import JobEvent

from .cores import job_threads


class FinetuneSection:
    def onTrainButton(self):
        if "train" in self._jobs:
            self._jobs["train"].cancel()
            self.ui.trainStatusLabel.text = "Cancelling: the trainer saves a checkpoint at the end of this iteration..."
            return
        self._startTraining(None)

    def onResume(self):
        self._startTraining(self._lastCancelledRun)

    def _showModeChoice(self):
        """Under Mode: with auto, which mode the next fine-tune trains and why (the run's length, the model's classes
        and dims, and the studies), in one line; empty for a mode the user chose. A fine-tune's model is known once
        its ``dtc info`` is read in the background (until then: as for any model; onModelSelected shows it again).
        A dataset that cannot be read leaves the reason to Start."""
        p = self._parameterNode
        info = self._modelInfo.get(str(self.logic.modelFile(p.modelPath))) if p.startFrom == "current model" else None
        try:
            _, reason = self.logic.modeChoice(p, modelInfo=info if info and "error" not in info else None)
        except (DTCError, OSError, RuntimeError):  # an unreadable dataset: Start says why (never raise in an observer)
            reason = ""
        self.ui.modeChoiceLabel.text = reason

    def _findResumableRun(self):
        """Enable Resume for the newest stopped fine-tune in the models folder (found on disk: it survives
        a restart of Slicer), unless a fine-tune is running."""
        found = self.logic.resumableRun(self._parameterNode.modelsFolder)
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
        if self._installing(self.ui.trainButton, self.ui.trainStatusLabel):
            return
        with slicer.util.tryWithErrorDisplay("Fine-tuning failed to start."):
            if not self._ensureEngine(self.ui.trainButton, self.ui.trainStatusLabel, self.ui.trainProgressBar):
                return  # PyTorch is being installed first
            p = self._parameterNode
            fineTune = p.startFrom == "current model" and resumeRunDir is None
            initInfo = self._knownInfo(p.modelPath) if fineTune else None  # never read here: the GUI would wait
            request = self.logic.trainingRequest(p, resumeRunDir, initInfo, job_threads("train", self._jobs))
            from .curves import LossCurve

            self._curve = LossCurve()
            self._showCurve(self._curve)  # before the process starts: a failure here leaves nothing running
            job = self.logic.startTraining(request)
            self.ui.resumeButton.enabled = False
            self.ui.trainStatusLabel.text = (f"Starting in {request.run_dir}"
                                             + (f" ({request.note})" if request.note else "") + "...")
            self._startJob("train", job, self.ui.trainButton, onProgress=self._trainProgress, onEnd=self._endTrain)

    def _trainProgress(self, job, event):
        self._curve.add(event)
        self.ui.trainProgressBar.maximum, self.ui.trainProgressBar.value = event["total"], event["iteration"]
        eta = time.strftime("%H:%M:%S", time.gmtime(event.get("eta_s", 0) or 0))
        self.ui.trainStatusLabel.text = (f"Iteration {event['iteration']}/{event['total']}, "
                                         f"loss {event['losses']['total']:.3f}, ETA {eta}")

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
