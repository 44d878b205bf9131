"""Stand-in for ``slicer.app`` (qSlicerApplication), which ``slicer-core`` does not provide.

Only what ``slicer.util`` and our module touch: testing mode (message boxes are skipped and their
``testingReturnValue`` returned, as in Slicer's own self-tests), no main window, and no-op cursor and
event-processing calls. ``connect`` records signal connections so tests can fire ``startupCompleted()``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable


class FakeApplication:
    applicationName = "Slicer (headless harness)"
    majorVersion, minorVersion = 5, 13  # slicer-core 5.13.31053.0

    def __init__(self) -> None:
        self.connections: dict[str, list[Callable]] = {}
        self.temporaryPath = tempfile.gettempdir()
        self.commandOptions = type("CommandOptions", (), {"noMainWindow": True})()

    def testingEnabled(self) -> bool:
        return True

    def processEvents(self, *args) -> None:
        pass

    def setOverrideCursor(self, *args) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def layoutManager(self):
        return None

    def connect(self, signal: str, slot: Callable) -> None:
        self.connections.setdefault(signal, []).append(slot)

    def emit(self, signal: str) -> None:
        for slot in self.connections.get(signal, []):
            slot()
