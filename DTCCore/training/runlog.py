"""The run folder's progress log: ``log.jsonl`` events, their listeners, and ``curves.png``.

Every event is one JSON object per line, flushed at once, so a crash loses nothing written before it
and a process reading the file (the Slicer module) sees progress as it happens. The events and their
fields (the same records ``dtc train --jsonl`` prints) are listed in :mod:`DTCCore.protocol`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import DTCError
from ..protocol import EVENT_KEY, Event

CURVES_EVERY_S = 30.0  # redraw curves.png at most this often (a redraw costs ~0.3 s of CPU; our measurement)

Listener = Callable[[dict[str, Any]], None]


class RunLog:
    """Append events to ``log.jsonl`` (rank 0 only) and pass them to a listener."""

    def __init__(self, run_dir: Path, listener: Listener | None = None, write: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.listener = listener
        self.write = write
        self.records: list[dict[str, Any]] = []
        self._last_curves = 0.0
        try:
            self._file = open(self.run_dir / "log.jsonl", "a", encoding="utf-8") if write else None
        except OSError as exc:
            raise DTCError(f"cannot write {self.run_dir / 'log.jsonl'} ({exc.strerror}); "
                           "choose a writable run folder") from None
        if write:
            self.records = [r for r in read_log(self.run_dir) if r.get(EVENT_KEY) == Event.PROGRESS]

    def emit(self, event: str, **fields: Any) -> None:
        record = {EVENT_KEY: event, **fields}
        if self._file is not None:
            try:
                self._file.write(json.dumps(record) + "\n")
                self._file.flush()
            except OSError as exc:
                self._file = None  # a full disk: stop logging, keep the error for the caller
                raise DTCError(f"cannot write {self.run_dir / 'log.jsonl'} ({exc.strerror}); free disk space") from None
        if event == Event.PROGRESS:
            self.records.append(record)
            if self.write and time.monotonic() - self._last_curves > CURVES_EVERY_S:
                self.save_curves()
        if self.listener is not None:
            self.listener(record)

    def message(self, text: str) -> None:
        self.emit(Event.MESSAGE, text=text)

    def save_curves(self) -> None:
        """Redraw ``curves.png`` from the progress so far (never fatal: a plot is not worth a run)."""
        self._last_curves = time.monotonic()
        if not self.write or not self.records:
            return
        try:
            from ..evaluation.preview import save_curves

            save_curves(self.run_dir / "curves.png", self.records)
        except Exception as exc:  # noqa: BLE001 - reported, training goes on
            self.message(f"could not draw curves.png: {exc}")

    def close(self) -> None:
        self.save_curves()
        if self._file is not None:
            self._file.close()
            self._file = None


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete events of ``run_dir/log.jsonl`` (a torn last line is ignored)."""
    path = Path(run_dir) / "log.jsonl"
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
