"""JSON-lines events and the cancel file shared by the commands programs drive (the Slicer panel).

``--jsonl`` prints one JSON object per line on stdout, flushed at once, each with an ``"event"`` key
(the names, their fields and the commands that take these options: :mod:`DTCCore.protocol`).
``--cancel-file PATH``: the command stops at the next check (between windows or iterations) once PATH
exists; it works on every OS, including where no signal reaches the process (a GUI without a console,
a launcher that forwards no signal).

When the program reading our output goes away (Slicer quit mid-training: the pipe closes), the next
write raises BrokenPipeError. That is a cancel, not a crash: :func:`write_line` sends the rest of the
output to the null device and :func:`cancel_check` reports True, so a trainer reaches its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CancelledError
from ..protocol import CANCEL_FILE_OPTION, EVENT_KEY, EXIT_CANCELLED, JSONL_OPTION

JSONL_HELP = "print progress and results as JSON lines (for programs)"
CANCEL_HELP = (f"stop cleanly (exit status {EXIT_CANCELLED}) as soon as this file exists; "
               "checked between windows/iterations")


def add_options(p: argparse.ArgumentParser, jsonl_help: str = JSONL_HELP, cancel_help: str = CANCEL_HELP) -> None:
    """``--jsonl`` and ``--cancel-file PATH``, the options of the commands a program drives."""
    p.add_argument(JSONL_OPTION, action="store_true", help=jsonl_help)
    p.add_argument(CANCEL_FILE_OPTION, metavar="PATH", help=cancel_help)


_reader_gone = False  # set once a write found the pipe closed


def reader_gone() -> bool:
    """True once a write to stdout or stderr found nobody reading (the panel or the terminal is gone)."""
    return _reader_gone


def detach_output() -> None:
    """Point stdout and stderr at the null device (their reader is gone) and remember it."""
    global _reader_gone
    _reader_gone = True
    null = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(null, stream.fileno())
        except (OSError, ValueError):  # no file descriptor behind it (an in-memory stream)
            pass
    os.close(null)


def write_line(text: str, stream: Any = None) -> None:
    """Print one line and flush it; a closed pipe detaches the output instead of raising."""
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except BrokenPipeError:
        detach_output()


def emit(event: str, **fields: Any) -> None:
    write_line(json.dumps({EVENT_KEY: event, **fields}))


def cancel_check(path: str | None) -> Callable[[], bool]:
    """``check()`` -> True once the cancel file exists or the reader of our output is gone."""
    if not path:
        return reader_gone
    target = Path(path)
    return lambda: _reader_gone or target.exists()


def raise_if_cancelled(check: Callable[[], bool], what: str) -> None:
    if check():
        raise CancelledError(f"{what} cancelled by the user")


def log(text: str) -> None:
    write_line(text, sys.stderr)
