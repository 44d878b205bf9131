"""Import a scripted module file as Slicer's module factory does, on the stand-ins already installed.

:func:`exec_module_file` is the import itself; :func:`.scene.import_module_file` installs the stand-ins first, and
:func:`.wrapper_versions.module_under` calls it after loading a tag's wrapper. A leaf of the harness (it imports
none of its files), so both can use it without an import cycle.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import slicer


def exec_module_file(path: str | Path, name: str | None = None) -> types.ModuleType:
    """Import ``path`` (e.g. DTCSegmentation/DTCSegmentation.py) as module ``name`` (default: its stem) with its
    folder and the repository on sys.path; the module already imported under that name when there is one.
    Needs ``slicer.modules`` (:func:`.scene.install` sets it)."""
    path = Path(path).resolve()
    name = name or path.stem
    repo = str(path.parent.parent)  # DTCCore lives next to DTCSegmentation/ in the source tree
    if repo not in sys.path:
        sys.path.append(repo)
    # as Slicer's module factory: slicer.modules.<name> knows the module file (slicer.util.modulePath reads it)
    setattr(slicer.modules, name.lower(), types.SimpleNamespace(path=str(path), name=name))
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
