"""Stand-in for ``slicer.app`` (qSlicerApplication), which ``slicer-core`` does not provide.

Strict: it has only attributes that Slicer's ``qSlicerApplication`` exposes to Python at every
supported tag (``api_versions.widget_api()``, checked by ``Testing/test_slicer_harness.py``); anything else raises
AttributeError. Testing mode is on (message boxes are skipped and their ``testingReturnValue``
returned, as in Slicer's self-tests); there is no main window. ``connect`` accepts only signals the
application declares; :func:`fire` emits one (tests use it for ``startupCompleted()``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from . import pythonqt


class _CommandOptions:
    noMainWindow = True
    testingEnabled = True


class FakeApplication:
    applicationName = "Slicer"
    majorVersion, minorVersion = 5, 8  # as the vendored parameterNodeWrapper (v5.8.1, vendor/README.md)

    def __init__(self) -> None:
        self._connections: dict[str, list[Callable]] = {}
        self.temporaryPath = tempfile.gettempdir()
        self._applicationLogic = None

    def testingEnabled(self) -> bool:
        return True

    def commandOptions(self):
        return _CommandOptions()

    def processEvents(self, *args) -> None:
        pythonqt.application().processEvents()

    def setOverrideCursor(self, *args) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def layoutManager(self):
        return None

    def topLevelWidgets(self) -> list:
        return []

    def applicationLogic(self):
        return self._applicationLogic

    def coreIOManager(self):
        from .io_manager import core_io_manager  # slicer.util.loadVolume / loadNodeFromFile read files through it

        return core_io_manager()

    def connect(self, signal: str, slot: Callable) -> bool:
        signature = pythonqt.normalize(signal)
        declared = {s for entry in pythonqt._api_chain("qSlicerApplication") for s in entry["signals"]}
        if signature not in declared:
            raise AttributeError(f"qSlicerApplication has no signal {signature}")
        self._connections.setdefault(signature, []).append(slot)
        return True


def fire(application: FakeApplication, signal: str) -> None:
    """Emit ``signal`` of the application (what Slicer does at that moment)."""
    for slot in application._connections.get(pythonqt.normalize(signal), []):
        slot()
