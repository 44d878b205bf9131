"""Headless 3D Slicer harness: real MRML from the PyPI package ``slicer-core`` + strict stand-ins.

``slicer-core`` (pinned in pyproject.toml) provides the real MRML scene, the application logic, the
Colors / Volumes / Segmentations / Subject hierarchy logics and the full ``slicer.util``. It lacks the
Qt application and the scripted-module framework; :func:`install` adds, all strict (an unknown name
raises AttributeError, as PythonQt does; the API lists come from Slicer's source at each supported tag,
v5.6.2, v5.8.1, v5.10.0 and v5.12.3, and the stand-ins expose what all four have: see ``api/``,
``extract_api.py`` and ``api_versions.py``; ``api_check.py`` checks the module's MRML / VTK /
``slicer.util`` calls against the same lists):

- ``qt`` / ``ctk`` / ``slicer.q*`` (:mod:`pythonqt`): a PythonQt-compatible layer over PySide6 offscreen,
  with the Slicer/CTK widgets of the module's .ui implemented in :mod:`mrml_widgets`;
- ``slicer.app`` (:class:`app.FakeApplication`): testing mode on, no main window;
- ``slicer.ScriptedLoadableModule`` (:mod:`scripted_module`): the four base classes;
- ``slicer.parameterNodeWrapper``: Slicer's own package, vendored at each supported tag (``vendor/``; v5.8.1
  by default, any tag through :mod:`wrapper_versions`);
- ``slicer.app.coreIOManager()`` (:mod:`io_manager`): the volume reader behind ``slicer.util.loadVolume``.

The module under test is imported as Slicer's module factory does (:mod:`module_import`, from :mod:`paths`);
:mod:`fixtures` holds the pytest fixtures. The harness's files import each other without a cycle
(Testing/test_slicer_import_cycles.py).

Usage in a test module::

    from slicer_harness.fixtures import dtc_module, slicer_scene  # a fresh scene per test
"""

from .scene import import_module_file, install, new_scene  # noqa: F401
