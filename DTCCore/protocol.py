"""The contract between DTCCore's commands and the programs that drive them (the Slicer module).

Both sides import the names below: the engine (``DTCCore.cli``, the trainer, its run log) when it
writes, the Slicer module (``DTCSegmentationLib``) when it builds a command line and reads the output.
This module imports nothing but the standard library, so Slicer's process can import it without torch,
NumPy or SimpleITK (``DTCCore/__init__.py`` stays torch-free too).

Commands (``python -m DTCCore <command>`` or ``dtc <command>``)
-----------------------------------------------------------------
``train``, ``segment``, ``evaluate``, ``info``, ``rank``, ``spare`` (below). ``segment``, ``rank`` and ``train`` take
``--jsonl`` (progress and results as JSON lines on stdout) and ``--cancel-file PATH`` (stop at the next
check once PATH exists): :data:`STREAMING_COMMANDS`, options built by :func:`driver_options`. ``info``
always prints JSON lines and takes neither; ``evaluate`` prints a table (and writes ``--json``).

The spare (``python -m DTCCore spare``)
---------------------------------------
A driver may start the process of its next job in advance: ``spare`` imports torch and DTCCore (it never
initialises CUDA; ``--model PATH`` or ``--bundled-model``: also loads that model on the CPU, used by a command
on the same unchanged file on the CPU), prints one ``spare-ready`` event on stdout (:data:`Event.SPARE_READY`:
pid, seconds, cuda_initialized, model: the file loaded or null), then reads ONE line from stdin, a JSON object
{:data:`SPARE_ARGV`: the arguments ``python -m DTCCore`` would get, :data:`SPARE_CWD`: working folder or null,
:data:`SPARE_ENV`: the whole environment or null}, and runs that command in the same process exactly as the
one-shot ``python -m DTCCore <argv...>`` would: the same events, cancel file and exit codes. Only the
:data:`SPARE_COMMANDS` are accepted (another command, or a line that is not such an object: exit
:data:`EXIT_USER_ERROR` with an ``error:`` line). One command per process: it exits afterwards. Before its
command it exits by itself (status :data:`EXIT_OK`) when stdin closes (the driver stopped it or is gone) or
its parent process dies (POSIX: it is re-parented). The driver reads the ``spare-ready`` line
itself; it is not one of the job's events.

Exit codes
----------
:data:`EXIT_OK` 0; :data:`EXIT_USER_ERROR` 2: a mistake the user can fix, the last stderr line is
``error: <what is wrong and how to fix it>``; :data:`EXIT_CANCELLED` 3: cancelled (cancel file,
SIGINT/SIGTERM, the reader of the output gone), a training run after saving a checkpoint.
Anything else is a crash (its stderr tail explains it).

Events
------
One JSON object per line on stdout, flushed at once, the name under the key ``"event"``
(:data:`EVENT_KEY`). By command (fields after the name):

``dtc segment --jsonl``
    ``start``: device, precision, total (scans), num_classes, labels (the model's label table, as
    ``dtc info`` gives it: one {value, name, color, terminology} per class), threads;
    ``extent-warning``: case, text, scan_mm, model_mm (the scan is over 2x larger than the model's
    training scans, before its windows run); ``progress``: case, done, total (windows of this scan);
    ``case-done``: case, files ({output kind: path}, kinds :data:`OUTPUT_KINDS`, ``levelset_<c>`` per
    class for a model with several classes), seconds.
``dtc rank --jsonl``
    ``start``: device, total (scans), threads; ``progress``: done, total, case (after each scan);
    ``ranked``: ranking ([[path, mean disagreement], ...], highest first).
``dtc info``
    ``model``: path, iteration, created, dtc_version, num_classes, labels, plan, mode, base_filters,
    config, the model card's keys and training_extent_mm (one per model); ``model-error``: path, error
    (an unreadable model; the command goes on); ``device`` (with ``--device``): requested, resolved,
    description, cuda_available, why_no_gpu.
``dtc train --jsonl`` (the same records go to the run folder's ``log.jsonl``, :mod:`DTCCore.training.runlog`)
    ``start``: total, start_iteration, device, precision, labeled, unlabeled, world_size, threads;
    ``progress``: iteration, total, losses ({name: value for name in :data:`LOSS_NAMES`}, and those of
    :data:`OPTIONAL_LOSS_NAMES` the run's mode has), lr, lambda, elapsed_s, eta_s;
    ``checkpoint``: iteration, path; ``message``: text;
    ``done``: iteration, model (path of model.pt), checkpoint, elapsed_s;
    ``cancelled``: iteration, checkpoint (written before the exit with :data:`EXIT_CANCELLED`).

The driver's job (``DTCSegmentationLib.jobs.enginejob.EngineJob``) ends every run with one event of its own,
never printed by the engine: ``job-done`` (training: model), ``job-cancelled`` (training: checkpoint or
None) or ``job-failed`` (error: the engine's one-line ``error:`` message, else its last output lines;
returncode). Its state goes ``idle`` -> ``running`` -> ``done`` | ``cancelled`` | ``failed``.

Files
-----
A run folder keeps its checkpoints as ``<run>/`` :data:`CHECKPOINT_DIR` ``/iter_NNNNNN.pt``
(:data:`CHECKPOINT_PATTERN`); every model and checkpoint file starts with :data:`MODEL_MAGIC`. The
bundled model is :data:`DEFAULT_MODEL`. ``dtc segment`` writes the level set as
:data:`OUTSIDE_LEVELSET` outside its ``--roi`` box; a driver that crops the scan itself fills the rest
of the grid with the same value.
"""

from __future__ import annotations

import re
from pathlib import Path

# ---- commands ---------------------------------------------------------------------------------------
ENGINE_MODULE = "DTCCore"  # python -m DTCCore <command>
TRAIN, SEGMENT, EVALUATE, INFO, RANK = "train", "segment", "evaluate", "info", "rank"
SPARE = "spare"  # python -m DTCCore spare: a process started in advance that runs one command sent on stdin
COMMANDS = (TRAIN, SEGMENT, EVALUATE, INFO, RANK, SPARE)
# What a spare runs: the short jobs a click waits for. A fine-tune runs minutes: its start-up is not worth a spare.
SPARE_COMMANDS = frozenset({SEGMENT, RANK, INFO})
SPARE_ARGV, SPARE_CWD, SPARE_ENV = "argv", "cwd", "env"  # keys of the spare's command line (one JSON object)
STREAMING_COMMANDS = frozenset({TRAIN, SEGMENT, RANK})  # take --jsonl and --cancel-file
JSONL_OPTION = "--jsonl"
CANCEL_FILE_OPTION = "--cancel-file"


def driver_options(command: str, cancel_file: str | Path) -> list[str]:
    """What a program driving ``command`` appends to its arguments: ``--jsonl --cancel-file PATH`` for
    the :data:`STREAMING_COMMANDS`, nothing for the others (``info`` always prints JSON lines)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown DTCCore command {command!r}; use one of {', '.join(COMMANDS)}")
    return [JSONL_OPTION, CANCEL_FILE_OPTION, str(cancel_file)] if command in STREAMING_COMMANDS else []


# ---- exit codes -------------------------------------------------------------------------------------
EXIT_OK = 0
EXIT_USER_ERROR = 2  # a DTCError (argparse uses 2 for usage errors too)
EXIT_CANCELLED = 3  # cancelled (cancel file, SIGINT/SIGTERM); a training run saved a checkpoint first


# ---- events -----------------------------------------------------------------------------------------
EVENT_KEY = "event"


class Event:
    """Event names the engine prints (``--jsonl``, ``dtc info``) and writes to ``log.jsonl``."""

    START = "start"  # segment, rank, train
    PROGRESS = "progress"  # segment (windows), rank (scans), train (iterations)
    CASE_DONE = "case-done"  # segment
    EXTENT_WARNING = "extent-warning"  # segment
    RANKED = "ranked"  # rank
    MODEL = "model"  # info
    MODEL_ERROR = "model-error"  # info
    DEVICE = "device"  # info --device
    CHECKPOINT = "checkpoint"  # train
    MESSAGE = "message"  # train
    DONE = "done"  # train
    CANCELLED = "cancelled"  # train
    SPARE_READY = "spare-ready"  # spare: imports done, waiting for its command (read by the driver, not a job event)


class JobEvent:
    """The driver's own last event of a job (never printed by the engine)."""

    DONE = "job-done"
    CANCELLED = "job-cancelled"
    FAILED = "job-failed"
    PREFIX = "job-"  # every name above starts with it


class JobState:
    """A driven job's state: IDLE -> RUNNING -> DONE | CANCELLED | FAILED."""

    IDLE = "idle"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


# Keys of a training progress event's "losses" (the names DTCCore.model.losses.compute_losses returns them under)
LOSS_NAMES = ("total", "dice", "lsf", "consistency")
# Keys only some modes' progress events have: "ce", the cross-entropy term of the copy-paste modes
# (DTCCore.training.copypaste_loss). A reader shows a missing one as a gap.
OPTIONAL_LOSS_NAMES = ("ce",)

# ---- files ------------------------------------------------------------------------------------------
CHECKPOINT_DIR = "checkpoints"  # <run folder>/checkpoints/iter_000123.pt
CHECKPOINT_PATTERN = re.compile(r"^iter_(\d{6,})\.pt$")
MODEL_MAGIC = b"DTCCKPT1\n"  # first bytes of a model or checkpoint file; the digit is the payload layout
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.pt"  # the bundled model
OUTPUT_KINDS = ("seg", "levelset", "disagreement")  # dtc segment's <case>_<kind>.<ext>, case-done's files keys
# Level set outside a region of interest: the far "outside" end of the normalised [-1, 1] range
# (negative inside, DESIGN section 3).
OUTSIDE_LEVELSET = 1.0
