"""Import-only stand-ins for PythonQt's ``qt`` and ``ctk`` modules.

The module file imports ``qt``/``ctk`` at top level (as every Slicer scripted module does) but the
logic under test never needs a widget. Any attribute is a placeholder class that can be instantiated
and called, so ``qt.QTimer()`` or ``qt.Qt.WaitCursor`` work at import time; nothing is drawn and no
event loop runs. The ``.ui`` file is checked separately with PySide6's real ``QUiLoader``.
"""

from __future__ import annotations

import types


class _Placeholder:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return _Placeholder()

    def __getattr__(self, name: str):
        return _Placeholder()


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (_Placeholder,), {})
        setattr(self, name, cls)
        return cls


def make(name: str) -> types.ModuleType:
    """Return an import-only stand-in module called ``name`` (``qt`` or ``ctk``)."""
    module = _StubModule(name)
    module.__doc__ = f"Import-only stand-in for PythonQt's {name} (Testing/slicer_harness/qt_stub.py)"
    return module
