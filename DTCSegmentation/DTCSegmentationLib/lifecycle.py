"""Every engine process the module started, stopped within a bounded time on quit and on Reload; Reload's
fresh import of the module's own packages (:func:`forget_packages`).

Slicer calls the widget's ``cleanup()`` when the module is unloaded: on quit, and on Reload (developer
mode) before the new panel is built. The panel's timer, which escalates a Cancel (cancel file, then
SIGTERM, then kill: :class:`.jobs.enginejob.ProcessRunner`), does not run after that, and ``dtc info``
has no cancel file at all. So the Logic keeps a :class:`ProcessRegistry` of everything it started (each
job, and anything else holding a ``ProcessRunner``: register it with ``logic.registerJob``), and
:meth:`ProcessRegistry.stop_all` ends all of them itself:

1. SIGTERM to each process group at once, and the cancel file where the job has one (a fine-tune saves a
   checkpoint on either; Resume continues from it after a restart);
2. waits until every process has exited, at most ``grace_s`` seconds in all;
3. kills the process tree of any still running;
4. removes the temporary work folders (``DTCSegment-*`` holds an uncompressed copy of a patient's scan;
   ``DTCInfo-*``, ``DTCRank-*``), also those of jobs that ended without being polled to the end.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

STOP_GRACE_S = 20.0  # our choice: quit waits at most this long; a trainer checkpoints on SIGTERM well within it
POLL_S = 0.05  # how often the stop loop checks the processes
# The module's own package: Reload imports it afresh (the module file alone would keep the cached panel and Logic).
# DTCCore, the engine's library, stays cached in Slicer's process: a change to it needs a restart of Slicer.
OWN_PACKAGES = ("DTCSegmentationLib",)


def forget_packages(packages: tuple = OWN_PACKAGES) -> list[str]:
    """Drop ``packages`` and their submodules from ``sys.modules`` so that the next import reads the files
    again (Reload); returns the names dropped."""
    names = [n for n in sys.modules if any(n == p or n.startswith(p + ".") for p in packages)]
    for name in names:
        del sys.modules[name]
    return names


def _runner(job):
    return getattr(job, "runner", None)


def _running(job) -> bool:
    runner = _runner(job)
    process = getattr(runner, "process", None)
    return process is not None and process.poll() is None


class ProcessRegistry:
    """The jobs (and other process holders) one Logic started; see the module docstring."""

    def __init__(self) -> None:
        self._jobs: list = []

    def register(self, job):
        """Keep ``job`` (anything with a ``runner``: a :class:`~.jobs.enginejob.ProcessRunner`; optional
        ``work_dir`` and ``temporary``, ``cancel_file``) until :meth:`stop_all`; returns it."""
        if not any(j is job for j in self._jobs):
            self._jobs.append(job)
        return job

    @property
    def jobs(self) -> list:
        return list(self._jobs)

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> list:
        """Stop every registered process within ``grace_s`` seconds (then kill it) and remove the temporary
        work folders; returns the jobs that were still running. Blocks at most about ``grace_s``."""
        running = [job for job in self._jobs if _running(job)]
        for job in running:
            cancel_file = getattr(job, "cancel_file", None)
            if cancel_file is not None:
                try:
                    Path(cancel_file).touch()
                except OSError:
                    pass  # folder gone: the signal below is enough
            _runner(job).signal_group()
        deadline = time.monotonic() + max(0.0, float(grace_s))
        while any(_running(job) for job in running) and time.monotonic() < deadline:
            for job in running:
                _runner(job).poll()  # drains the output the reader threads collected
            time.sleep(POLL_S)
        for job in running:
            _runner(job).kill_tree()  # still running, or batch workers left behind by an engine that exited
        for job in self._jobs:
            work_dir = getattr(job, "work_dir", None)
            if getattr(job, "temporary", False) and work_dir is not None:
                shutil.rmtree(work_dir, ignore_errors=True)
        self._jobs.clear()
        return running
