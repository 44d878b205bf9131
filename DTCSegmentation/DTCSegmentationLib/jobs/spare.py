"""The spare engine process: the next Segment / ranking / model-information job's process, started in advance.

Two thirds of a one-shot ``dtc segment`` on the bundled sample is Python starting and importing torch
(issue 41). :class:`Spare` keeps one ``python -m DTCCore spare`` process (:mod:`DTCCore.cli.spare`)
importing, then waiting, from the moment the panel is entered. A job that starts takes it
(:meth:`Spare.runner`): its command goes to the spare's stdin as one JSON line and the spare runs it
exactly as the one-shot command would, with the same events, cancel file, escalation and exit codes,
since the job drives it through the same :class:`~.enginejob.ProcessRunner`. One process per job stays
the rule: a spare runs one command and exits.

The next spare starts when the job that took the last one ends: on a 2-core computer a spare importing torch
beside a running job slows that job down, and the time the user spends looking at a result is enough for the
imports. A spare also loads the model of the last job (or the one the panel had chosen when entered) on the
CPU while it waits; a job on another model or device loads its own, as before. A job that finds no live
spare (it died, or the panel was never entered) starts its process cold, as before. A spare still importing
is used all the same: it started earlier than a cold process would, so it is never slower.

A spare never outlives the panel: :meth:`Spare.stop` (module cleanup on quit and Reload, scene close) closes
its stdin, which it takes as the signal to exit, and kills its process group if it has not exited within the
timeout (one still importing is killed at once: it holds nothing yet). If Slicer dies, the pipe closes with
it and the spare exits by itself (it also exits when its parent dies). The spare never initialises CUDA: it
holds no GPU memory while it waits.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from typing import Callable

from DTCCore.protocol import ENGINE_MODULE, EVENT_KEY, SPARE, SPARE_ARGV, SPARE_CWD, SPARE_ENV, Event

from .enginejob import ProcessRunner, engine_env, python_executable

SPARE_STOP_S = 5.0  # our choice: a waiting spare exits at once when its stdin closes; then it is killed
READER_JOIN_S = 2.0  # our choice: a dead process's pipes close with it; its reader threads end at once


def engine_argv(command: list[str]) -> list[str]:
    """What ``python -m DTCCore`` gets in ``command`` (``[python, "-m", "DTCCore", *argv]``): ``argv``."""
    for i in range(len(command) - 1):
        if command[i] == "-m" and command[i + 1] == ENGINE_MODULE:
            return list(command[i + 2:])
    raise ValueError(f"not a 'python -m {ENGINE_MODULE}' command line: {command!r}")


class SpareRunner(ProcessRunner):
    """A :class:`ProcessRunner` whose process may have been started in advance (:meth:`spawn`).

    :meth:`start` hands a spawned, live process the job's command on stdin (``warm`` True) and starts the
    command cold otherwise (the spare died just before). The spare's ``spare-ready`` line is read here and
    never reaches the job. ``on_exit`` is called once, from :meth:`poll` / :attr:`returncode`, when the
    job's process has ended and its output is read.
    """

    def __init__(self, on_exit: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.ready = threading.Event()  # set once the spare's imports are done
        self.warm = False  # True once a command went to a process started in advance
        self.on_exit = on_exit
        self._spawned = False
        self._exit_reported = False

    def spawn(self, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start the spare process (``python -m DTCCore spare``); it imports, then waits for :meth:`start`."""
        self._spawned = True
        self._launch(command, env, None, subprocess.PIPE)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _read(self, name: str, stream) -> None:
        if name == "stdout" and self._spawned:  # the spare's first line says it is ready: not the job's
            first = stream.readline()
            if _is_ready_line(first):
                self.ready.set()
            elif first:
                self._lines.put((name, first.rstrip("\r\n")))
        super()._read(name, stream)

    def start(self, command: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        """Run ``command`` in the spare (its ``python -m DTCCore`` arguments, ``cwd`` and ``env`` on stdin),
        or start it cold when there is no live spare."""
        if self.alive:
            message = {SPARE_ARGV: engine_argv(command), SPARE_CWD: cwd or os.getcwd(),
                       SPARE_ENV: dict(env if env is not None else os.environ)}
            try:
                self.process.stdin.write(json.dumps(message) + "\n")
                self.process.stdin.close()  # one command per process
                self.warm = True
                return
            except (OSError, ValueError):  # it died between the check and the write: start cold
                pass
        self.discard()
        super().start(command, env, cwd)

    def discard(self) -> None:
        """Forget a spawned process (killed if still there) and its output: the runner can start cold."""
        if self.process is not None:
            self._close_stdin()
            if self.process.poll() is None:
                self._kill_group()
            self.process.wait()
        for thread in self._threads:  # its last lines must not reach the queue the cold start will use
            thread.join(READER_JOIN_S)
        self.process, self._spawned, self._threads = None, False, []
        self._lines = queue.Queue()
        self.ready.clear()

    def stop(self, timeout: float = SPARE_STOP_S) -> bool:
        """End a spare that no job took: a ready one has its stdin closed (it exits) and its group killed after
        ``timeout`` s; one still importing is killed at once (it holds nothing yet). True when it exited by itself."""
        if self.process is None:
            return True
        self._close_stdin()
        if not self.ready.is_set() and self.process.poll() is None:
            self._kill_group()
            self.process.wait()
            return False
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self._kill_group()
            self.process.wait()
            return False

    def _close_stdin(self) -> None:
        if self.process is not None and self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def _kill_group(self) -> None:
        self._cancel_time = None
        self.kill_tree()

    @property
    def returncode(self) -> int | None:
        code = super().returncode
        if code is not None and not self._exit_reported:
            self._exit_reported = True
            if self.on_exit is not None:
                self.on_exit()
        return code


def _is_ready_line(line: str) -> bool:
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, TypeError):
        return False
    return isinstance(event, dict) and event.get(EVENT_KEY) == Event.SPARE_READY


class Spare:
    """At most one spare engine process, the next job's (see the module's docstring).

    Off until :meth:`start` (the panel calls it when the module is entered): until then :meth:`runner`
    gives every job a plain cold :class:`ProcessRunner`, as before. ``handed`` / ``cold``: jobs given a
    live spare / started cold since :meth:`start`.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.model: str | None = None  # the model file the next spare loads while it waits (the last one used)
        self.handed = 0
        self.cold = 0
        self._spare: SpareRunner | None = None

    def command(self) -> list[str]:
        """``python -m DTCCore spare`` and the model it loads in advance (``--model``), if one is known."""
        return [python_executable(), "-m", ENGINE_MODULE, SPARE] + (["--model", self.model] if self.model else [])

    @property
    def process(self) -> subprocess.Popen | None:
        """The waiting spare's process (tests, benchmarks), None when there is none."""
        return self._spare.process if self._spare is not None else None

    @property
    def ready(self) -> bool:
        """A live spare has finished its imports."""
        return self._spare is not None and self._spare.alive and self._spare.ready.is_set()

    def start(self, model: str | os.PathLike | None = None) -> None:
        """Keep a spare from now on (loading ``model`` while it waits, when given); start one unless one waits."""
        self.enabled = True
        if model:
            self.model = str(model)
        self._refill()

    def _refill(self) -> None:
        if not self.enabled or (self._spare is not None and self._spare.alive):
            return
        if self._spare is not None:
            self._spare.discard()  # died while waiting (killed, out of memory): forget it
        spare = SpareRunner()
        spare.spawn(self.command(), engine_env())
        self._spare = spare

    def runner(self, model: str | os.PathLike | None = None) -> ProcessRunner:
        """The runner for a job about to start: the live spare when there is one (the next one starts when
        that job ends, loading ``model``, the job's model file, when given), else a runner that starts the job
        cold."""
        if not self.enabled:
            return ProcessRunner()
        if model:
            self.model = str(model)
        spare, self._spare = self._spare, None
        if spare is not None and spare.alive:
            self.handed += 1
            spare.on_exit = self._refill
            return spare
        if spare is not None:
            spare.discard()
        self.cold += 1
        return SpareRunner(on_exit=self._refill)

    def wait_ready(self, timeout: float) -> bool:
        """Block until a spare is ready (tests and benchmarks); False after ``timeout`` s or without one."""
        deadline = time.monotonic() + timeout
        while self._spare is not None and self._spare.alive and time.monotonic() < deadline:
            if self._spare.ready.wait(0.05):
                return True
        return self.ready

    def stop(self, timeout: float = SPARE_STOP_S) -> bool:
        """No more spares; end the waiting one (stdin closed, killed after ``timeout`` s). Jobs that took
        one are the panel's to stop. True when no spare was left running."""
        self.enabled = False
        spare, self._spare = self._spare, None
        if spare is None:
            return True
        spare.stop(timeout)
        return spare.process is None or spare.process.poll() is not None

