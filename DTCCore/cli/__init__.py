"""The ``dtc`` command line: ``dtc train``, ``dtc segment``, ``dtc evaluate``.

A user mistake is reported as one line ``error: <what is wrong and how to fix it>`` on stderr with exit
status 2, never a traceback. A cancelled training run exits with status 3 after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import CancelledError, DTCError
from ..protocol import EXIT_CANCELLED, EXIT_USER_ERROR

DESCRIPTION = """\
DTC: semi-supervised 3D segmentation through dual-task consistency (Luo et al., AAAI 2021).

  dtc segment IMAGE... -o OUT       segment scans with the bundled model (or --model)
  dtc segment --sample -o OUT       segment the bundled left-atrium MRI sample case
  dtc train MANIFEST -o RUN_DIR     train (or fine-tune) on labeled + unlabeled scans
  dtc evaluate PRED LABEL           Dice, Jaccard, ASD, 95HD (voxels and mm)
  dtc info [MODEL...]               a model's classes, label table, plan and training data (JSON lines)
  dtc rank IMAGE...                 order unlabeled scans by dual-task disagreement (annotate next)
  dtc spare                         for programs: import now, run one segment/rank/info sent later on stdin

Run 'dtc COMMAND --help' for the options of each command.
"""


def device_argument(text: str) -> str:
    """argparse type of every ``--device`` option: the config's device names (auto, cpu, cuda, cuda:N)."""
    from ..config import check_device

    try:
        return check_device(text.strip().lower())
    except DTCError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from . import evaluate, info, rank, segment, spare, train

    parser = argparse.ArgumentParser(
        prog="dtc", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"DTCSegmentation {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (train, segment, evaluate, info, rank, spare):
        module.add_parser(sub)
    for command in sub.choices.values():  # every command: the CPU threads it may use
        command.add_argument("--threads", type=threads_argument, metavar="N",
                             help="CPU threads for torch and SimpleITK (default: theirs, one per core); "
                                  "give each of two jobs run at once its share of the cores")
    return parser


def threads_argument(text: str) -> int:
    """argparse type of ``--threads``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number of threads, 1 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dtc`` and ``python -m DTCCore``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    from .events import log  # a closed pipe (the panel is gone) must not turn a cancel into a crash

    try:
        from ..runtime.threads import apply_threads, describe_threads

        state = apply_threads(args.threads, getattr(args, "uses_torch", True))
        if args.threads is not None and os.environ.get("RANK", "0") == "0":  # asked for: said on the first line
            log(describe_threads(state))  # (rank 0 only: the other ranks of a multi-GPU run print nothing)
        return int(args.run(args) or 0)
    except CancelledError as exc:
        log(f"cancelled: {exc}")
        return EXIT_CANCELLED
    except DTCError as exc:
        log(f"error: {exc}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        log("interrupted")
        return EXIT_CANCELLED
    except MemoryError:
        print("error: not enough memory for this image; use a machine with more RAM or crop the scan", file=sys.stderr)
        return EXIT_USER_ERROR
