"""The PyTorch installation as a polled job: light-the-torch in a child process, its output in the status line.

A multi-GB download must not run on the GUI thread (Windows shows "Not responding" and users kill
Slicer mid-install), so it runs as the panel's other jobs do: a :class:`.enginejob.ProcessRunner`
(reader threads, own process group) polled from the panel's timer. :meth:`TorchInstallJob.poll`
returns one ``progress`` event per output line (``line``; ``done`` / ``total``: the pip phase reached,
:data:`PHASES`), then one :class:`~DTCCore.protocol.JobEvent`. Cancel sends SIGTERM to the installer's
process group at once (pip has no cancel file) and kills it after :data:`INSTALL_KILL_AFTER_S`; pip
installs nothing before its download has finished. A failure that reads like no network
(:data:`OFFLINE_MARKERS`) gets :func:`offline_message`, which names what to do.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from DTCCore.protocol import EVENT_KEY, Event, JobEvent, JobState

from .enginejob import PolledJob, ProcessRunner

# pip's own words at each phase of an install (pip 23-25), in order: the progress shown is the phase reached.
PHASES = ("Collecting", "Downloading", "Installing collected packages", "Successfully installed")
INSTALL_KILL_AFTER_S = 10.0  # our choice: pip stops on SIGTERM at once; the kill is for a hung download
OUTPUT_TAIL_LINES = 40  # lines kept to explain a failure
ERROR_LINES = 5  # lines of the installer's output quoted when it fails
# What pip / urllib3 print when the package index cannot be reached (no network, DNS, proxy, firewall).
OFFLINE_MARKERS = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                   "Name or service not known", "getaddrinfo failed", "Network is unreachable", "ProxyError",
                   "ConnectTimeoutError", "Read timed out", "No route to host", "Connection refused")


def offline_message(action: str, detail: str = "") -> str:
    """What to do when PyTorch cannot be downloaded (``action``: the button to click again)."""
    seen = f" ({detail})" if detail else ""
    return ("PyTorch could not be downloaded: this computer cannot reach the Python package index" + seen + ". "
            f"Connect to the internet (behind a proxy: set HTTPS_PROXY before starting Slicer) and click {action} "
            "again, or install PyTorch from the PyTorch extension's panel; without internet, copy a torch wheel "
            "file here and run: PythonSlicer -m pip install <torch wheel file>")


def looks_offline(lines) -> str:
    """The first output line that says the package index cannot be reached; "" when none does."""
    return next((line.strip() for line in lines if any(m in line for m in OFFLINE_MARKERS)), "")


class TorchInstallJob(PolledJob):
    """``command`` (light-the-torch installing torch) as events; ``state`` a :class:`~DTCCore.protocol.JobState`."""

    kind = "install"

    def __init__(self, command: list[str], action: str = "the button", runner: ProcessRunner | None = None) -> None:
        self.command = [str(c) for c in command]
        self.action = action
        self.runner = runner or ProcessRunner()
        self.state = JobState.IDLE
        self.error = ""
        self.started_at = 0.0
        self.phase = 0
        self.last_line = ""
        self._tail: deque = deque(maxlen=OUTPUT_TAIL_LINES)
        self._cancel_requested = False

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.runner.start(self.command, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.state = JobState.RUNNING

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    def cancel(self) -> None:
        """SIGTERM to the installer's process group now, the kill after :data:`INSTALL_KILL_AFTER_S`."""
        if self.state != JobState.RUNNING or self._cancel_requested:
            return
        self._cancel_requested = True
        self.runner.cancel(ask_first=False)
        self.runner.grace_s = INSTALL_KILL_AFTER_S

    def poll(self) -> list[dict[str, Any]]:
        events = []
        for _, line in self.runner.poll():
            if not line.strip():
                continue
            self._tail.append(line)
            self.last_line = line.strip()
            for i, word in enumerate(PHASES):
                if line.lstrip().startswith(word):
                    self.phase = max(self.phase, i + 1)
            events.append({EVENT_KEY: Event.PROGRESS, "line": self.last_line, "done": self.phase,
                           "total": len(PHASES)})
        code = self.runner.returncode
        if self.state == JobState.RUNNING and code is not None:
            events.append(self._end_event(code))
        return events

    def _end_event(self, code: int) -> dict[str, Any]:
        if code == 0:
            self.state = JobState.DONE
            return {EVENT_KEY: JobEvent.DONE}
        if self._cancel_requested:
            self.state = JobState.CANCELLED
            return {EVENT_KEY: JobEvent.CANCELLED}
        self.state = JobState.FAILED
        offline = looks_offline(self._tail)
        if offline:
            self.error = offline_message(self.action, offline)
        else:
            tail = "\n".join(list(self._tail)[-ERROR_LINES:]) or f"exit code {code}"
            self.error = (f"installing PyTorch failed ({tail}); check the internet connection or proxy, or install "
                          "PyTorch from the PyTorch extension's panel")
        return {EVENT_KEY: JobEvent.FAILED, "error": self.error, "returncode": code}
