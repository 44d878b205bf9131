"""The model-information job: ``dtc info`` on model files (and what a device choice gives)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from DTCCore.protocol import EVENT_KEY, INFO, Event

from .enginejob import EngineJob, ProcessRunner, threads_args


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
