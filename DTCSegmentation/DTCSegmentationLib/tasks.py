"""Segment, Next-case ranking and model information as engine jobs (``dtc segment / rank / info``).

Files are exchanged in a temporary work folder: the logic writes the scan (cropped to the ROI) there,
``dtc segment`` writes its results next to it, and :meth:`SegmentJob.done_event` reads them back onto
the full grid of the scan (outside the ROI: label 0, level set +1 (``DTCCore.protocol.OUTSIDE_LEVELSET``),
disagreement 0, as the engine does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from DTCCore.protocol import EVENT_KEY, INFO, OUTPUT_KINDS, OUTSIDE_LEVELSET, RANK, SEGMENT, Event, JobEvent

from .jobs import EngineJob, ProcessRunner

SEG, LEVELSET, DISAGREEMENT = OUTPUT_KINDS  # keys of the case-done event's "files"


def threads_args(threads: int | None) -> list[str]:
    """``--threads N`` for a job given its share of the cores (:mod:`.cores`); nothing for the default."""
    return [] if threads is None else ["--threads", str(int(threads))]


@dataclass
class SegmentResult:
    """Engine results on the full (X, Y, Z) grid of the scan."""

    label: np.ndarray  # uint8, 0 background, 1..C classes
    levelsets: list  # one float32 array per class, negative inside
    disagreement: np.ndarray  # float32 in [0, 1]
    device: str = ""
    seconds: float = 0.0


class SegmentJob(EngineJob):
    kind = "segment"
    temporary = True  # the scan copy and the result files go once the results are read

    def __init__(self, work_dir: Path, image_path: Path, shape: tuple, region: tuple | None, model_path: str = "",
                 device: str = "auto", overlap: float = 0.5, largest_component: bool = False,
                 runner: ProcessRunner | None = None, mirror: bool | None = None, threads: int | None = None) -> None:
        args = [SEGMENT, str(image_path), "-o", str(Path(work_dir) / "out"), "--device", device,
                "--overlap", str(overlap), "--overwrite", *threads_args(threads)]
        if model_path:
            args += ["--model", model_path]
        if largest_component:
            args.append("--largest-component")
        if mirror is not None:  # None: the model's own setting
            args.append("--mirror" if mirror else "--no-mirror")
        super().__init__(args, work_dir, runner)
        self.shape, self.region = tuple(shape), region
        self.threads = threads
        self.files: dict[str, str] = {}
        self.device = ""
        self.extent: dict[str, Any] | None = None  # the engine's "extent-warning": scan_mm, model_mm
        self.result: SegmentResult | None = None

    def on_event(self, event: dict[str, Any]) -> None:
        super().on_event(event)
        if event[EVENT_KEY] == Event.CASE_DONE:
            self.files = dict(event["files"])
        elif event[EVENT_KEY] == Event.START:
            self.device = str(event.get("device", ""))
        elif event[EVENT_KEY] == Event.EXTENT_WARNING:
            self.extent = event

    def _full(self, array: np.ndarray, fill: float, dtype) -> np.ndarray:
        out = np.full(self.shape, fill, dtype)
        out[self.region or tuple(slice(None) for _ in self.shape)] = array
        return out

    def done_event(self) -> dict[str, Any]:
        from DTCCore.io import read_image

        if SEG not in self.files:
            raise RuntimeError("the engine finished without writing a segmentation")
        label = self._full(read_image(self.files[SEG])[0], 0, np.uint8)
        keys = sorted((k for k in self.files if k.startswith(LEVELSET)), key=lambda k: (len(k), k))
        levelsets = [self._full(read_image(self.files[k])[0], OUTSIDE_LEVELSET, np.float32) for k in keys]
        disagreement = self._full(read_image(self.files[DISAGREEMENT])[0], 0.0, np.float32)
        self.result = SegmentResult(label, levelsets, disagreement, self.device, self.elapsed_s)
        return {EVENT_KEY: JobEvent.DONE}


class RankJob(EngineJob):
    """``dtc rank``: ``ranking`` = [(path, mean disagreement)] highest first."""

    kind = "rank"
    temporary = True

    def __init__(self, work_dir: Path, images: list, model_path: str = "", device: str = "auto",
                 runner: ProcessRunner | None = None, threads: int | None = None) -> None:
        args = [RANK, *[str(p) for p in images], "--device", device] + (["--model", model_path] if model_path else [])
        super().__init__(args + threads_args(threads), work_dir, runner)
        self.threads = threads
        self.ranking: list[tuple[str, float]] = []

    def on_event(self, event: dict[str, Any]) -> None:
        super().on_event(event)
        if event[EVENT_KEY] == Event.RANKED:
            self.ranking = [(str(p), float(s)) for p, s in event["ranking"]]


class ModelInfoJob(EngineJob):
    """``dtc info``: ``models`` {path: description dict or {"error": ...}} and ``device`` (what the choice gives).

    ``dtc info`` always prints JSON lines and takes neither ``--jsonl`` nor ``--cancel-file``
    (:func:`DTCCore.protocol.driver_options` leaves them out)."""

    kind = "info"
    temporary = True

    def __init__(self, work_dir: Path, models: list, device: str | None = None,
                 runner: ProcessRunner | None = None, threads: int | None = None) -> None:
        args = [INFO, *[str(p) for p in models]] + (["--device", device] if device else [])
        super().__init__(args + threads_args(threads), work_dir, runner)
        self.threads = threads
        self.models: dict[str, dict] = {}
        self.device: dict[str, Any] = {}

    def on_event(self, event: dict[str, Any]) -> None:
        super().on_event(event)
        if event[EVENT_KEY] == Event.MODEL:
            self.models[event["path"]] = event
        elif event[EVENT_KEY] == Event.MODEL_ERROR:
            self.models[event["path"]] = {"error": event["error"]}
        elif event[EVENT_KEY] == Event.DEVICE:
            self.device = event
