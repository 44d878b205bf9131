"""``python -m DTCCore spare``: an engine process started in advance that runs one command sent on stdin.

Two thirds of a one-shot ``dtc segment`` on the bundled sample is Python starting and importing torch
(issue 41, 2-core VM: 3.8 s a process, 2.2 s of it ``import torch``, 1.0 s segmenting). A driver (the
Slicer panel, ``DTCSegmentationLib.jobs.spare``) starts this process before the user clicks: it imports
torch and everything ``segment``, ``rank`` and ``info`` import, prints one ``spare-ready`` event, then
waits for one JSON line on stdin (:mod:`DTCCore.protocol`: argv, cwd, env) and runs that command through
the same :func:`DTCCore.cli.main` as ``python -m DTCCore``, in this process: the same events, cancel
file and exit codes. One command per process; it exits afterwards, and the driver starts the next one.

While it waits it holds nothing but its imports and, with ``--model`` / ``--bundled-model``, that model's
weights on the CPU (:mod:`DTCCore.model.preload`, used by a command on the same unchanged file on the CPU):
CUDA is never initialised here (the command does that, when it resolves its device), and ``--threads`` still
applies to the command. It exits by itself, status 0, when stdin closes
(the driver stopped it, or the driver's process is gone and with it the pipe's write end) or when its parent
dies (POSIX: the process is re-parented, :data:`PARENT_POLL_S`). Windows re-parents nothing: there stdin's end
is the signal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from ..errors import DTCError
from ..protocol import (
    EXIT_OK,
    SPARE,
    SPARE_ARGV,
    SPARE_COMMANDS,
    SPARE_CWD,
    SPARE_ENV,
    Event,
)
from .events import emit

PARENT_POLL_S = 0.5  # our choice: how often a waiting spare checks that its parent is alive (a getppid call)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(SPARE, help="for programs: start now, run one command sent later on stdin (JSON)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="MODEL", help="also load this model (on the CPU) while waiting; a command "
                   "that segments or ranks with the same file, unchanged, on the CPU uses it (model/preload.py)")
    p.add_argument("--bundled-model", action="store_true", help="--model with the bundled default model")
    p.set_defaults(run=run, uses_torch=False)  # --threads belongs to the command it runs


def warm_up() -> None:
    """Import what ``segment``, ``rank`` and ``info`` import when they run (torch, MONAI, SimpleITK, the
    network), without initialising CUDA or running any torch operation."""
    import torch  # noqa: F401
    import tqdm  # noqa: F401

    from ..data import images, labels  # noqa: F401
    from ..inference import predict  # noqa: F401
    from ..model import checkpoint  # noqa: F401
    from ..planning import extent  # noqa: F401
    from ..runtime import devices, precision  # noqa: F401
    from . import build_parser

    build_parser()


def cuda_initialized() -> bool:
    """Whether this process has initialised CUDA (asking does not initialise it)."""
    import torch

    return bool(torch.cuda.is_initialized())


def parse_command(line: str) -> tuple[list[str], str | None, dict[str, str] | None]:
    """(argv, cwd, env) of the spare's command line; DTCError naming the problem otherwise."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DTCError(f"the spare's command is not JSON ({exc}); send one JSON object on one line") from None
    argv = message.get(SPARE_ARGV) if isinstance(message, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise DTCError(f'the spare\'s command needs "{SPARE_ARGV}": a list of strings, the command first')
    if argv[0] not in SPARE_COMMANDS:
        raise DTCError(f"a spare runs {', '.join(sorted(SPARE_COMMANDS))}, not {argv[0]!r}; start "
                       f"'python -m DTCCore {argv[0]}' itself")
    cwd, env = message.get(SPARE_CWD), message.get(SPARE_ENV)
    if cwd is not None and not isinstance(cwd, str):
        raise DTCError(f'the spare\'s "{SPARE_CWD}" must be a folder path or null')
    if env is not None and not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise DTCError(f'the spare\'s "{SPARE_ENV}" must be an object of strings or null')
    return list(argv), cwd, env


def _watch_parent(parent: int, waiting: threading.Event) -> None:
    """Exit the process (status 0) when its parent dies while it still waits for its command."""
    while waiting.is_set():
        if os.getppid() != parent:
            os._exit(EXIT_OK)  # the main thread is blocked reading stdin: leave without it
        time.sleep(PARENT_POLL_S)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    waiting = threading.Event()
    waiting.set()
    if os.name != "nt":
        threading.Thread(target=_watch_parent, args=(os.getppid(), waiting), daemon=True).start()
    warm_up()
    model = None
    if args.model or args.bundled_model:
        from ..model import preload

        if preload.preload(args.model or None):
            model = str(preload.file_key(args.model or None)[0])
    ready: dict[str, Any] = {"pid": os.getpid(), "seconds": round(time.perf_counter() - started, 2),
                             "cuda_initialized": cuda_initialized(), "model": model}
    emit(Event.SPARE_READY, **ready)
    line = sys.stdin.readline()
    waiting.clear()
    if not line.strip():
        return EXIT_OK  # stdin closed: stopped, or the driver is gone
    argv, cwd, env = parse_command(line)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    from . import main

    code = main(argv)
    for stream in (sys.stdout, sys.stderr):  # every result file is written and renamed by now
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)  # skip the interpreter's teardown with torch loaded (0.6 s measured on the 2-core VM)
