"""Engine subprocesses: a non-blocking process runner and the JSON-lines job built on it.

All torch work (Segment, Next-case ranking, model information, fine-tuning) runs as ``PythonSlicer -m
DTCCore <command> --jsonl`` in a child process; Slicer's process never imports torch. One reader thread
per pipe puts lines on a queue (reader threads only block on a pipe read, which releases the GIL);
the panel drains the queue from a ``qt.QTimer`` with :meth:`EngineJob.poll`, so the GUI never blocks.

Cancel (the same on every OS): the job writes its cancel file, which the engine checks between
windows / iterations (the trainer then saves a checkpoint and exits 3). ``PythonSlicer`` is CTK's
AppLauncher, which runs the real Python as a child and forwards no signal, so a signal to the
launcher alone never reaches the engine: if the engine has not stopped after
:data:`CANCEL_SIGNAL_AFTER_S`, SIGTERM goes to the whole process group (POSIX; the trainer treats it
like the cancel file; its batch workers have a process group of their own, out of the signal's reach).
The tree is killed only once the engine has closed its output, or after the grace period. Both delays
grow with the job's step time (:func:`cancel_deadlines`): a CPU iteration on a large patch can take
longer than the fixed minimums. On Windows the child gets no console window (``CREATE_NO_WINDOW``) and no
console control event is ever sent (the GUI has no console to send one from).
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
from pathlib import Path
from typing import Any

from DTCCore.protocol import (
    ENGINE_MODULE,
    EVENT_KEY,
    EXIT_CANCELLED,
    EXIT_OK,
    EXIT_USER_ERROR,
    Event,
    JobEvent,
    JobState,
    driver_options,
)

CANCEL_SIGNAL_AFTER_S = 15.0  # our choice, the minimum: a window or a GPU iteration ends well within this
CANCEL_GRACE_S = 90.0  # our choice, the minimum from cancel to kill (the signal at 15 s + 75 s to checkpoint)
CHECKPOINT_WRITE_S = CANCEL_GRACE_S - CANCEL_SIGNAL_AFTER_S  # time to write a checkpoint (100s of MB, slow disk)
STEPS_BEFORE_SIGNAL = 2  # the engine checks the cancel file once per step: let two steps pass before the signal
STDERR_TAIL_LINES = 40  # lines of stderr kept to explain a failure
CANCEL_FILE_NAME = "cancel"
KILL_REAP_S = 5.0  # our choice: a killed process is gone within this; waiting reaps it (no zombie)


def threads_args(threads: int | None) -> list[str]:
    """``--threads N`` for a job given its share of the cores (:mod:`..cores`); nothing for the default."""
    return [] if threads is None else ["--threads", str(int(threads))]


def python_executable() -> str:
    """Python to run DTCCore with: Slicer's ``PythonSlicer`` launcher when present, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def engine_pythonpath() -> str:
    """PYTHONPATH that makes the bundled DTCCore importable in a child process."""
    import DTCCore

    root = str(Path(DTCCore.__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


def engine_env() -> dict[str, str]:
    """Environment of an engine process: this one's, DTCCore importable, output unbuffered."""
    return dict(os.environ, PYTHONPATH=engine_pythonpath(), PYTHONUNBUFFERED="1")


def cancel_deadlines(step_s: float | None = None) -> tuple[float, float]:
    """(signal after, kill after), seconds from Cancel, for a job whose steps take ``step_s`` seconds.

    The signal waits for :data:`STEPS_BEFORE_SIGNAL` steps (the cancel file is read between steps); the
    kill waits one more step (a signal is also only seen between steps) plus the checkpoint write.
    Never shorter than :data:`CANCEL_SIGNAL_AFTER_S` / :data:`CANCEL_GRACE_S`.
    """
    step = max(0.0, float(step_s or 0.0))
    signal_after = max(CANCEL_SIGNAL_AFTER_S, STEPS_BEFORE_SIGNAL * step)
    return signal_after, max(CANCEL_GRACE_S, signal_after + step + CHECKPOINT_WRITE_S)


def popen_options(os_name: str | None = None) -> dict[str, Any]:
    """Popen flags: own process group; on Windows also no console window."""
    if (os_name or os.name) == "nt":
        flags = (getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)
                 | getattr(subprocess, "CREATE_NO_WINDOW", 0x8000000))
        return {"creationflags": flags}
    return {"start_new_session": True}  # own session and process group: the whole tree can be signalled


class ProcessRunner:
    """Run one command without blocking; lines arrive through :meth:`poll`."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._cancel_time: float | None = None
        self._signalled = False
        self.signal_after_s, self.grace_s = cancel_deadlines()

    def start(self, command: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self._launch(command, env, cwd, subprocess.DEVNULL)

    def _launch(self, command: list[str], env: dict[str, str] | None, cwd: str | None, stdin: Any) -> None:
        """Start ``command`` (stdin: DEVNULL, or PIPE for a spare, :mod:`.spare`) and one reader thread per pipe."""
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin, env=env, cwd=cwd,
            text=True, encoding="utf-8", errors="replace", bufsize=1, **popen_options(),
        )
        for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            thread = threading.Thread(target=self._read, args=(name, stream), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, name: str, stream) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\r\n")))
        stream.close()

    @property
    def output_closed(self) -> bool:
        """Every process holding the pipes (the launcher's child included) has closed them."""
        return bool(self._threads) and not any(t.is_alive() for t in self._threads)

    def poll(self) -> list[tuple[str, str]]:
        """(stream, line) pairs received since the last call; never blocks. Escalates a pending cancel."""
        out = []
        while True:
            try:
                out.append(self._lines.get_nowait())
            except queue.Empty:
                break
        if self._cancel_time is not None and self.process is not None:
            waited = time.monotonic() - self._cancel_time
            if self.process.poll() is not None and self.output_closed:
                self.kill_tree()  # leftover batch workers, if any
            elif waited > self.grace_s:
                self.kill_tree()
            elif waited > self.signal_after_s and not self._signalled:
                self.signal_group()
        return out

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has exited and its output has been read, else None."""
        if self.process is None or self.process.poll() is None:
            return None
        if not self.output_closed or not self._lines.empty():
            return None
        return self.process.returncode

    def cancel(self, ask_first: bool = True, step_s: float | None = None) -> None:
        """Start the cancel escalation; ``ask_first=False`` (no cancel file) signals the group at once.

        ``step_s``: the job's seconds per step, which stretches the delays (:func:`cancel_deadlines`).
        """
        if self.process is None or self.process.poll() is not None or self._cancel_time is not None:
            return
        self.signal_after_s, self.grace_s = cancel_deadlines(step_s)
        self._cancel_time = time.monotonic()
        if not ask_first:
            self.signal_group()

    def signal_group(self) -> None:
        """SIGTERM to the whole process group (launcher and real Python). Nothing on Windows (no console)."""
        self._signalled = True
        if os.name == "nt" or self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group id is the child's pid (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_tree(self) -> None:
        """SIGKILL to the whole process group (``taskkill /T`` on Windows); reaps the process."""
        if self.process is None:
            return
        pid = self.process.pid
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False,
                           **popen_options())
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._cancel_time = None
        try:
            self.process.wait(timeout=KILL_REAP_S)
        except subprocess.TimeoutExpired:
            pass

    def wait(self, timeout: float) -> int | None:
        """Block up to ``timeout`` s (tests, console and shutdown only); the exit status or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if self.returncode is not None:
                return self.returncode
            time.sleep(0.05)
        return self.returncode


class PolledJob:
    """What every polled job shares: ``poll()`` returns its new events, ``state`` is a JobState."""

    state: str

    def poll(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        """Block until the job ends (console, tests and the self-test only); all its events."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while self.state == JobState.RUNNING and time.monotonic() < deadline:
            events += self.poll()
            time.sleep(0.05)
        return events


class EngineJob(PolledJob):
    """``python -m DTCCore <command> <args...> --jsonl --cancel-file <work_dir>/cancel`` as events.

    ``args`` start with the command's name; the driver options are the ones that command takes
    (:func:`DTCCore.protocol.driver_options`: ``dtc info`` takes neither). :meth:`poll` returns the
    engine's JSON events, then one final :class:`~DTCCore.protocol.JobEvent`: ``job-done``,
    ``job-cancelled`` or ``job-failed`` (``error``: the engine's one-line ``error:`` message, else its
    last output lines). ``state``: a :class:`~DTCCore.protocol.JobState`. Subclasses record what they
    need in :meth:`on_event` and may refuse success in :meth:`done_event`. Event names and fields:
    :mod:`DTCCore.protocol`.
    """

    kind = "job"
    temporary = False  # True: work_dir is a temporary folder, removed once the job has ended

    def __init__(self, args: list[str], work_dir: Path, runner: ProcessRunner | None = None) -> None:
        self.args = [str(a) for a in args]
        self.work_dir = Path(work_dir)
        self.runner = runner or ProcessRunner()
        self.state = JobState.IDLE
        self.error = ""
        self.progress: dict[str, Any] | None = None
        self.started_at = 0.0
        self._stderr: deque = deque(maxlen=STDERR_TAIL_LINES)
        self._cancel_requested = False

    @property
    def cancel_file(self) -> Path:
        return self.work_dir / CANCEL_FILE_NAME

    def command(self, python: str | None = None) -> list[str]:
        """``python -m DTCCore <command> <args...>`` and the driver options that command takes."""
        return [python or python_executable(), "-m", ENGINE_MODULE, *self.args,
                *driver_options(self.args[0], self.cancel_file)]

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.cancel_file.exists():
            self.cancel_file.unlink()  # a resumed run must not stop at once
        self.started_at = time.monotonic()
        self.runner.start(self.command(), env=engine_env())
        self.state = JobState.RUNNING

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    @property
    def step_s(self) -> float | None:
        """Seconds per engine step (a training iteration) as measured so far; None when unknown."""
        return None

    def cancel(self) -> None:
        if self.state != JobState.RUNNING or self._cancel_requested:
            return
        self._cancel_requested = True
        try:
            self.cancel_file.touch()
            self.runner.cancel(ask_first=True, step_s=self.step_s)
        except OSError:  # folder gone or read-only: fall back on the signal
            self.runner.cancel(ask_first=False, step_s=self.step_s)

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get(EVENT_KEY) == Event.PROGRESS:
            self.progress = event

    def done_event(self) -> dict[str, Any]:
        return {EVENT_KEY: JobEvent.DONE}

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
            if isinstance(event, dict) and EVENT_KEY in event:
                self.on_event(event)
                events.append(event)
        code = self.runner.returncode
        if self.state == JobState.RUNNING and code is not None:
            events.append(self._finish(code))
        return events

    def _finish(self, code: int) -> dict[str, Any]:
        try:
            return self._end_event(code)
        finally:
            if self.temporary:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def _end_event(self, code: int) -> dict[str, Any]:
        if code == EXIT_OK:
            try:
                event = self.done_event()
                self.state = JobState.DONE
                return event
            except Exception as exc:  # results unreadable: a failure, said in one line
                self.state, self.error = JobState.FAILED, str(exc)
                return {EVENT_KEY: JobEvent.FAILED, "error": self.error, "returncode": code}
        if code == EXIT_CANCELLED or (self._cancel_requested and code != EXIT_USER_ERROR):
            self.state = JobState.CANCELLED
            return {EVENT_KEY: JobEvent.CANCELLED}
        self.state = JobState.FAILED
        errors = [line for line in self._stderr if line.startswith("error: ")]
        self.error = errors[-1][len("error: "):] if errors else (
            "\n".join(list(self._stderr)[-5:]) or f"the engine process stopped with exit code {code}"
        )
        return {EVENT_KEY: JobEvent.FAILED, "error": self.error, "returncode": code}
