"""The Next-case ranking job: ``dtc rank`` over the dataset's unlabeled volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from DTCCore.protocol import EVENT_KEY, RANK, Event

from .enginejob import EngineJob, ProcessRunner, threads_args


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
