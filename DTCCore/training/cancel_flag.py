"""The cancel flag of a training run: SIGINT / SIGTERM (in the main thread) or the caller's cancel callback, checked
once per iteration by the trainer (training/trainer.py), which then saves a checkpoint and stops."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable


class CancelFlag:
    """Set by SIGINT/SIGTERM (main thread only) or by a cancel callback."""

    def __init__(self, cancel: Callable[[], bool] | None) -> None:
        self.cancel = cancel
        self.signalled = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "CancelFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def is_set(self) -> bool:
        return self.signalled or bool(self.cancel and self.cancel())
