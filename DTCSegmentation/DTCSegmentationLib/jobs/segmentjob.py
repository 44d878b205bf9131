"""The Segment job: ``dtc segment`` on a scan written to a temporary work folder.

The logic writes the whole scan to the work folder; a region of interest goes to the engine as
``dtc segment --roi``, which crops, predicts and pastes the box back onto the scan's grid (outside it:
label 0, level set ``DTCCore.protocol.OUTSIDE_LEVELSET``, disagreement 0), so the crop has one owner
(``DTCCore.inference.predict.predict_volume``). The engine's ``start`` event carries the model's label
table (``labels``), which names the result's segments; :meth:`SegmentJob.done_event` reads the results back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from DTCCore.protocol import EVENT_KEY, OUTPUT_KINDS, SEGMENT, Event, JobEvent

from .enginejob import EngineJob, ProcessRunner, threads_args

SEG, LEVELSET, DISAGREEMENT = OUTPUT_KINDS  # keys of the case-done event's "files"


@dataclass
class SegmentResult:
    """Engine results on the full (X, Y, Z) grid of the scan."""

    label: np.ndarray  # uint8, 0 background, 1..C classes
    levelsets: list  # float32 arrays, negative inside: the first class's (the job reads no other)
    disagreement: np.ndarray  # float32 in [0, 1]
    device: str = ""
    seconds: float = 0.0


class SegmentJob(EngineJob):
    kind = "segment"
    temporary = True  # the scan copy and the result files go once the results are read

    def __init__(self, work_dir: Path, image_path: Path, region: tuple | None = None, model_path: str = "",
                 device: str = "auto", overlap: float = 0.5, largest_component: bool = False,
                 runner: ProcessRunner | None = None, tta: bool | None = None, threads: int | None = None) -> None:
        """``region``: (x, y, z) voxel slices of the scan to segment (``dtc segment --roi``), None: all of it."""
        args = [SEGMENT, str(image_path), "-o", str(Path(work_dir) / "out"), "--device", device,
                "--overlap", str(overlap), "--overwrite", *threads_args(threads)]
        if region is not None:
            args += ["--roi", *(str(s.start) for s in region), *(str(s.stop) for s in region)]
        if model_path:
            args += ["--model", model_path]
        if largest_component:
            args.append("--largest-component")
        if tta is not None:  # test-time augmentation; None: the model's own setting
            args.append("--tta" if tta else "--no-tta")
        super().__init__(args, work_dir, runner)
        self.region = region
        self.threads = threads
        self.files: dict[str, str] = {}
        self.device = ""
        self.extent: dict[str, Any] | None = None  # the engine's "extent-warning": scan_mm, model_mm
        self.labels: list[dict[str, Any]] | None = None  # the model's label table (the engine's "start" event)
        self.result: SegmentResult | None = None

    def on_event(self, event: dict[str, Any]) -> None:
        super().on_event(event)
        if event[EVENT_KEY] == Event.CASE_DONE:
            self.files = dict(event["files"])
        elif event[EVENT_KEY] == Event.START:
            self.device = str(event.get("device", ""))
            self.labels = event.get("labels")
        elif event[EVENT_KEY] == Event.EXTENT_WARNING:
            self.extent = event

    def done_event(self) -> dict[str, Any]:
        from DTCCore.data.images import read_image

        if SEG not in self.files:
            raise RuntimeError("the engine finished without writing a segmentation")
        if not self.labels:
            raise RuntimeError("the engine sent no label table for the model; the module and its DTCCore are "
                               "from different versions: reinstall the extension")
        label = read_image(self.files[SEG])[0].astype(np.uint8, copy=False)
        # the first class's level set only ("levelset", or "levelset_1" of a multi-class model): the panel shows
        # that one, and each other class's would be one more full-size read on Slicer's GUI thread
        first = min((k for k in self.files if k.startswith(LEVELSET)), key=lambda k: (len(k), k), default=None)
        if first is None:
            raise RuntimeError("the engine finished without writing a level set")
        levelsets = [read_image(self.files[first])[0].astype(np.float32, copy=False)]
        disagreement = read_image(self.files[DISAGREEMENT])[0].astype(np.float32, copy=False)
        self.result = SegmentResult(label, levelsets, disagreement, self.device, self.elapsed_s)
        return {EVENT_KEY: JobEvent.DONE}
