"""Quit and Reload (real widget on the strict harness): every engine process ends within a bounded time, the
temporary folders go, and the old panel stops reacting; Reload imports the module's own package afresh.

Slicer calls the widget's ``cleanup()`` when the module is unloaded (quit; Reload before the new panel).
The engine processes here are stand-ins that behave like a stuck engine: one ignores SIGTERM and has a
child of its own (a batch worker), one is a ``dtc info``-like job without a cancel file.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import slicer

from slicer_harness import pythonqt
from slicer_harness.fixtures import slicer_scene, tiny_model  # noqa: F401
from slicer_harness.module_import import exec_module_file
from slicer_harness.paths import MODULE_FILE
from slicer_harness.wrapper_versions import dtc_module_at, slicer_tag  # noqa: F401
from test_slicer_widget import panel, pump_until  # noqa: F401

QUIT_BOUND_S = 40.0  # what the test accepts for quitting with a stuck engine (the module's own bound is lower)
KILL_DELIVERY_S = 2.0  # our allowance for the kernel to end a killed process group's members
TEST_GRACE_S = 2.0  # the grace the quit test gives a stuck engine: the same escalation as the default 20 s, sooner

STUCK_ENGINE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stuck engine: SIGTERM does not stop it
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(f"{os.getpid()} {worker.pid}")
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _stand_in_job(tmp_path, name: str, script: str, prefix: str):
    from DTCSegmentationLib.jobs.enginejob import EngineJob

    class StandInJob(EngineJob):
        temporary = True

        def command(self, python=None):
            return [sys.executable, "-c", script, str(tmp_path / f"{name}.pids")]

    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / "input.nrrd").write_bytes(b"\0" * 4096)  # the scan copy a Segment job writes
    job = StandInJob(["segment"], work)
    job.start()
    return job, work


def _pids(tmp_path, name: str) -> list[int]:
    pump_until(lambda: (tmp_path / f"{name}.pids").exists()
               and len((tmp_path / f"{name}.pids").read_text().split()) >= 1, timeout=30, what=f"{name} started")
    return [int(v) for v in (tmp_path / f"{name}.pids").read_text().split()]


def test_quit_stops_every_engine_process_in_bounded_time_and_removes_the_scan_copies(panel, tmp_path):
    w = panel
    stuck, stuck_dir = _stand_in_job(tmp_path, "stuck", STUCK_ENGINE, "DTCSegment-")
    info, info_dir = _stand_in_job(tmp_path, "info", "import os, sys, time\nopen(sys.argv[1], 'w').write("
                                   "str(os.getpid()))\ntime.sleep(600)\n", "DTCInfo-")
    w._startJob("segment", stuck, w.ui.segmentButton)
    w._startJob("info", info)
    pids = _pids(tmp_path, "stuck") + _pids(tmp_path, "info")
    assert len(pids) == 3 and all(_alive(pid) for pid in pids)
    groups = [stuck.runner.process.pid, info.runner.process.pid]
    stop_all = w.logic.stopAllJobs
    w.logic.stopAllJobs = lambda graceSeconds=TEST_GRACE_S: stop_all(graceSeconds)  # the suite waits 2 s, not 20
    try:
        start = time.monotonic()
        w.cleanup()  # what Slicer calls on quit
        took = time.monotonic() - start
        deadline = time.monotonic() + KILL_DELIVERY_S  # a SIGKILL to a group is delivered asynchronously
        while [pid for pid in pids if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.05)
        still = [pid for pid in pids if _alive(pid)]
        assert not still, f"engine processes {still} still run after quitting"
        assert TEST_GRACE_S <= took < QUIT_BOUND_S, f"quitting took {took:.1f} s"  # the grace, then the kill
        assert not stuck_dir.exists() and not info_dir.exists(), "the temporary folders (a copy of the scan) remain"
    finally:
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_the_old_panel_stops_reacting_after_cleanup(panel, tmp_path):
    w = panel
    p = w._parameterNode
    shown = w.ui.modelsFolderButton.directory
    w.cleanup()  # Reload: the old panel is hidden, a new one connects to the same parameter node
    (tmp_path / "other models").mkdir()
    p.modelsFolder = tmp_path / "other models"
    pythonqt.process_events(0.5)
    assert w.ui.modelsFolderButton.directory == shown, "the old panel still follows the parameter node"
    assert not w._jobs, f"the old panel started {sorted(w._jobs)}"


def test_reload_imports_the_modules_own_package_afresh(panel, monkeypatch):
    w = panel
    before = {name: sys.modules[name] for name in ("DTCSegmentationLib.panel", "DTCSegmentationLib.logic")}
    reloaded = []

    def reload_scripted_module(name):  # slicer.util.reloadScriptedModule: reads the module file again
        sys.modules.pop(name, None)
        module = exec_module_file(MODULE_FILE)
        reloaded.append(module)
        return module

    monkeypatch.setattr(slicer.util, "reloadScriptedModule", reload_scripted_module)
    w.onReload()
    assert len(reloaded) == 1
    for name, module in before.items():
        assert sys.modules[name] is not module, f"{name} is still the module imported before Reload"
    assert reloaded[0].DTCSegmentationWidget is not type(w)
