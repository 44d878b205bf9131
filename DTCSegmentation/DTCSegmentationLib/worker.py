"""A background thread for in-process work (inference), polled from the UI thread.

MRML is not thread-safe: the caller copies what it needs out of the scene first (arrays, geometry),
the thread only computes, and the results are written back to the scene by the caller after
:meth:`BackgroundTask.poll` reports "done". Cancel sets a flag; the progress callback handed to the
work function raises ``DTCCore.errors.CancelledError`` at the next report (between windows).

Usage::

    task = BackgroundTask(lambda progress: predict_volume(..., progress=progress))
    task.start()
    # from a qt.QTimer: state, value = task.poll()   ("running", (done, total)) / ("done", result) / ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from DTCCore.errors import CancelledError


class BackgroundTask:
    def __init__(self, work: Callable[[Callable[[int, int], None]], Any]) -> None:
        self._work = work
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.progress: tuple[int, int] = (0, 0)
        self.result: Any = None
        self.error: BaseException | None = None
        self.started_at = 0.0

    def _report(self, done: int, total: int) -> None:
        self.progress = (int(done), int(total))
        if self._cancel.is_set():
            raise CancelledError("cancelled by the user")

    def _run(self) -> None:
        try:
            self.result = self._work(self._report)
        except BaseException as exc:  # reported to the UI thread, never lost in the console
            self.error = exc

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="DTCSegmentation worker", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    def poll(self) -> tuple[str, Any]:
        """("running", (done, total)), ("done", result), ("cancelled", None) or ("failed", exception)."""
        if self._thread is None or self._thread.is_alive():
            return "running", self.progress
        if isinstance(self.error, CancelledError) and self._cancel.is_set():
            return "cancelled", None
        if self.error is not None:
            return "failed", self.error
        return "done", self.result

    def wait(self, timeout: float | None = None) -> tuple[str, Any]:
        """Block until finished (tests and the self-test only)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.poll()
