"""Parameter node and logic of the DTCSegmentation module (everything but the GUI).

Usable from Slicer's Python console::

    from DTCSegmentationLib.logic import DTCSegmentationLogic
    nodes = DTCSegmentationLogic().segment(getNode("MRHead"), device="cpu")

torch is imported inside the methods that need it, never at import time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import numpy as np
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from DTCCore.errors import DTCError

from . import dataset, jobs, models, results, sceneio

QUALITY_OVERLAP = {"fast": 0.25, "balanced": 0.5, "best": 0.75}  # window overlap; 0.5 = MONAI's usual choice


@parameterNodeWrapper
class DTCSegmentationParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    inputROI: vtkMRMLMarkupsROINode
    modelPath: str = ""  # "" = bundled default
    modelsFolder: Path
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    quality: Annotated[str, Choice(list(QUALITY_OVERLAP))] = "balanced"
    largestComponent: bool = False
    datasetFolder: Path
    segmentation: vtkMRMLSegmentationNode
    startFrom: Annotated[str, Choice(["current model", "scratch"])] = "current model"
    iterations: Annotated[int, WithinRange(1, 100000)] = 1000
    learningRate: Annotated[float, WithinRange(1e-6, 1.0)] = 0.01
    labeledBatch: Annotated[int, WithinRange(1, 16)] = 2
    unlabeledBatch: Annotated[int, WithinRange(0, 16)] = 2
    patchX: Annotated[int, WithinRange(16, 256)] = 112
    patchY: Annotated[int, WithinRange(16, 256)] = 112
    patchZ: Annotated[int, WithinRange(16, 256)] = 80
    mode: Annotated[str, Choice(["dtc", "seg", "lsf", "seg+lsf"])] = "dtc"
    beta: Annotated[float, WithinRange(0.0, 10.0)] = 0.3
    k: Annotated[float, WithinRange(1.0, 10000.0)] = 1500.0
    consistencyRampup: Annotated[float, WithinRange(0.0, 1000.0)] = 40.0


def _folder(path) -> Path | None:
    return Path(path) if path is not None and str(path) not in ("", ".") else None


class DTCSegmentationLogic(ScriptedLoadableModuleLogic):
    """Everything but the GUI; usable from the Python console and from tests."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._model = None  # ((path, device), model, config)

    def getParameterNode(self) -> DTCSegmentationParameterNode:
        return DTCSegmentationParameterNode(super().getParameterNode())

    # ---- model ----
    def loadModel(self, modelPath: str | None, device: str = "auto"):
        """(model, config, torch device) for ``modelPath`` ("" / None = bundled default), cached."""
        from DTCCore.checkpoint import load_model
        from DTCCore.inference import resolve_device

        torchDevice = resolve_device(device)
        key = (str(modelPath or ""), str(torchDevice))
        if self._model is None or self._model[0] != key:
            model, config = load_model(modelPath or None, torchDevice)
            self._model = (key, model, config)
        return self._model[1], self._model[2], torchDevice

    def deviceDescription(self, device: str) -> str:
        """What the device choice resolves to (GPU name and memory) or why no GPU is usable."""
        import torch
        from DTCCore.inference import describe_device, resolve_device

        try:
            text = describe_device(resolve_device(device))
        except DTCError as exc:
            return f"Not available: {exc}"
        if not torch.cuda.is_available():
            why = "this PyTorch has no CUDA support" if torch.version.cuda is None else "no NVIDIA GPU/driver found"
            text += f" (no GPU: {why})"
        return text

    # ---- segment ----
    def prepareSegment(self, volume, roi=None) -> tuple[np.ndarray, tuple | None]:
        """Copy what inference needs out of the scene (UI thread): (image (X, Y, Z) float32, ROI slices)."""
        image, _ = sceneio.volume_to_array(volume)
        return image, sceneio.roi_to_slices(roi, volume)

    def predict(self, image, roi, modelPath=None, device="auto", quality="balanced",
                largestComponent=False, progress=None):
        """Run DTCCore inference on arrays only (thread-safe); returns a DTCCore Prediction."""
        import copy

        from DTCCore.inference import predict_volume

        model, config, torchDevice = self.loadModel(modelPath, device)
        config = copy.deepcopy(config)
        config.infer.overlap = QUALITY_OVERLAP[quality]
        prediction = predict_volume(model, image, config, torchDevice, roi=roi, progress=progress, log=logging.info)
        if largestComponent and prediction.label.any():
            from DTCCore.postprocess import largest_component

            prediction.label = largest_component(prediction.label > 0).astype(np.uint8)
        return prediction

    def writeResults(self, volume, prediction) -> results.ResultNodes:
        """Create the result nodes (UI thread)."""
        return results.create_results(volume, prediction)

    def segment(self, volume, roi=None, modelPath=None, device="auto", quality="balanced",
                largestComponent=False, progress=None) -> results.ResultNodes:
        """Synchronous Segment (console, tests): prepare, predict, write results."""
        image, region = self.prepareSegment(volume, roi)
        prediction = self.predict(image, region, modelPath, device, quality, largestComponent, progress)
        return self.writeResults(volume, prediction)

    # ---- training data ----
    def addLabeledExample(self, datasetFolder, volume, segmentationNode) -> tuple[Path, Path]:
        return dataset.DatasetFolder(datasetFolder).add_labeled_from_scene(volume, segmentationNode)

    def addUnlabeledVolumes(self, datasetFolder, volumes) -> list[Path]:
        folder = dataset.DatasetFolder(datasetFolder)
        return [folder.add_unlabeled_from_scene(v) for v in volumes]

    # ---- fine-tune ----
    def trainingRequest(self, p: DTCSegmentationParameterNode, resumeRunDir: Path | None = None) -> jobs.TrainingRequest:
        """The fine-tune request from the panel settings; DTCError when there is nothing to train on."""
        folder = dataset.DatasetFolder(p.datasetFolder)
        folder.require_labeled()
        modelsFolder = _folder(p.modelsFolder)
        if modelsFolder is None:
            raise DTCError("no models folder is set; choose one in Model > Models folder")
        initFrom = None
        config: dict = {}
        if p.startFrom == "current model":
            initFrom = Path(p.modelPath) if p.modelPath else models.bundled_model_path()
            if not initFrom.exists():
                raise DTCError(f"model {initFrom} does not exist; pick another model or start from scratch")
            from DTCCore.checkpoint import read_model_info

            config = read_model_info(initFrom)["config"]  # same network and inference settings
        config.setdefault("train", {}).update({
            "iterations": p.iterations, "lr": p.learningRate, "labeled_batch": p.labeledBatch,
            "unlabeled_batch": p.unlabeledBatch, "patch": [p.patchX, p.patchY, p.patchZ], "device": p.device,
        })
        config.setdefault("recipe", {}).update({
            "mode": p.mode, "beta": p.beta, "k": p.k, "consistency_rampup": p.consistencyRampup,
        })
        if resumeRunDir is not None:
            return jobs.TrainingRequest(folder.manifest_path, resumeRunDir, config, None, resume=True)
        return jobs.TrainingRequest(folder.manifest_path, models.new_run_dir(modelsFolder), config, initFrom)

    # ---- next case ----
    def rankByDisagreement(self, items, modelPath=None, device="auto", progress=None) -> list[tuple[str, float]]:
        """[(name, mean disagreement)] highest first; ``items`` are (name, image (X, Y, Z)) pairs."""
        scores = []
        for i, (name, image) in enumerate(items):
            prediction = self.predict(image, None, modelPath, device, "fast")
            scores.append((name, float(np.mean(prediction.disagreement))))
            if progress is not None:
                progress(i + 1, len(items))
        return sorted(scores, key=lambda s: s[1], reverse=True)
