"""DTCSegmentation: semi-supervised segmentation with dual-task consistency (Luo et al., AAAI 2021).

Module, Widget, Logic and Test classes only; the work is done by DTCCore (the engine) and by the small
helpers in DTCSegmentationLib (scene <-> arrays, result nodes, dataset folder, jobs, models).
torch is imported lazily: importing this file never needs it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import ctk  # noqa: F401  (widgets of the .ui)
import numpy as np
import qt
import slicer
import vtk  # noqa: F401  (Slicer modules import it; kept for console use)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DTCCore.errors import DTCError
from DTCSegmentationLib import dataset, jobs, models, results, sceneio
from DTCSegmentationLib.logic import DTCSegmentationLogic, DTCSegmentationParameterNode, _folder  # noqa: F401
from DTCSegmentationLib.worker import BackgroundTask

POLL_INTERVAL_MS = 200  # UI refresh period while a job runs (our choice: smooth, negligible cost)
SAMPLE_DIR = Path(__file__).resolve().parent / "DTCCore" / "sample"  # bundled copy (CMake installs it here)


class DTCSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "DTC Segmentation"
        parent.categories = ["Segmentation"]
        parent.dependencies = []
        parent.contributors = ["DTCSegmentation authors"]
        parent.helpText = (
            "Segment a scan with a dual-task (segmentation + level set) network, correct it, add it to a "
            "dataset and fine-tune the model on your data in the background. See docs/slicer-module.md."
        )
        parent.acknowledgementText = (
            "Method: Luo X, Chen J, Song T, Wang G. Semi-supervised Medical Image Segmentation through "
            "Dual-task Consistency. AAAI 2021. Sample: 2018 Atrial Segmentation Challenge."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def sampleFiles(sampleDir: Path | None = None) -> tuple[Path, Path]:
    """The bundled LA sample (image, label): next to the module in an install, else in the source tree."""
    for folder in [sampleDir, SAMPLE_DIR, Path(__file__).resolve().parents[1] / "DTCCore" / "sample"]:
        if folder is not None and (folder / "la_sample_image.nrrd").exists():
            return folder / "la_sample_image.nrrd", folder / "la_sample_label.nrrd"
    raise DTCError("the bundled sample case is missing; reinstall the extension")


def registerSampleData():
    """Register the bundled left-atrium MRI case (image + label) with the Sample Data module."""
    import SampleData

    image, label = sampleFiles()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="DTCSegmentation",
        sampleName="DTCLeftAtriumMRI",
        uris=[image.as_uri(), label.as_uri()],
        fileNames=["DTCLeftAtriumMRI.nrrd", "DTCLeftAtriumMRI-label.nrrd"],
        nodeNames=["DTCLeftAtriumMRI", "DTCLeftAtriumMRI-label"],
        loadFileType=["VolumeFile", "SegmentationFile"],
        thumbnailFileName=str(Path(__file__).resolve().parent / "Resources" / "Icons" / "DTCSegmentation.png"),
    )


class DTCSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: Model, Segment, Training data, Fine-tune, Next case (see docs/slicer-module.md)."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiTag = None
        self._task = None  # BackgroundTask of Segment / Next case
        self._taskKind = ""
        self._job = None  # jobs.TrainingJob
        self._curve = None
        self._lastCancelledRun = None
        self._ranking = []
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
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.refreshModels)
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
        self.initializeParameterNode()
        self.refreshModels()
        self.refreshDataset()
        self.ui.resumeButton.enabled = False

    def cleanup(self):
        self._timer.stop()
        if self._job is not None:
            self._job.cancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

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
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._guiTag = self._parameterNode.connectGui(self.ui)

    # ---- model ----
    def _ensureTorch(self):
        from DTCSegmentationLib.dependencies import ensure_torch

        ensure_torch(lambda text: slicer.util.confirmOkCancelDisplay(text, "DTCSegmentation"))

    def refreshModels(self, *args):
        import importlib.util

        self._models = []
        if importlib.util.find_spec("torch") is None:  # never install just because the panel opened
            self.ui.modelInfoLabel.text = "PyTorch is not installed yet: it will be offered on the first Segment."
            return
        with slicer.util.tryWithErrorDisplay("Could not list the models.", waitCursor=True):
            self._models = models.list_models(_folder(self._parameterNode.modelsFolder))
            self.ui.modelComboBox.blockSignals(True)
            self.ui.modelComboBox.clear()
            for entry in self._models:
                self.ui.modelComboBox.addItem(entry.label)
            current = [str(e.path or "") for e in self._models]
            if self._parameterNode.modelPath in current:
                self.ui.modelComboBox.currentIndex = current.index(self._parameterNode.modelPath)
            self.ui.modelComboBox.blockSignals(False)
            self.onModelSelected()
            self.updateDeviceInfo()

    def onModelSelected(self, index=None):
        i = self.ui.modelComboBox.currentIndex
        if 0 <= i < len(self._models):
            self._parameterNode.modelPath = str(self._models[i].path or "")
            self.ui.modelInfoLabel.text = self._models[i].description
        else:
            self.ui.modelInfoLabel.text = "No model: fine-tune one (Fine-tune section) or install a model"

    def updateDeviceInfo(self, index=None):
        self.ui.deviceInfoLabel.text = "Device: " + self.logic.deviceDescription(self._parameterNode.device)

    # ---- background tasks (Segment / Next case) ----
    def _startTask(self, kind, work, button, cancelText):
        self._task, self._taskKind = BackgroundTask(work), kind
        self._task.start()
        self._taskButton, self._taskButtonText = button, button.text
        button.text = cancelText
        self._timer.start()

    def onSegmentButton(self):
        if self._task is not None and self._taskKind == "segment":
            self._task.cancel()
            return
        with slicer.util.tryWithErrorDisplay("Segment failed to start.", waitCursor=True):
            self._ensureTorch()
            if not self._models:
                self.refreshModels()
            p = self._parameterNode
            volume = p.inputVolume
            image, roi = self.logic.prepareSegment(volume, p.inputROI)
            self._segmentVolume = volume
            args = (image, roi, p.modelPath, p.device, p.quality, p.largestComponent)
            self.ui.segmentStatusLabel.text = "Loading the model..."
            self._startTask("segment", lambda progress: self.logic.predict(*args, progress=progress),
                            self.ui.segmentButton, "Cancel")

    def _finishTask(self, state, value):
        self._timer.stop()
        self._taskButton.text = self._taskButtonText
        kind, task, self._task = self._taskKind, self._task, None
        label = self.ui.segmentStatusLabel if kind == "segment" else self.ui.rankStatusLabel
        if state == "cancelled":
            label.text = "Cancelled."
        elif state == "failed":
            label.text = f"Failed: {value}"
            slicer.util.errorDisplay(f"{'Segment' if kind == 'segment' else 'Ranking'} failed: {value}")
        elif kind == "segment":
            with slicer.util.tryWithErrorDisplay("Could not create the result nodes."):
                nodes = self.logic.writeResults(self._segmentVolume, value)
                self._parameterNode.segmentation = nodes.segmentation
                label.text = f"Done in {task.elapsed_s:.1f} s on {value.device}: {nodes.segmentation.GetName()}"
        else:
            self._ranking = value
            self.ui.rankingTable.setRowCount(len(value))
            for row, (name, score) in enumerate(value):
                self.ui.rankingTable.setItem(row, 0, qt.QTableWidgetItem(name))
                self.ui.rankingTable.setItem(row, 1, qt.QTableWidgetItem(f"{score:.4f}"))
            label.text = f"Ranked {len(value)} volumes in {task.elapsed_s:.1f} s."

    def onTimer(self):
        if self._task is not None:
            state, value = self._task.poll()
            if state == "running":
                done, total = value
                bar = self.ui.segmentProgressBar if self._taskKind == "segment" else None
                if bar is not None and total:
                    bar.maximum, bar.value = total, done
                status = self.ui.segmentStatusLabel if self._taskKind == "segment" else self.ui.rankStatusLabel
                status.text = f"Running: {done}/{total}, {self._task.elapsed_s:.0f} s elapsed"
            else:
                self._finishTask(state, value)
        if self._job is not None:
            self.pollJob()

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
            image, _ = self.logic.addLabeledExample(p.datasetFolder, p.inputVolume, p.segmentation)
            self.refreshDataset()
            self.ui.datasetStatusLabel.text += f" (saved {image.name})"

    def onAddLabeledFiles(self):
        image = qt.QFileDialog.getOpenFileName(None, "Image", "", "Volumes (*.nrrd *.nii *.nii.gz *.mha)")
        label = image and qt.QFileDialog.getOpenFileName(None, "Label of " + image, "", "Volumes (*.nrrd *.nii *.nii.gz *.mha)")
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
        files = qt.QFileDialog.getOpenFileNames(None, "Unlabeled volumes", "", "Volumes (*.nrrd *.nii *.nii.gz *.mha)")
        with slicer.util.tryWithErrorDisplay("Could not add the unlabeled files."):
            folder = dataset.DatasetFolder(self._parameterNode.datasetFolder)
            for path in files:
                folder.add_unlabeled_file(path)
            self.refreshDataset()

    # ---- fine-tune ----
    def onTrainButton(self):
        if self._job is not None:
            self._job.cancel()
            self.ui.trainStatusLabel.text = "Cancelling: saving a checkpoint..."
            return
        self._startJob(None)

    def onResume(self):
        self._startJob(self._lastCancelledRun)

    def _startJob(self, resumeRunDir):
        with slicer.util.tryWithErrorDisplay("Fine-tuning failed to start."):
            self._ensureTorch()
            request = self.logic.trainingRequest(self._parameterNode, resumeRunDir)
            self._job = jobs.TrainingJob(request)
            self._job.start()
            from DTCSegmentationLib.curves import LossCurve

            self._curve = LossCurve()
            self.ui.lossPlotWidget.setMRMLPlotChartNode(self._curve.chart)
            self.ui.trainButton.text, self.ui.resumeButton.enabled = "Cancel", False
            self.ui.trainStatusLabel.text = f"Starting in {request.run_dir}..."
            self._timer.start()

    def pollJob(self):
        for event in self._job.poll():
            kind = event.get("event")
            if kind == "progress":
                self._curve.add(event)
                self.ui.trainProgressBar.maximum, self.ui.trainProgressBar.value = event["total"], event["iteration"]
                eta = time.strftime("%H:%M:%S", time.gmtime(event.get("eta_s", 0) or 0))
                self.ui.trainStatusLabel.text = (f"Iteration {event['iteration']}/{event['total']}, "
                                                 f"loss {event['losses']['total']:.3f}, ETA {eta}")
            elif kind == "message":
                self.ui.trainStatusLabel.text = event.get("text", "")
            elif kind in ("job-done", "job-cancelled", "job-failed"):
                self._endJob(event)
                return

    def _endJob(self, event):
        job, self._job = self._job, None
        if self._task is None:
            self._timer.stop()
        self.ui.trainButton.text = "Start fine-tuning"
        if event["event"] == "job-done":
            self._parameterNode.modelPath = event["model"]
            self.refreshModels()
            self.ui.trainStatusLabel.text = f"Done: new model {event['model']} is selected."
        elif event["event"] == "job-cancelled":
            self._lastCancelledRun = job.request.run_dir
            self.ui.resumeButton.enabled = event["checkpoint"] is not None
            self.ui.trainStatusLabel.text = f"Cancelled; checkpoint kept: {event['checkpoint']}"
        else:
            self.ui.trainStatusLabel.text = f"Failed: {event['error']}"
            slicer.util.errorDisplay(f"Fine-tuning failed: {event['error']}")

    # ---- next case ----
    def onRank(self):
        if self._task is not None and self._taskKind == "rank":
            self._task.cancel()
            return
        with slicer.util.tryWithErrorDisplay("Ranking failed to start.", waitCursor=True):
            self._ensureTorch()
            m = dataset.DatasetFolder(self._parameterNode.datasetFolder).load()
            if not m.unlabeled:
                raise DTCError("the dataset has no unlabeled volumes; add some in Training data first")
            from DTCCore.io import read_image

            p = self._parameterNode
            self._rankPaths = {path.name: path for path in m.unlabeled}
            work = lambda progress: self.logic.rankByDisagreement(  # noqa: E731
                [(path.name, read_image(path)[0]) for path in m.unlabeled], p.modelPath, p.device, progress)
            self._startTask("rank", work, self.ui.rankButton, "Cancel")

    def onLoadTop(self):
        with slicer.util.tryWithErrorDisplay("Could not load the volume."):
            if not self._ranking:
                raise DTCError("nothing is ranked yet; click 'Rank unlabeled volumes' first")
            node = slicer.util.loadVolume(str(self._rankPaths[self._ranking[0][0]]))
            self._parameterNode.inputVolume = node


class DTCSegmentationTest(ScriptedLoadableModuleTest):
    """Self-test: a tiny model on a synthetic oblique volume; checks geometry, voxels and the dataset loop."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_and_annotate()

    @staticmethod
    def makeTinyModel(folder: Path) -> Path:
        """An untrained DualTaskVNet(base_filters=2), its segmentation bias centred so that about half of a
        z-scored input is foreground (a fixed-seed model that predicts something, not all or nothing)."""
        import torch
        from DTCCore import checkpoint, network
        from DTCCore.config import DTCConfig

        torch.manual_seed(0)
        config = DTCConfig.from_dict({"network": {"base_filters": 2}, "train": {"patch": [16, 16, 16]}})
        model = network.DualTaskVNet(base_filters=2).eval()
        with torch.no_grad():
            seg, _ = model(torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)))
            model.out_conv.bias -= seg.median()
        path = Path(folder) / "tiny.pt"
        checkpoint.save_checkpoint(path, model, None, 0, config, {})
        return path

    def test_segment_and_annotate(self):
        self.delayDisplay("Segment a synthetic oblique volume with a tiny model")
        tmp = Path(tempfile.mkdtemp(prefix="DTCSegmentationTest-"))
        modelPath = self.makeTinyModel(tmp)
        rng = np.random.default_rng(0)
        kji = rng.normal(100.0, 20.0, (20, 24, 28)).astype(np.float32)
        ijkToRas = np.array([[0.0, -0.9, 0.3, 12.0], [1.1, 0.0, 0.0, -30.0], [0.0, 0.35, 1.9, 7.5], [0, 0, 0, 1]])
        volume = slicer.util.addVolumeFromArray(kji, ijkToRas, "DTCTestVolume")
        logic = DTCSegmentationLogic()
        nodes = logic.segment(volume, modelPath=str(modelPath), device="cpu")
        for node in (nodes.levelset, nodes.disagreement):
            self.assertTrue(np.allclose(sceneio.ijk_to_ras(node), ijkToRas))
            self.assertEqual(slicer.util.arrayFromVolume(node).shape, kji.shape)
        levelset = slicer.util.arrayFromVolume(nodes.levelset)
        self.assertTrue(-1.0 <= levelset.min() and levelset.max() <= 1.0)
        mask = results.segment_array(nodes.segmentation, nodes.segment_id, volume)
        self.assertEqual(mask.shape, kji.shape[::-1])
        self.assertEqual(nodes.segmentation.GetSegmentation().GetSegment(nodes.segment_id).GetName(), results.SEGMENT_NAME)

        self.delayDisplay("Add the segmentation as a labeled example, twice")
        slicer.util.updateSegmentBinaryLabelmapFromArray(np.pad(np.ones((4, 4, 4), np.uint8), 8)[:20, :24, :28],
                                                         nodes.segmentation, nodes.segment_id, volume)
        imagePath, labelPath = logic.addLabeledExample(tmp / "dataset", volume, nodes.segmentation)
        from DTCCore.io import read_image

        image, geometry = read_image(imagePath)
        self.assertTrue(np.array_equal(image, kji.transpose(2, 1, 0)))
        label, _ = read_image(labelPath)
        self.assertEqual(int(label.sum()), 64)
        self.assertTrue(geometry.same_grid(sceneio.geometry_from_ijk_to_ras(ijkToRas)))
        with self.assertRaises(DTCError):
            logic.addLabeledExample(tmp / "dataset", volume, nodes.segmentation)
        self.delayDisplay("Test passed")
