"""Slicer's own ``parameterNodeWrapper`` at each supported tag, vendored unmodified (``vendor/README.md``).

The package changed at every supported tag (``git diff v5.6.2 v5.8.1 -- Base/Python/slicer/parameterNodeWrapper``
and so on), and the changes matter to the module: before v5.10.0 ``connectGui`` returns None, so
``disconnectGui`` of that tag disconnects nothing (Slicer issue #7547, PR #8667); v5.12.3 also removes the
parameter node observer on ``disconnectGui``. :func:`load` imports one tag's copy as
``slicer.parameterNodeWrapper`` (the name it has in Slicer, so its relative imports and logger names are
Slicer's), and :func:`module_under` imports a scripted module afresh on it, so the module's
``@parameterNodeWrapper`` class is built by that tag's code. The pytest fixtures ``slicer_tag`` and
``dtc_module_at`` run a test under each tag::

    from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401

    @pytest.mark.parametrize("slicer_tag", ["v5.8.1", "v5.10.0"], indirect=True)  # default: every tag
    def test_x(dtc_module_at): ...
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import slicer

from . import api_versions
from .module_import import exec_module_file
from .paths import MODULE_FILE

VENDOR = Path(__file__).resolve().parent / "vendor" / "parameterNodeWrapper"
PACKAGE = "slicer.parameterNodeWrapper"
WRAPPER_TAGS = api_versions.SUPPORTED_TAGS  # one vendored copy per tag: the package differs at each of them
DEFAULT_TAG = "v5.8.1"  # what install() loads: a pre-5.10 wrapper, where reconnecting resets choices (#7547)
MODULE_NAMES = ("DTCSegmentation", "DTCSegmentationLib")  # the scripted module and its library: built on the wrapper

_state = {"tag": None}


def slicer_version(tag: str) -> tuple[int, int]:
    """(major, minor) of a tag, as ``slicer.app.majorVersion`` / ``minorVersion`` report it: "v5.10.0" -> (5, 10)."""
    major, minor = tag.lstrip("v").split(".")[:2]
    return int(major), int(minor)


def current_tag() -> str | None:
    """The tag whose wrapper is ``slicer.parameterNodeWrapper`` now (None before :func:`load`)."""
    return _state["tag"]


def _owned(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def _drop(roots: tuple[str, ...]) -> dict[str, types.ModuleType]:
    dropped = {name: module for name, module in sys.modules.items() if _owned(name, roots)}
    for name in dropped:
        del sys.modules[name]
    return dropped


def _set_app_version(tag: str) -> None:
    application = getattr(slicer, "app", None)
    if application is not None:
        application.majorVersion, application.minorVersion = slicer_version(tag)


def load(tag: str) -> types.ModuleType:
    """Import ``vendor/parameterNodeWrapper/<tag>/`` as ``slicer.parameterNodeWrapper`` (replacing the one loaded)
    and make ``slicer.app`` report that Slicer version. Returns the package."""
    folder = VENDOR / tag
    if not (folder / "__init__.py").is_file():
        vendored = sorted(p.name for p in VENDOR.iterdir() if p.is_dir())
        raise ValueError(f"no vendored parameterNodeWrapper for {tag}; vendored: {vendored}")
    _drop((PACKAGE,))
    spec = importlib.util.spec_from_file_location(PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    slicer.parameterNodeWrapper = package
    _state["tag"] = tag
    _set_app_version(tag)
    return package


@contextlib.contextmanager
def module_under(tag: str, module_file: str | Path) -> Iterator[types.ModuleType]:
    """The scripted module ``module_file`` imported afresh on Slicer ``tag``'s wrapper. On exit the modules
    imported before (the wrapper, the scripted module and its library) are put back as they were, so other
    tests keep the objects they imported. The stand-ins must be installed (:func:`.scene.install`; importing
    ``slicer_harness.fixtures`` does it)."""
    if not getattr(slicer, "_dtc_harness_installed", False):
        raise RuntimeError("the harness is not installed; import slicer_harness.fixtures (or call "
                           "slicer_harness.scene.install()) before importing a module under a tag")
    roots = (PACKAGE, *MODULE_NAMES)
    saved = _drop(roots)
    saved_tag, saved_attribute = current_tag(), getattr(slicer, "parameterNodeWrapper", None)
    try:
        load(tag)
        yield exec_module_file(module_file)
    finally:
        _drop(roots)
        sys.modules.update(saved)
        slicer.parameterNodeWrapper = saved_attribute
        _state["tag"] = saved_tag
        if saved_tag is not None:
            _set_app_version(saved_tag)


@pytest.fixture(params=WRAPPER_TAGS)
def slicer_tag(request) -> str:
    """A supported Slicer tag (every one by default; narrow it with ``parametrize(..., indirect=True)``)."""
    return request.param


@pytest.fixture
def dtc_module_at(slicer_tag):
    """DTCSegmentation.py imported on ``slicer_tag``'s own parameterNodeWrapper (:func:`module_under`)."""
    with module_under(slicer_tag, MODULE_FILE) as module:
        yield module
