"""The harness's per-tag parameterNodeWrapper (Testing/slicer_harness/wrapper_versions.py).

Each tag's copy is the one the module runs on (its own behaviour, not the default one), and a test that
imports the module on another tag leaves the modules other tests imported as they were.
"""

from __future__ import annotations

import sys
from pathlib import Path

import slicer

from slicer_harness import wrapper_versions
from slicer_harness.fixtures import MODULE_FILE, dtc_module, slicer_scene  # noqa: F401
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401


def test_the_module_runs_on_that_tags_own_wrapper(slicer_scene, dtc_module_at, slicer_tag):  # noqa: F811
    """connectGui returns None before v5.10.0 and its tag from then on (Slicer #7547 / PR #8667)."""
    package = slicer.parameterNodeWrapper
    assert package.__name__ == "slicer.parameterNodeWrapper"
    assert Path(package.__file__) == wrapper_versions.VENDOR / slicer_tag / "__init__.py"
    assert (slicer.app.majorVersion, slicer.app.minorVersion) == wrapper_versions.slicer_version(slicer_tag)
    node = dtc_module_at.DTCSegmentationLogic().getParameterNode()
    assert type(node).connectGui.__module__ == "slicer.parameterNodeWrapper.wrapper"
    tag = node.connectGui(type("ui", (), {})())  # a ui namespace without bound widgets, as the panel's self.ui
    assert (tag is None) == (wrapper_versions.slicer_version(slicer_tag) < (5, 10)), tag
    assert isinstance(node.connectParametersToGui({}), int)  # what the panel uses: a real tag at every tag


def test_other_tags_leave_the_imported_modules_alone(dtc_module):  # noqa: F811
    before = {name: sys.modules[name] for name in ("DTCSegmentation", "DTCSegmentationLib.panel",
                                                    "slicer.parameterNodeWrapper")}
    for tag in wrapper_versions.WRAPPER_TAGS:
        with wrapper_versions.module_under(tag, MODULE_FILE) as module:
            assert module is not dtc_module and module.DTCSegmentationWidget is not dtc_module.DTCSegmentationWidget
    assert {name: sys.modules[name] for name in before} == before
    assert slicer.parameterNodeWrapper is before["slicer.parameterNodeWrapper"]
    assert wrapper_versions.current_tag() == wrapper_versions.DEFAULT_TAG
    assert (slicer.app.majorVersion, slicer.app.minorVersion) == (5, 8)
