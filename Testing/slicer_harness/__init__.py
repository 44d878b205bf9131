"""Headless 3D Slicer harness: real MRML from the PyPI package ``slicer-core`` + small stand-ins.

``slicer-core`` (pinned in pyproject.toml) provides the real MRML scene, the application logic, the
Colors / Volumes / Segmentations / Subject hierarchy logics and the full ``slicer.util``. It lacks the
Qt application and the scripted-module framework; :func:`install` adds documented stand-ins for those:

- ``slicer.app`` (:class:`app.FakeApplication`): testing mode on, no main window, no event loop;
- ``slicer.ScriptedLoadableModule`` (:mod:`scripted_module`): the four base classes;
- ``slicer.parameterNodeWrapper`` (:mod:`parameter_node`): typed fields stored in a real
  ``vtkMRMLScriptedModuleNode`` (string parameters + node references), like Slicer's wrapper;
- ``qt`` / ``ctk`` (:mod:`qt_stub`): import-only placeholders (the widget is not run here;
  the ``.ui`` file is checked with PySide6's real ``QUiLoader`` instead).

Usage in a test module::

    from slicer_harness import fixtures
    slicer_scene = fixtures.slicer_scene  # a fresh scene per test
"""

from .scene import install, new_scene, import_module_file  # noqa: F401
