"""The fine-tune job: ``dtc train MANIFEST -o RUN_DIR --config ... --jsonl --cancel-file RUN_DIR/cancel``.

Usage::

    job = TrainingJob(TrainingRequest(manifest, run_dir, {"train": {"iterations": 500}}))
    job.start()
    while job.state == JobState.RUNNING:  # DTCCore.protocol.JobState; in Slicer: from a qt.QTimer
        for event in job.poll():  # the trainer's events, then job-done / job-cancelled / job-failed
            print(event)

Cancel writes the run's cancel file: the trainer saves a checkpoint and exits 3 (``job-cancelled`` with
``checkpoint``); resuming (``TrainingRequest(..., resume=True)``) continues from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from DTCCore.config import atomic_write_text
from DTCCore.protocol import EVENT_KEY, TRAIN, Event, JobEvent

from .enginejob import EngineJob, ProcessRunner, threads_args


@dataclass
class TrainingRequest:
    """What to train: the manifest, the run folder to create (or resume), a partial DTCConfig dict."""

    manifest: Path
    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    init_from: Path | None = None  # fine-tune from this model's weights (None: from scratch)
    resume: bool = False  # continue from the newest checkpoint in run_dir
    labels: list[dict[str, Any]] | None = None  # label table for the new model (names from the training data)
    note: str = ""  # what the panel planned (network pooling, patch fitted to the scans), shown on start
    threads: int | None = None  # dtc train --threads (the panel's share of the cores, ..cores); None: every core

    def args(self) -> list[str]:
        args = [TRAIN, str(self.manifest), "-o", str(self.run_dir), "--config", str(self.config_path)]
        if self.init_from is not None and not self.resume:
            args += ["--init-from", str(self.init_from)]
        if self.resume:
            args.append("--resume")
        return args + threads_args(self.threads)

    @property
    def config_path(self) -> Path:
        return Path(self.run_dir) / "requested_config.json"


class TrainingJob(EngineJob):
    """A ``dtc train`` process; ``model`` (done) and ``checkpoint`` (cancelled, resumable) when known."""

    kind = "train"

    def __init__(self, request: TrainingRequest, runner: ProcessRunner | None = None) -> None:
        super().__init__(request.args(), Path(request.run_dir), runner)
        self.request = request
        self.threads = request.threads
        self.model: Path | None = None
        self.checkpoint: Path | None = None
        self._first: tuple[int, float] | None = None  # (iteration, elapsed s) of the first progress event

    def start(self) -> None:
        Path(self.request.run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.request.config_path, json.dumps(self.request.config, indent=2) + "\n")
        super().start()

    @property
    def step_s(self) -> float | None:
        """Seconds per iteration between the first and the latest progress events (None before two)."""
        last = self.progress
        if self._first is None or last is None or last["iteration"] <= self._first[0]:
            return None
        return (last["elapsed_s"] - self._first[1]) / (last["iteration"] - self._first[0])

    def on_event(self, event: dict[str, Any]) -> None:
        super().on_event(event)
        kind = event.get(EVENT_KEY)
        if kind == Event.PROGRESS and self._first is None:
            self._first = (event["iteration"], event["elapsed_s"])
        if kind == Event.DONE:
            self.model = Path(event["model"])
        elif kind in (Event.CANCELLED, Event.CHECKPOINT):
            self.checkpoint = Path(event.get("checkpoint") or event.get("path"))

    def done_event(self) -> dict[str, Any]:
        if self.model is None:
            raise RuntimeError("the trainer ended without writing model.pt")
        if self.request.labels:
            from DTCCore.data.labels import write_sidecar

            write_sidecar(self.model, self.request.labels)
        return {EVENT_KEY: JobEvent.DONE, "model": str(self.model)}

    def _finish(self, code: int) -> dict[str, Any]:
        event = super()._finish(code)
        if event[EVENT_KEY] == JobEvent.CANCELLED:
            event["checkpoint"] = str(self.checkpoint) if self.checkpoint else None
        return event
