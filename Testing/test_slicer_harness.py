"""The strict harness itself, and the issue-8 defects that are checked below the widget level."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import slicer

from slicer_harness import app as harness_app
from slicer_harness import pythonqt, scripted_module
from slicer_harness.fixtures import MODULE_FILE, REPO, dtc_module, slicer_scene, tiny_model  # noqa: F401

# isort: split
# DTCSegmentationLib is importable once slicer_harness.fixtures has put the module folder on sys.path
from DTCSegmentationLib import dependencies
from DTCSegmentationLib.jobs import enginejob as jobs  # noqa: E402

MODULE_DIR = MODULE_FILE.parent


def module_sources() -> list[Path]:
    return [MODULE_FILE, *sorted((MODULE_DIR / "DTCSegmentationLib").rglob("*.py"))]


# ---------------------------------------------------------------------------------------------- strictness
def test_api_list_names_its_tags():
    """The widget stand-ins serve what every supported tag has (Testing/test_slicer_api_versions.py has more)."""
    source = pythonqt.API["source"]
    assert source["Slicer"].endswith("tags v5.6.2, v5.8.1, v5.10.0, v5.12.3")
    assert "82cae5781621845486bad2697aed095f04cfbe76" in source["tags"]["v5.8.1"]["CTK"]
    plot = pythonqt.API["classes"]["qMRMLPlotWidget"]
    assert "setMRMLPlotViewNode" in plot["methods"] and "setMRMLPlotChartNode" not in plot["methods"]


def test_unknown_attributes_raise_like_pythonqt(slicer_scene):
    import ctk
    import qt

    plot = slicer.qMRMLPlotWidget()
    with pytest.raises(AttributeError):
        plot.setMRMLPlotChartNode  # defect 1: the method does not exist in any Slicer
    combo = slicer.qMRMLNodeComboBox()
    with pytest.raises(AttributeError):
        combo.addItem("x")  # a QComboBox method; qMRMLNodeComboBox derives from QWidget
    with pytest.raises(AttributeError):
        combo.currentNodeChanged_typo
    with pytest.raises(AttributeError):
        combo.connect("currentNodeChanged(vtkMRMLScalarVolumeNode*)", print)
    with pytest.raises(AttributeError):
        qt.QPushButton().textt = "x"
    with pytest.raises(AttributeError):
        qt.QNoSuchWidget
    with pytest.raises(AttributeError):
        ctk.ctkNoSuchWidget
    with pytest.raises(NotImplementedError):
        ctk.ctkSliderWidget()  # exists in CTK; the harness does not provide it
    button = qt.QPushButton()
    clicks = []
    assert button.connect("clicked(bool)", lambda: clicks.append(1))  # PythonQt drops extra arguments
    button.text = "Go"
    button.click()
    assert clicks == [1] and button.text == "Go" and type(button) is qt.QPushButton


def test_application_stand_in_has_only_slicer_api():
    allowed = pythonqt.proxy_class("qSlicerApplication")._allowed()
    public = ({n for n in dir(harness_app.FakeApplication) if not n.startswith("_")}
              | set(vars(slicer.app)) - {"_connections", "_applicationLogic"})
    assert public - set(allowed) == set()
    with pytest.raises(AttributeError):
        slicer.app.connect("noSuchSignal()", print)


def test_scripted_module_stand_ins_define_only_slicer_names():
    real = pythonqt.API["python"]["ScriptedLoadableModule"]
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                 "ScriptedLoadableModuleTest"):
        cls = getattr(scripted_module, name)
        own = {n for n in vars(cls) if not n.startswith("_") or n == "__init__"}
        assert own - set(real[name]) == set(), name


# ------------------------------------------------------------------------------------ supported Slicers
def test_every_module_and_engine_file_parses_as_python_3_9():
    files = module_sources() + sorted((REPO / "DTCCore").rglob("*.py"))
    assert len(files) > 30
    for path in files:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_supported_versions_are_stated():
    for name in ("README.md", "DTCSegmentation.s4ext", "CMakeLists.txt"):  # the range the API lists cover
        assert "Slicer 5.6 to 5.12" in (REPO / name).read_text(), name


# ---------------------------------------------------------------------------------------------- no torch here
def test_module_never_imports_torch():
    for path in module_sources():
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 for a in n.names] + [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(name == "torch" or name.startswith("torch.") for name in names), path.name
        assert "import torch" not in path.read_text(), path.name


PANEL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {testing!r})
    from slicer_harness.fixtures import MODULE_FILE
    from slicer_harness import scene, scripted_module, pythonqt
    import numpy as np, slicer
    scene.new_scene()
    module = scene.import_module_file(MODULE_FILE)
    widget = module.DTCSegmentationWidget(scripted_module.make_widget_parent())
    widget.setup()
    for _ in range(3):
        widget.enter()  # connectGui refills the device combo box: no process, no torch
    started = set(widget._jobs)
    vol = slicer.util.addVolumeFromArray(np.random.default_rng(0).normal(size=(12, 14, 16)).astype("float32"))
    nodes = module.DTCSegmentationLogic().segment(vol, modelPath={model!r}, device="cpu")
    print("RESULT", "torch" in sys.modules, sorted(started), nodes.segmentation.GetName())
""")


def test_panel_and_segment_never_import_torch_in_slicers_process(tiny_model, tmp_path):
    """Defects 3 and 7: setup, module entry and Segment leave torch out of the GUI process."""
    script = PANEL_SCRIPT.format(testing=str(REPO / "Testing"), model=str(tiny_model))
    env = dict(os.environ, HOME=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    result = [line for line in run.stdout.splitlines() if line.startswith("RESULT")]
    assert run.returncode == 0 and result, run.stderr[-2000:]
    assert result[0].split()[1:3] == ["False", "['info']"], result[0]


SELF_TEST_SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # as on an extension build machine: import torch fails, find_spec finds none
    sys.path.insert(0, {testing!r})
    from slicer_harness.fixtures import MODULE_FILE
    from slicer_harness import scene
    scene.new_scene()
    module = scene.import_module_file(MODULE_FILE)
    test = module.DTCSegmentationTest()
    test.runTest()
    print("SELFTEST OK", slicer_nodes := scene.slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))
""")


def test_self_test_runs_without_torch(tmp_path):
    """Defect 8: the CMake self-test must pass on a build machine without torch."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    run = subprocess.run([sys.executable, "-c", SELF_TEST_SCRIPT.format(testing=str(REPO / "Testing"))],
                         capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert run.returncode == 0 and "SELFTEST OK" in run.stdout, run.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- cancel
LAUNCHER = textwrap.dedent("""
    # CTK's AppLauncher as PythonSlicer: runs the real Python as a child, forwards no signal, exits with its code
    import subprocess, sys
    sys.exit(subprocess.call([sys.executable] + sys.argv[1:]))
""")
WORKER = textwrap.dedent("""
    # the engine: checks the cancel file (unless told to ignore it), treats SIGTERM like it, then takes
    # a while to write its checkpoint before exiting 3
    import json, os, signal, sys, time
    cancel_file, checkpoint, ignore_file = sys.argv[1], sys.argv[2], sys.argv[3] == "ignore-file"
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append("signal"))
    print(json.dumps({"event": "start"}), flush=True)
    while not stop and (ignore_file or not os.path.exists(cancel_file)):
        time.sleep(0.05)
    time.sleep(1.0)
    open(checkpoint, "w").write("saved")
    print(json.dumps({"event": "cancelled", "checkpoint": checkpoint}), flush=True)
    sys.exit(3)
""")


class _FakeEngineJob(jobs.EngineJob):
    def __init__(self, tmp_path, mode):
        super().__init__([], tmp_path / "run")
        (tmp_path / "launcher.py").write_text(LAUNCHER)
        (tmp_path / "worker.py").write_text(WORKER)
        self.checkpoint = tmp_path / "checkpoint.pt"
        self._script = [str(tmp_path / "launcher.py"), str(tmp_path / "worker.py"), str(self.cancel_file),
                        str(self.checkpoint), mode]

    def command(self, python=None):
        return [sys.executable, *self._script]


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
@pytest.mark.parametrize("mode", ["use-file", "ignore-file"])
def test_cancel_reaches_the_engine_behind_the_launcher(tmp_path, monkeypatch, mode):
    """Defect 4: the engine saves its checkpoint, whether it sees the cancel file or only the group signal."""
    monkeypatch.setattr(jobs, "CANCEL_SIGNAL_AFTER_S", 0.5)
    job = _FakeEngineJob(tmp_path, mode)
    job.start()
    events = []
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        events += job.poll()
        time.sleep(0.05)
    job.cancel()
    events += job.wait(30)
    assert job.state == "cancelled", (events, list(job._stderr))
    assert job.checkpoint.read_text() == "saved"  # written before anything was killed
    assert any(e["event"] == "cancelled" for e in events)


def test_no_console_window_and_no_console_signal_on_windows(monkeypatch):
    flags = jobs.popen_options("nt")["creationflags"]
    assert flags & 0x08000000 and flags & 0x00000200  # CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP
    assert "CTRL_BREAK_EVENT" not in (MODULE_DIR / "DTCSegmentationLib" / "jobs" / "enginejob.py").read_text()
    runner = jobs.ProcessRunner()
    runner.process = types.SimpleNamespace(pid=12345, poll=lambda: None)
    monkeypatch.setattr(jobs.os, "name", "nt")
    monkeypatch.setattr(jobs.os, "killpg", lambda *a: pytest.fail("no signal on Windows"), raising=False)
    runner.signal_group()  # nothing raised out of the button slot


# ---------------------------------------------------------------------------------------------- dependencies
def _fake_installer(tmp_path, monkeypatch, code: int, message: str = "") -> Path:
    """A ``light_the_torch`` module for child processes only: records its arguments, exits with ``code``."""
    package = tmp_path / "installer" / dependencies.TORCH_INSTALLER_MODULE
    package.mkdir(parents=True)
    record = tmp_path / "argv.json"
    (package / "__main__.py").write_text(
        "import json, sys\n"
        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
        f"print({message!r}, file=sys.stderr)\n"
        f"sys.exit({code})\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "installer"))
    return record


def test_torch_is_installed_in_a_child_process_alone(tmp_path, monkeypatch):
    """light-the-torch (the PyTorch extension's installer) runs as a child: nothing of torch is imported here,
    torchvision is not asked for, and the installer itself comes through _pip first when missing."""
    record = _fake_installer(tmp_path, monkeypatch, 0)
    pips = []
    monkeypatch.setattr(dependencies, "_pip", pips.append)
    dependencies._install_torch()
    assert json.loads(record.read_text()) == ["install", dependencies.TORCH_REQUIREMENT]
    assert pips == [[dependencies.TORCH_INSTALLER]]  # not importable in this process: installed first
    assert "torchvision" not in " ".join(dependencies.torch_install_command())


def test_a_failed_torch_install_says_why(tmp_path, monkeypatch):
    _fake_installer(tmp_path, monkeypatch, 1, "ERROR: No matching distribution found for torch")
    monkeypatch.setattr(dependencies, "_pip", lambda requirements: None)
    with pytest.raises(dependencies.DTCError, match="No matching distribution found for torch"):
        dependencies._install_torch()


def test_an_old_torch_is_replaced_through_the_installer(monkeypatch):
    steps = []
    monkeypatch.setattr(dependencies, "_pip", lambda r: steps.append(("pip", r)))
    done = types.SimpleNamespace(state=dependencies.JobState.DONE, wait=lambda timeout: [], error="")
    monkeypatch.setattr(dependencies, "start_torch_install", lambda action: steps.append(("torch",)) or done)
    monkeypatch.setattr(dependencies, "torch_too_old", lambda: True)  # an old torch is installed
    monkeypatch.setattr(dependencies.importlib.util, "find_spec", lambda name: object())
    dependencies.ensure_torch(lambda text: "PyTorch" in text)
    assert steps == [("torch",)]


# ---------------------------------------------------------------------------------------------- catalog
def test_catalog_entry_would_be_accepted():
    entry = json.loads((REPO / "DTCSegmentation.json").read_text())
    repo_name = entry["scm_url"].rstrip("/").removesuffix(".git").split("/")[-1]
    assert repo_name.startswith("Slicer"), "the ExtensionsIndex requires repository names starting with Slicer"
    s4ext = dict(line.split(" ", 1) for line in (REPO / "DTCSegmentation.s4ext").read_text().splitlines()
                 if line.strip() and not line.startswith("#"))
    assert s4ext["scmurl"] == entry["scm_url"]
    cmake = (REPO / "CMakeLists.txt").read_text()
    for url in s4ext["screenshoturls"].split() + [s4ext["iconurl"]]:
        assert url in cmake
        path = url.split("/main/", 1)[1]
        assert (REPO / path).is_file(), f"{url} points at a missing file"


def test_collapsible_button_keeps_a_child_the_module_hid():
    """ctkCollapsibleButton: expanding shows what collapsing hid, never a child the module hid itself."""
    from PySide6 import QtWidgets

    from slicer_harness import mrml_widgets

    pythonqt.process_events(0)  # the QApplication exists
    box = mrml_widgets.ctkCollapsibleButton()
    shown, hidden = QtWidgets.QPushButton(box), QtWidgets.QPushButton(box)
    hidden.setVisible(False)  # as the panel hides "Add ROI box" in setup(), before the panel is shown
    box.show()
    assert shown.isVisible() and not hidden.isVisible()
    box.collapsed = True
    assert not shown.isVisible() and not hidden.isVisible()
    box.collapsed = False
    assert shown.isVisible() and not hidden.isVisible()
    hidden.setVisible(True)  # the module shows it: it stays shown
    box.collapsed, box.collapsed = True, False
    assert hidden.isVisible()
    box.close()
