"""Background processes: a generic process runner and the fine-tune job built on it.

The runner starts a command in its own process group; one reader thread per stream puts lines on a
queue; the caller drains it with :meth:`ProcessRunner.poll` (in Slicer from a ``qt.QTimer``, in tests in
a plain loop), so the UI thread never blocks. Cancel first asks the main process to stop (SIGTERM: the
DTCCore trainer saves a checkpoint and exits 3), then ends the whole process tree (batch workers
included) when it has exited or after a grace period. Anything with ``start/poll/returncode/cancel``
can stand in for the runner (see :class:`TrainingJob`'s ``runner`` argument).

Usage::

    job = TrainingJob(TrainingRequest(manifest, run_dir, {"train": {"iterations": 500}}))
    job.start()
    while job.state == "running":
        for event in job.poll():      # dicts from the trainer's --jsonl output, plus a final one
            print(event)
        time.sleep(0.2)
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from DTCCore.config import atomic_write_text
from DTCCore.errors import EXIT_CANCELLED, EXIT_USER_ERROR

CANCEL_GRACE_S = 60.0  # our choice: time for the trainer to write its checkpoint before the tree is killed
STDERR_TAIL_LINES = 40  # lines of stderr kept to explain a failure


def python_executable() -> str:
    """Python to run DTCCore with: Slicer's ``PythonSlicer`` launcher when present, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def engine_pythonpath() -> str:
    """PYTHONPATH that makes the bundled DTCCore importable in a child process."""
    import DTCCore

    root = str(Path(DTCCore.__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


class ProcessRunner:
    """Run one command without blocking; lines arrive through :meth:`poll`."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._cancel_time: float | None = None

    def start(self, command: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True  # own process group: the tree can be killed at once
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs,
        )
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            thread = threading.Thread(target=self._read, args=(name, stream), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, name: str, stream) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\r\n")))
        stream.close()

    def poll(self) -> list[tuple[str, str]]:
        """(stream, line) pairs received since the last call; never blocks. Escalates a pending cancel."""
        out = []
        while True:
            try:
                out.append(self._lines.get_nowait())
            except queue.Empty:
                break
        if self._cancel_time is not None and self.process is not None:
            exited = self.process.poll() is not None
            if exited or time.monotonic() - self._cancel_time > CANCEL_GRACE_S:
                self._kill_tree()
        return out

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has exited and its output has been read, else None."""
        if self.process is None or self.process.poll() is None:
            return None
        if any(t.is_alive() for t in self._threads) or not self._lines.empty():
            return None
        return self.process.returncode

    def cancel(self) -> None:
        """Ask the process to stop (SIGTERM / CTRL_BREAK); the tree is killed once it exits or after the grace."""
        if self.process is None or self.process.poll() is not None:
            return
        self._cancel_time = time.monotonic()
        if os.name == "nt":
            self.process.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            self.process.send_signal(signal.SIGTERM)

    def _kill_tree(self) -> None:
        pid = self.process.pid
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)  # the group id is the child's pid (start_new_session)
            except (ProcessLookupError, PermissionError):
                pass
        self._cancel_time = None

    def wait(self, timeout: float) -> int | None:
        """Block up to ``timeout`` s (tests and shutdown only); the exit status or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.returncode is not None:
                return self.returncode
            time.sleep(0.05)
        return self.returncode


@dataclass
class TrainingRequest:
    """What to train: the manifest, the run folder to create (or resume), a partial DTCConfig dict."""

    manifest: Path
    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    init_from: Path | None = None  # fine-tune from this model's weights (None: from scratch)
    resume: bool = False  # continue from the newest checkpoint in run_dir

    def command(self, python: str | None = None) -> list[str]:
        cmd = [python or python_executable(), "-m", "DTCCore", "train", str(self.manifest), "-o", str(self.run_dir),
               "--config", str(self.config_path), "--jsonl"]
        if self.init_from is not None and not self.resume:
            cmd += ["--init-from", str(self.init_from)]
        if self.resume:
            cmd.append("--resume")
        return cmd

    @property
    def config_path(self) -> Path:
        return Path(self.run_dir) / "requested_config.json"


class TrainingJob:
    """A ``dtc train --jsonl`` process; :meth:`poll` returns its events plus a final state event.

    ``state``: "idle", "running", "done" (``model`` is the new model.pt), "cancelled" (``checkpoint`` is
    resumable) or "failed" (``error`` holds the trainer's one-line message or its last output lines).
    """

    def __init__(self, request: TrainingRequest, runner: ProcessRunner | None = None) -> None:
        self.request = request
        self.runner = runner or ProcessRunner()
        self.state = "idle"
        self.model: Path | None = None
        self.checkpoint: Path | None = None
        self.error = ""
        self.progress: dict[str, Any] | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._cancel_requested = False

    def start(self) -> None:
        Path(self.request.run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.request.config_path, json.dumps(self.request.config, indent=2) + "\n")
        env = dict(os.environ, PYTHONPATH=engine_pythonpath(), PYTHONUNBUFFERED="1")
        self.runner.start(self.request.command(), env=env)
        self.state = "running"

    def cancel(self) -> None:
        if self.state == "running":
            self._cancel_requested = True
            self.runner.cancel()

    def poll(self) -> list[dict[str, Any]]:
        events = []
        for stream, line in self.runner.poll():
            if stream == "stderr":
                if line.strip():
                    self._stderr.append(line)
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                self._stderr.append(line)
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if kind == "progress":
                self.progress = event
            elif kind == "done":
                self.model = Path(event["model"])
            elif kind in ("cancelled", "checkpoint"):
                self.checkpoint = Path(event.get("checkpoint") or event.get("path"))
            events.append(event)
        code = self.runner.returncode
        if self.state == "running" and code is not None:
            events.append(self._finish(code))
        return events

    def _finish(self, code: int) -> dict[str, Any]:
        if code == 0 and self.model is not None:
            self.state = "done"
            return {"event": "job-done", "model": str(self.model)}
        if code == EXIT_CANCELLED or (self._cancel_requested and code != EXIT_USER_ERROR):
            self.state = "cancelled"
            return {"event": "job-cancelled", "checkpoint": str(self.checkpoint) if self.checkpoint else None}
        self.state = "failed"
        errors = [line for line in self._stderr if line.startswith("error: ")]
        self.error = errors[-1][len("error: "):] if errors else (
            "\n".join(list(self._stderr)[-5:]) or f"the training process stopped with exit code {code}"
        )
        return {"event": "job-failed", "error": self.error, "returncode": code}
