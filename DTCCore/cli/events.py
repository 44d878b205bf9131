"""JSON-lines events and the cancel file shared by the commands programs drive (the Slicer panel).

``--jsonl`` prints one JSON object per line on stdout, flushed at once, each with an ``"event"`` key.
``--cancel-file PATH``: the command stops at the next check (between windows or iterations) once PATH
exists; it works on every OS, including where no signal reaches the process (a GUI without a console,
a launcher that forwards no signal).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CancelledError


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jsonl", action="store_true", help="print progress and results as JSON lines (for programs)")
    p.add_argument("--cancel-file", metavar="PATH",
                   help="stop cleanly (exit status 3) as soon as this file exists; checked between windows/iterations")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def cancel_check(path: str | None) -> Callable[[], bool]:
    """``check()`` -> True once the cancel file exists (always False without one)."""
    if not path:
        return lambda: False
    target = Path(path)
    return target.exists


def raise_if_cancelled(check: Callable[[], bool], what: str) -> None:
    if check():
        raise CancelledError(f"{what} cancelled by the user")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
