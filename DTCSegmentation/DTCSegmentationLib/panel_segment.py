"""The panel's Segment section: Segment / Cancel, its progress and result nodes, and the "Add ROI box"
offered when a scan is much larger than the model's training scans. A mixin of
:class:`.panel.DTCSegmentationWidget`; the work is the Logic's."""

from __future__ import annotations

import functools

import slicer

from DTCCore.protocol import EVENT_KEY, Event

from . import roihint
from .cores import job_threads


class SegmentSection:
    def onSegmentButton(self):
        if "segment" in self._jobs:
            self._jobs["segment"].cancel()
            self.ui.segmentStatusLabel.text = "Cancelling..."
            return
        if self._installing(self.ui.segmentButton, self.ui.segmentStatusLabel):
            return
        with slicer.util.tryWithErrorDisplay("Segment failed to start.", waitCursor=True):
            p = self._parameterNode
            self.logic.checkInputVolume(p.inputVolume)  # before any question: a clear error names the fix
            output = p.outputSegmentation
            self.logic.checkOutputSegmentation(output, p.inputVolume)  # before the run, not after it
            if output is not None and output.GetSegmentation().GetNumberOfSegments() > 0:
                if not slicer.util.confirmOkCancelDisplay(
                        f"Replace the segments of '{output.GetName()}' with the model's result? "
                        "Edits in them are lost.",
                        "DTCSegmentation"):
                    return
            if not self._ensureEngine(self.ui.segmentButton, self.ui.segmentStatusLabel, self.ui.segmentProgressBar):
                return  # PyTorch is being installed first
            job = self.logic.startSegment(p.inputVolume, p.inputROI, p.modelPath, p.device, p.quality,
                                          p.largestComponent, job_threads("segment", self._jobs))
            self.ui.roiButton.visible = False
            self.ui.segmentStatusLabel.text = "Loading the model..."
            self._startJob("segment", job, self.ui.segmentButton, onProgress=self._segmentProgress,
                           onEvent=self._segmentEvent, onEnd=functools.partial(self._endSegment, p.inputVolume, output))

    def _segmentProgress(self, job, event):
        bar = self.ui.segmentProgressBar
        bar.maximum, bar.value = event["total"], event["done"]
        self.ui.segmentStatusLabel.text = (f"Running: window {event['done']}/{event['total']}, "
                                           f"{job.elapsed_s:.0f} s elapsed" + roihint.note(job))

    def _segmentEvent(self, job, event):
        if event[EVENT_KEY] == Event.EXTENT_WARNING:  # the scan is much larger than the training scans
            self.ui.segmentStatusLabel.text += roihint.note(job)
            self.ui.roiButton.visible, self._roiSize = True, job.extent["model_mm"]

    def _endSegment(self, volume, output, job, event):
        """Segment ended: on success the result nodes for ``volume`` (into ``output`` when one was chosen); nothing
        when the scene of ``volume`` was closed meanwhile (its results belong to no scene now)."""
        label = self.ui.segmentStatusLabel
        if any(node is not None and node.GetScene() is not slicer.mrmlScene for node in (volume, output)):
            label.text = f"Dropped: the scene of {volume.GetName()} was closed while Segment ran."
            return
        if self._succeeded(job, event, label, "Segment"):
            with slicer.util.tryWithErrorDisplay("Could not create the result nodes."):
                nodes = self.logic.writeResults(volume, job.result, job.labels, output)  # the model's, from the engine
                self._parameterNode.segmentation = nodes.segmentation
                label.text = (f"Done in {job.elapsed_s:.1f} s on {job.device}: {nodes.segmentation.GetName()}"
                              + roihint.note(job))

    def onAddRoi(self):
        """The scan is much larger than the training scans: a box of their size, selected as the ROI."""
        with slicer.util.tryWithErrorDisplay("Could not add the ROI box."):
            self._parameterNode.inputROI = self.logic.addRoiBox(self._parameterNode.inputVolume, self._roiSize)
            self.ui.roiButton.visible = False
            self.ui.segmentStatusLabel.text = "ROI box added at the scan's centre: move it onto the structure, Segment."
