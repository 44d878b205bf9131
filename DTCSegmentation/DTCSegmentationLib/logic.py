"""Parameter node and logic of the DTCSegmentation module (everything but the GUI).

Usable from Slicer's Python console::

    from DTCSegmentationLib.logic import DTCSegmentationLogic
    nodes = DTCSegmentationLogic().segment(getNode("MRHead"), device="cpu")

torch is never imported in Slicer's process: Segment, ranking, model information and fine-tuning run
as ``PythonSlicer -m DTCCore ...`` subprocesses (:mod:`.jobs.enginejob`, :mod:`.jobs.segmentjob`,
:mod:`.jobs.rankjob`, :mod:`.jobs.infojob`, :mod:`.jobs.trainjob`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from DTCCore.config import AUGMENT_CHOICES, DEVICE_CHOICES, MODES, DTCConfig
from DTCCore.errors import DTCError
from DTCCore.planning.dims import SLICES_PER_CROP_2D, auto_dims, plane_pools  # torch-free
from DTCCore.planning.pools import auto_pools, check_patch, fit_patch
from DTCCore.planning.spacing import manifest_geometry, median_spacing  # torch-free: image headers only
from DTCCore.protocol import JobState
from DTCCore.training import mode_choice
from DTCCore.training.mode_choice import AUTO_MODE
from DTCCore.training.schedule import fit_schedule  # torch-free, as DTCCore.config

from . import dataset, models, results, roihint, sceneio
from .jobs.infojob import ModelInfoJob
from .jobs.rankjob import RankJob
from .jobs.segmentjob import SegmentJob
from .jobs.spare import Spare
from .jobs.trainjob import TrainingJob, TrainingRequest
from .lifecycle import STOP_GRACE_S, ProcessRegistry

JOB_TIMEOUT_S = 3600.0  # synchronous (console) calls only; the panel never waits
DATASET_LABELS = dataset.LABELS_NAME  # label table of the dataset's segments, for models fine-tuned on it
QUALITY_OVERLAP = {"fast": 0.25, "balanced": 0.5, "best": 0.75}  # window overlap; 0.5 = MONAI's usual choice
# Test-time augmentation per quality (average over the flips the model was trained with, or the turns of a
# no-mirror model; up to 4x the time): True adds dtc segment --tta, False --no-tta, None keeps the model's own.
QUALITY_TTA = {"fast": False, "balanced": None, "best": True}
AUGMENT_FROM_MODEL = "model's own"  # fine-tune: keep the starting model's augmentation; from scratch: mirror
# The training settings' defaults are the engine's (DTCCore.config, the reference's constants) so that they have
# one owner; only the run's length is the panel's own: a laptop user asks for minutes, not the recipe's 6000.
_RECIPE = DTCConfig()
# "Train for" by default (0 = off: use iterations); the schedule is fitted to what fits. The annotation-loop study
# (bench/studies/annotation_loop.py, bench/RESULTS.md) fine-tuned 500 iterations after every 2 corrections and went from
# 74.5 to 87.4 % Dice in 5 rounds; 500 iterations take 8.6 minutes on one core in fp32 (1.03 s each, the bundled
# model's plan), so 10 minutes give at least that on any computer with a core free for it.
FINETUNE_MINUTES = 10
FINETUNE_ITERATIONS = 1000  # our choice, used when the time limit is off; the schedule is fitted to it


@parameterNodeWrapper
class DTCSegmentationParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    inputROI: vtkMRMLMarkupsROINode
    modelPath: str = ""  # "" = bundled default
    modelsFolder: Path
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    quality: Annotated[str, Choice(list(QUALITY_OVERLAP))] = "balanced"
    largestComponent: bool = False
    datasetFolder: Path
    segmentation: vtkMRMLSegmentationNode
    outputSegmentation: vtkMRMLSegmentationNode  # None: each Segment creates a new node
    startFrom: Annotated[str, Choice(["current model", "scratch"])] = "current model"
    # Fine-tune length: minutes (the schedule fitted to what fits; 0 = off, use ``iterations``).
    timeLimitMinutes: Annotated[int, WithinRange(0, 1440)] = FINETUNE_MINUTES
    iterations: Annotated[int, WithinRange(1, 100000)] = FINETUNE_ITERATIONS
    learningRate: Annotated[float, WithinRange(1e-6, 1.0)] = _RECIPE.train.lr
    labeledBatch: Annotated[int, WithinRange(1, 16)] = _RECIPE.train.labeled_batch
    unlabeledBatch: Annotated[int, WithinRange(0, 16)] = _RECIPE.train.unlabeled_batch
    patchX: Annotated[int, WithinRange(16, 256)] = _RECIPE.train.patch[0]
    patchY: Annotated[int, WithinRange(16, 256)] = _RECIPE.train.patch[1]
    # Slice axis down to 4: a thick-slice network halves it fewer times (scratchNetwork), e.g. 128 x 128 x 8.
    patchZ: Annotated[int, WithinRange(4, 256)] = _RECIPE.train.patch[2]
    # auto (default): the mode the equal-CPU-time studies show wins for the run's length and model (modeChoice);
    # the others as dtc train --mode (dtc: the paper's recipe).
    mode: Annotated[str, Choice([AUTO_MODE, *MODES])] = AUTO_MODE
    # Training augmentation: a flip turns a left structure into a right one, so labels that depend on side need
    # no-mirror; nnU-Net's scaling/intensity augmentations paid on cardiac MRI (bench/RESULTS.md, ACDC stage 6).
    augment: Annotated[str, Choice([AUGMENT_FROM_MODEL, *AUGMENT_CHOICES])] = AUGMENT_FROM_MODEL
    nnunetAugment: bool = _RECIPE.train.nnunet_augment
    beta: Annotated[float, WithinRange(0.0, 10.0)] = _RECIPE.recipe.beta
    k: Annotated[float, WithinRange(1.0, 10000.0)] = _RECIPE.recipe.k
    consistencyRampup: Annotated[float, WithinRange(0.0, 1000.0)] = _RECIPE.recipe.consistency_rampup


def _fitSchedule(config: dict, iterations: int) -> None:
    """Scale the lr steps and consistency ramp of ``config`` (a config dict, possibly partial: DTCConfig's
    defaults fill it) from its own length to ``iterations``, in place, as ``dtc train --iterations`` does
    (:func:`DTCCore.training.schedule.fit_schedule`): lr x0.1 at 5/12 and 10/12 of the run and full consistency weight
    at its end for the recipe's schedule. Without it a 1000-iteration run kept the 6000-iteration recipe's
    steps (never reached) and ramp (lambda 0.03 at the end). A time limit fits the scaled schedule again to
    the iterations that fit; ``train.schedule_fitted`` is left to the caller."""
    schedule = DTCConfig()
    train, recipe = config.setdefault("train", {}), config.setdefault("recipe", {})
    schedule.train.iterations = int(train.get("iterations", schedule.train.iterations))
    schedule.train.lr_steps = tuple(int(s) for s in train.get("lr_steps", schedule.train.lr_steps))
    schedule.recipe.ramp_unit = int(recipe.get("ramp_unit", schedule.recipe.ramp_unit))
    if int(iterations) != schedule.train.iterations:
        fit_schedule(schedule, iterations)
    train["lr_steps"] = list(schedule.train.lr_steps)
    recipe["ramp_unit"] = schedule.recipe.ramp_unit


class DTCSegmentationLogic(ScriptedLoadableModuleLogic):
    """Everything but the GUI; usable from the Python console and from tests."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        # The next Segment / ranking / info job's engine process, started in advance once the panel calls
        # spare.start() (jobs/spare.py); off until then: every job starts its process cold.
        self.spare = Spare()
        self._processes = ProcessRegistry()
        # (manifest's file key, dims) of the last network planned from a dataset's scan headers for the mode line,
        # which is recomputed on every change of the panel's settings; a new key (scans added) plans again.
        self._plannedDims: tuple[tuple, int] | None = None

    # ---- processes ----
    def registerJob(self, job):
        """Have :meth:`stopAllJobs` stop ``job`` (anything holding a ``runner``, :mod:`.lifecycle`); returns it.
        Every job this Logic starts is registered."""
        return self._processes.register(job)

    def stopAllJobs(self, graceSeconds: float = STOP_GRACE_S) -> list:
        """Stop every engine process this Logic started or was given, within ``graceSeconds`` (SIGTERM and
        cancel files, then kill), and remove their temporary folders (quit, Reload); the jobs that ran."""
        return self._processes.stop_all(graceSeconds)

    def getParameterNode(self) -> DTCSegmentationParameterNode:
        return DTCSegmentationParameterNode(super().getParameterNode())

    @staticmethod
    def chosenFolder(folder) -> Path | None:
        """The folder a folder setting (a parameter node's Path, a directory button's text) names; None when it
        names none: unset, "" or "." (what ``Path("")`` becomes)."""
        return Path(folder) if folder is not None and str(folder) not in ("", ".") else None

    # ---- model ----
    def listModels(self, modelsFolder) -> list[models.ModelEntry]:
        """The bundled default, then the models trained or imported into ``modelsFolder`` (unset: none)."""
        return models.list_models(self.chosenFolder(modelsFolder))

    @staticmethod
    def modelFile(modelPath: str | None) -> Path:
        """The file of a model choice ("" / None = the bundled default)."""
        return Path(modelPath) if modelPath else models.bundled_model_path()

    def importModel(self, modelFile, modelsFolder) -> Path:
        """Copy a model file into the models folder (checked, atomic); returns the copy."""
        return models.import_model(modelFile, modelsFolder)

    def exportModel(self, modelFile, target) -> Path:
        """Write a model to ``target`` (atomic)."""
        return models.export_model(modelFile, target)

    def startModelInfo(self, modelPaths: list, device: str | None = None, threads: int | None = None) -> ModelInfoJob:
        """``dtc info`` on the models (and the device choice) in the background (``threads``: see startSegment)."""
        job = ModelInfoJob(Path(tempfile.mkdtemp(prefix="DTCInfo-")), [str(p) for p in modelPaths], device,
                           runner=self.spare.runner(), threads=threads)
        self.registerJob(job)
        job.start()
        return job

    def modelInfo(self, modelPath: str | None) -> dict:
        """What ``dtc info`` says about one model ("" / None = bundled default); blocks (console use)."""
        path = str(self.modelFile(modelPath))
        job = self.startModelInfo([path])
        job.wait(JOB_TIMEOUT_S)
        info = job.models.get(path)
        if job.state != JobState.DONE or info is None or "error" in info:
            raise DTCError((info or {}).get("error") or job.error or f"cannot read model {path}")
        return info

    # ---- engine ----
    def startEngineInstall(self, confirm, action: str = "the button"):
        """None when the engine's packages are installed; else, once ``confirm(message)`` agrees, the started
        PyTorch install job (:mod:`.jobs.installjob`; poll it). DTCError when declined or failed."""
        from . import dependencies

        job = dependencies.start_install(confirm, action)
        return self.registerJob(job) if job is not None else None

    @staticmethod
    def checkEngineInstalled() -> None:
        """DTCError naming the fix when torch is not importable after an install."""
        from . import dependencies

        dependencies.check_installed()

    # ---- segment ----
    @staticmethod
    def checkInputVolume(volume) -> None:
        """DTCError naming the fix unless ``volume`` is a grey-level scalar volume with voxels."""
        sceneio.require_scalar_volume(volume)

    @staticmethod
    def checkOutputSegmentation(output, volume) -> None:
        """DTCError naming the fix when the chosen output segmentation cannot take ``volume``'s labels as it is
        (:func:`.results.check_output`); None (a new node each time) always can."""
        if output is not None:
            results.check_output(output, volume)

    def addRoiBox(self, volume, sizeMm):
        """A new ROI node of ``sizeMm`` (x y z mm) at the centre of ``volume``, along its axes (:mod:`.roihint`)."""
        return roihint.add_roi_box(volume, sizeMm)

    def startSegment(self, volume, roi=None, modelPath: str = "", device: str = "auto", quality: str = "balanced",
                     largestComponent: bool = False, threads: int | None = None) -> SegmentJob:
        """Write the scan to a work folder and start ``dtc segment`` on it (the ROI's voxel box as ``--roi``:
        the engine crops and pastes back, :mod:`.jobs.segmentjob`).

        ``threads``: the job's CPU threads (``dtc segment --threads``; the panel's share, :mod:`.cores`);
        None: every core. ``job.extent`` is set when the engine finds the scan much larger than the
        model's training scans (:mod:`DTCCore.planning.extent`). The scan goes to the engine in its own voxel
        type, uncompressed, straight from the node's array (:func:`.sceneio.write_volume_file`); the job runs in
        the spare engine process when one waits (:mod:`.jobs.spare`).
        """
        sceneio.require_scalar_volume(volume)
        region = sceneio.roi_to_slices(roi, volume)
        work = Path(tempfile.mkdtemp(prefix="DTCSegment-"))
        sceneio.write_volume_file(volume, work / "input.nrrd")
        job = SegmentJob(work, work / "input.nrrd", region, modelPath or "", device, QUALITY_OVERLAP[quality],
                         largestComponent, runner=self.spare.runner(self.modelFile(modelPath)),
                         tta=QUALITY_TTA[quality], threads=threads)
        self.registerJob(job)
        job.start()
        return job

    def writeResults(self, volume, result, table: list, output=None) -> results.ResultNodes:
        """Create the result nodes (new nodes; into ``output`` when one is given)."""
        return results.create_results(volume, result, table, output)

    def segment(self, volume, roi=None, modelPath=None, device="auto", quality="balanced",
                largestComponent=False, output=None, table: list | None = None) -> results.ResultNodes:
        """Synchronous Segment (console, tests, self-test): the engine subprocess, then the result nodes.

        ``table``: the label table naming the segments; None: the model's own, sent by the engine with the results.
        """
        sceneio.require_scalar_volume(volume)
        job = self.startSegment(volume, roi, modelPath or "", device, quality, largestComponent)
        job.wait(JOB_TIMEOUT_S)
        if job.state != JobState.DONE:
            raise DTCError(f"Segment {job.state}: {job.error}" if job.error else f"Segment {job.state}")
        return self.writeResults(volume, job.result, table or job.labels, output)

    # ---- training data ----
    def addLabeledExample(self, datasetFolder, volume, segmentationNode, table: list | None = None,
                          loadedFrom: str | None = None) -> tuple[Path, Path]:
        """Write the scan and its label as a new labeled case; returns (image path, label path).

        ``table``: the label table of the model the example is for (``dtc info``'s ``labels``): the label
        file holds its values, each segment matched by name or terminology, and a segmentation that does
        not fit it is refused (:mod:`.labelexport`). None: the dataset's ``labels.json``, else the segments
        in their order. The dataset's ``labels.json`` is written by the first example (:mod:`.dataset`).
        ``loadedFrom``: the file the volume was loaded from by Next case; an unlabeled scan of the dataset then
        becomes this labeled pair (it leaves the unlabeled list).
        """
        return dataset.DatasetFolder(datasetFolder).add_labeled_from_scene(volume, segmentationNode, table,
                                                                           loadedFrom)

    def addUnlabeledVolumes(self, datasetFolder, volumes) -> list[Path]:
        folder = dataset.DatasetFolder(datasetFolder)
        return [folder.add_unlabeled_from_scene(v) for v in volumes]

    def loadDataset(self, datasetFolder):
        """The dataset folder's manifest (labeled pairs, unlabeled volumes); DTCError when it is unreadable."""
        return dataset.DatasetFolder(datasetFolder).load()

    def addLabeledFiles(self, datasetFolder, image, label) -> None:
        """Copy an image file and its label file into the dataset as a labeled pair (checked first)."""
        dataset.DatasetFolder(datasetFolder).add_labeled_files(image, label)

    def addUnlabeledFiles(self, datasetFolder, images) -> None:
        """Copy image files into the dataset as unlabeled volumes."""
        folder = dataset.DatasetFolder(datasetFolder)
        for path in images:
            folder.add_unlabeled_file(path)

    # ---- fine-tune ----
    def resumableRun(self, modelsFolder) -> tuple[Path, int] | None:
        """(run folder, checkpoint iteration) of the newest stopped fine-tune in ``modelsFolder``, or None."""
        return models.resumable_run(self.chosenFolder(modelsFolder))

    def startTraining(self, request: TrainingRequest) -> TrainingJob:
        """Start ``dtc train`` for ``request`` (:meth:`trainingRequest`) in the background."""
        job = TrainingJob(request)
        self.registerJob(job)
        job.start()
        return job

    def trainingRequest(self, p: DTCSegmentationParameterNode, resumeRunDir: Path | None = None,
                        initInfo: dict | None = None, threads: int | None = None) -> TrainingRequest:
        """The fine-tune request from the panel settings; DTCError when there is nothing to train on.

        ``initInfo``: ``dtc info`` of the starting model when already known (else read now, blocking).
        ``threads``: ``dtc train --threads`` (the panel: :func:`.cores.train_threads`); None: every core.
        """
        folder = dataset.DatasetFolder(p.datasetFolder)
        folder.require_labeled()
        modelsFolder = self.chosenFolder(p.modelsFolder)
        if modelsFolder is None:
            raise DTCError("no models folder is set; choose one in Model > Models folder")
        initFrom = None
        config: dict = {}
        info: dict | None = None
        dims: int | None = None  # from scratch: planned from the scans below
        if p.startFrom == "current model" and resumeRunDir is None:
            initFrom = self.modelFile(p.modelPath)
            if not initFrom.exists():
                raise DTCError(f"model {initFrom} does not exist; pick another model or start from scratch")
            info = initInfo or self.modelInfo(str(initFrom))
            config = json.loads(json.dumps(info["config"]))  # same network and inference settings
        if resumeRunDir is None:  # a resume keeps its run's schedule
            _fitSchedule(config, p.iterations)
        config.setdefault("train", {}).update({
            "iterations": p.iterations, "lr": p.learningRate, "labeled_batch": p.labeledBatch,
            "unlabeled_batch": p.unlabeledBatch, "device": p.device,
            "time_limit_minutes": float(p.timeLimitMinutes) if p.timeLimitMinutes > 0 else None,
            "schedule_fitted": False, "nnunet_augment": bool(p.nnunetAugment),
        })
        if p.augment != AUGMENT_FROM_MODEL:
            config["train"]["augment"] = p.augment
        note = ""
        if initFrom is None and resumeRunDir is None:
            # From scratch the panel's patch applies (fitted to the scans); a fine-tune keeps the model's patch
            # and grid (its plan), which its weights were trained for; a resume keeps its run's settings.
            dims, pools, patch, note = self.scratchNetwork(folder.manifest_path, p)
            config["train"]["patch"] = list(patch)
            config.setdefault("network", {}).update({"pools": list(pools), "dims": dims})
        config.setdefault("recipe", {}).update({"beta": p.beta, "k": p.k, "consistency_rampup": p.consistencyRampup})
        if resumeRunDir is None:  # the copy-paste teacher recipe for the model's classes, not the one it trained with
            config["recipe"].update({"cp_stage1_fraction": None, "cp_lr_in_stage2": None})
        labelsFile = Path(p.datasetFolder) / DATASET_LABELS
        table = json.loads(labelsFile.read_text(encoding="utf-8"))["labels"] if labelsFile.exists() else None
        if initFrom is None and resumeRunDir is None and table:
            config["network"]["num_classes"] = len(table)  # from scratch the dataset's classes make the network
        if resumeRunDir is None:  # a resume keeps its run's mode; its reason: the panel's line under Mode
            network = self.modelKind(info) if initFrom is not None else (len(table) if table else None, dims)
            config["recipe"]["mode"] = self.modeChoice(p, folder, network=network)[0]
        if resumeRunDir is not None:
            return TrainingRequest(folder.manifest_path, resumeRunDir, config, None, resume=True, labels=table,
                                   threads=threads)
        return TrainingRequest(folder.manifest_path, models.new_run_dir(modelsFolder), config, initFrom, labels=table,
                               note=note, threads=threads)

    def modeChoice(self, p: DTCSegmentationParameterNode, folder: dataset.DatasetFolder | None = None,
                   modelInfo: dict | None = None, network: tuple[int | None, int | None] | None = None
                   ) -> tuple[str, str]:
        """(mode, one-line reason) of the next fine-tune: ``p.mode``, or with ``auto`` the mode the studies show wins
        for its length (Train for, else the iterations) and its network's foreground classes and dims on the
        dataset's labeled and unlabeled scans (none when the dataset folder is unset or empty); the reason is "" for a
        mode the user chose.

        ``network``: (classes, dims) when the caller knows them (:meth:`trainingRequest`); else a fine-tune's are its
        model's, from ``modelInfo`` (``dtc info`` of the starting model, as the panel has read it in the background;
        None: not read yet), and a new network's are the dataset's label table's classes and the dims
        :meth:`scratchNetwork` plans from the scans, read only when the pick depends on them. Unknown (None): the
        rules for any model decide (mode_choice.py)."""
        if p.mode != AUTO_MODE:
            return p.mode, ""
        minutes = mode_choice.run_minutes(p.timeLimitMinutes, p.iterations)
        chosen = self.chosenFolder(p.datasetFolder)
        if folder is None and chosen is not None:
            folder = dataset.DatasetFolder(chosen)
        scans = folder.load() if folder is not None and folder.manifest_path.exists() else None  # JSON, no files
        labeled = len(scans.labeled) if scans is not None else None  # None: no dataset yet, not known
        if network is not None:
            classes, dims = network
        elif p.startFrom == "current model":
            classes, dims = self.modelKind(modelInfo)
        else:
            classes, dims = self._scratchKind(folder, minutes, labeled)
        unlabeled = len(scans.unlabeled) if scans is not None else 0
        mode, reason = mode_choice.pick_mode(minutes, unlabeled, classes=classes, dims=dims, labeled=labeled)
        return mode, f"auto: {reason}"

    @staticmethod
    def modelKind(info: dict | None) -> tuple[int | None, int | None]:
        """(foreground classes, dims) of a model from its ``dtc info`` record (its config; a key the config leaves
        out has DTCConfig's default); (None, None) when not known (not read yet, or unreadable)."""
        config = (info or {}).get("config")
        if not isinstance(config, dict):
            return None, None
        network = config.get("network") or {}
        return (int(network.get("num_classes", _RECIPE.network.num_classes)),
                int(network.get("dims", _RECIPE.network.dims)))

    def _scratchKind(self, folder: dataset.DatasetFolder | None, minutes: float,
                     labeled: int | None) -> tuple[int | None, int | None]:
        """(classes, dims) of a network trained from scratch on ``folder`` and its ``labeled`` labeled scans: the
        classes of its label table (None before the first labeled example), the dims :meth:`scratchNetwork` would
        plan from the scans' headers, read only when the pick for a run of ``minutes`` depends on them (else None),
        and once per version of the dataset's manifest (the line is recomputed on every change of the panel's
        settings)."""
        if folder is None:
            return None, None
        table = folder.label_table()
        classes = len(table) if table else None
        if not mode_choice.needs_dims(minutes, classes=classes, labeled=labeled) or not folder.manifest_path.exists():
            return classes, None
        if not labeled:  # no training scans yet: nothing to plan from
            return classes, None
        stat = folder.manifest_path.stat()  # the manifest is replaced (temp file, rename) when scans are added
        key = (str(folder.manifest_path), stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._plannedDims is None or self._plannedDims[0] != key:  # the headers once per manifest version
            self._plannedDims = (key, self.scratchDims(manifest_geometry(folder.manifest_path)[0]))
        return classes, self._plannedDims[1]

    @staticmethod
    def scratchDims(spacings: list) -> int:
        """The dims of a network trained from scratch on scans of ``spacings`` (x, y, z mm each): 2 when their
        median slice spacing is more than 3x the pixels' (:func:`DTCCore.planning.dims.auto_dims`), else 3."""
        return auto_dims(median_spacing(spacings))

    @staticmethod
    def scratchNetwork(manifestPath: Path, p: DTCSegmentationParameterNode
                       ) -> tuple[int, tuple[int, int, int], tuple[int, int, int], str]:
        """(dims, pools, patch, note) for a network trained from scratch, planned from the training scans'
        median spacing as ``dtc train --dims auto --pools auto`` plans it: a 2-D network (in-plane
        convolutions, slice by slice) when the slices are more than 3x farther apart than the pixels, at most
        ``SLICES_PER_CROP_2D`` slices a crop; else the paper's 3-D network, a thick-slice axis pooled fewer times,
        last (nnU-Net's rule). Patch: the panel's, each axis cut to the largest scan rounded up to the axis's
        size multiple; the note says what was planned. DTCError, before anything starts, when the panel's patch
        does not fit the network."""
        spacings, shapes = manifest_geometry(manifestPath)  # one read of the headers
        spacing = median_spacing(spacings)
        dims = DTCSegmentationLogic.scratchDims(spacings)  # the same dims modeChoice picks the mode for
        pools = auto_pools(spacing)
        requested = (p.patchX, p.patchY, p.patchZ)
        if dims == 2:
            pools = plane_pools(pools)
            requested = (p.patchX, p.patchY, min(p.patchZ, SLICES_PER_CROP_2D))
        check_patch(requested, pools, "planned from the training scans' median spacing "
                    + " x ".join(f"{v:g}" for v in spacing) + " mm; change Fine-tune > Patch size")
        largest = np.asarray(shapes).max(axis=0)
        patch = fit_patch(requested, pools, largest)
        if dims == 2:
            note = (f"2-D network (slices {spacing[2]:g} mm apart, pixels {max(spacing[:2]):g} mm), "
                    f"{patch[2]} slices a crop")
            return dims, pools, patch, note
        note = "network halves x/y/z " + "/".join(str(v) for v in pools) + " times"
        if patch != requested:
            note += (", patch " + " x ".join(str(v) for v in patch) + " (the largest scan is "
                     + " x ".join(str(int(v)) for v in largest) + " voxels)")
        return dims, pools, patch, note

    # ---- next case ----
    def startRanking(self, datasetFolder, modelPath: str = "", device: str = "auto",
                     threads: int | None = None) -> RankJob:
        """``dtc rank`` over the dataset's unlabeled volumes, in the background (``threads``: see startSegment)."""
        m = dataset.DatasetFolder(datasetFolder).load()
        if not m.unlabeled:
            raise DTCError("the dataset has no unlabeled volumes; add some in Training data first")
        job = RankJob(Path(tempfile.mkdtemp(prefix="DTCRank-")), list(m.unlabeled), modelPath or "", device,
                      runner=self.spare.runner(self.modelFile(modelPath)), threads=threads)
        self.registerJob(job)
        job.start()
        return job

