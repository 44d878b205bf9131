"""DTCSegmentation: semi-supervised segmentation with dual-task consistency (Luo et al., AAAI 2021).

Module, Widget, Logic and Test classes only; the work is done by DTCCore (the engine, run as
``PythonSlicer -m DTCCore ...`` subprocesses) and by the small helpers in DTCSegmentationLib (scene <->
arrays, result nodes, dataset folder, jobs, models). Slicer's process never imports torch.
Supports 3D Slicer 5.6 to 5.12 (5.6 and 5.8 embed Python 3.9).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from DTCCore.errors import DTCError
from DTCSegmentationLib import results, sceneio
from DTCSegmentationLib.logic import DTCSegmentationLogic, DTCSegmentationParameterNode  # noqa: F401
from DTCSegmentationLib.panel import DTCSegmentationWidget  # noqa: F401  (Slicer looks it up here)

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


class DTCSegmentationTest(ScriptedLoadableModuleTest):
    """Self-test. Without torch (an extension build machine): result nodes from a stored prediction on an
    oblique volume, never overwriting an earlier result, and the dataset round trip. With torch: Segment
    end to end with the bundled model in an engine subprocess."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        import importlib.util

        self.setUp()
        self.test_results_and_dataset()
        if importlib.util.find_spec("torch") is not None:
            self.setUp()
            self.test_segment_end_to_end()

    @staticmethod
    def makeVolume(name="DTCTestVolume"):
        rng = np.random.default_rng(0)
        kji = rng.normal(100.0, 20.0, (20, 24, 28)).astype(np.float32)
        ijkToRas = np.array([[0.0, -0.9, 0.3, 12.0], [1.1, 0.0, 0.0, -30.0], [0.0, 0.35, 1.9, 7.5], [0, 0, 0, 1]])
        return slicer.util.addVolumeFromArray(kji, ijkToRas, name), kji, ijkToRas

    def test_results_and_dataset(self):
        self.delayDisplay("Result nodes from a stored prediction (no torch needed)")
        from DTCCore.data.labels import LEFT_ATRIUM
        from DTCSegmentationLib.jobs.segmentjob import SegmentResult

        volume, kji, ijkToRas = self.makeVolume()
        xyz = kji.shape[::-1]
        label = np.zeros(xyz, np.uint8)
        label[8:20, 6:18, 5:15] = 1
        levelset = np.where(label > 0, -0.5, 0.5).astype(np.float32)
        result = SegmentResult(label, [levelset], np.abs(levelset) * 0.2)
        logic = DTCSegmentationLogic()
        nodes = logic.writeResults(volume, result, [LEFT_ATRIUM])
        for node in (nodes.levelset, nodes.disagreement):
            self.assertTrue(np.allclose(sceneio.ijk_to_ras(node), ijkToRas))
            self.assertEqual(slicer.util.arrayFromVolume(node).shape, kji.shape)
        mask = results.segment_array(nodes.segmentation, nodes.segment_id, volume)
        self.assertTrue(np.array_equal(mask, label))
        segment = nodes.segmentation.GetSegmentation().GetSegment(nodes.segment_id)
        self.assertEqual(segment.GetName(), "Left atrium")
        entry = vtk.reference("")
        self.assertTrue(segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry))
        self.assertIn("DICOM master list~SCT^123037004^Anatomical Structure~SCT^82471001^Left atrium", str(entry))
        again = logic.writeResults(volume, result, [LEFT_ATRIUM])
        self.assertIsNot(again.segmentation, nodes.segmentation)  # a new node: the first one is untouched

        self.delayDisplay("Add the segmentation as a labeled example, twice")
        tmp = Path(tempfile.mkdtemp(prefix="DTCSegmentationTest-"))
        imagePath, labelPath = logic.addLabeledExample(tmp / "dataset", volume, nodes.segmentation)
        from DTCCore.data.images import read_image

        image, geometry = read_image(imagePath)
        self.assertTrue(np.array_equal(image, kji.transpose(2, 1, 0)))
        self.assertEqual(int(read_image(labelPath)[0].sum()), int(label.sum()))
        self.assertTrue(geometry.same_grid(sceneio.geometry_from_ijk_to_ras(ijkToRas)))
        with self.assertRaises(DTCError):
            logic.addLabeledExample(tmp / "dataset", volume, nodes.segmentation)
        self.delayDisplay("Test passed")

    def test_segment_end_to_end(self):
        self.delayDisplay("Segment with the bundled model in an engine subprocess")
        volume, kji, ijkToRas = self.makeVolume()
        nodes = DTCSegmentationLogic().segment(volume, device="cpu", quality="fast")
        for node in (nodes.levelset, nodes.disagreement):
            self.assertTrue(np.allclose(sceneio.ijk_to_ras(node), ijkToRas))
            self.assertEqual(slicer.util.arrayFromVolume(node).shape, kji.shape)
        levelset = slicer.util.arrayFromVolume(nodes.levelset)
        self.assertTrue(-1.0 <= levelset.min() and levelset.max() <= 1.0)
        self.assertEqual(nodes.segmentation.GetSegmentation().GetSegment(nodes.segment_id).GetName(), "Left atrium")
        self.delayDisplay("Test passed")
