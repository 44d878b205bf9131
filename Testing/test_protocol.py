"""The engine-to-Slicer contract (DTCCore.protocol): torch-free, obeyed by every command, one owner.

The Slicer module imports ``DTCCore.protocol`` in Slicer's process, so importing it must not load torch.
Each command takes ``--jsonl`` / ``--cancel-file`` exactly when the protocol says so, the job command
lines are built from it, and neither side spells an event name, a job state or a shared file constant
as a bare literal (the copies that drifted apart are what this module replaced).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from DTCCore import protocol
from DTCCore.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
MODULE_DIR = REPO / "DTCSegmentation"
ENGINE_FILES = sorted((REPO / "DTCCore" / "cli").glob("*.py")) + [
    REPO / "DTCCore" / "training" / f"{n}.py" for n in ("trainer", "runlog")
]
# every file of the module's library, so a renamed or new file cannot fall out of the checks
SLICER_FILES = sorted((MODULE_DIR / "DTCSegmentationLib").rglob("*.py")) + [MODULE_DIR / "DTCSegmentation.py"]


def _names(namespace: type) -> set[str]:
    return {v for k, v in vars(namespace).items() if k.isupper() and isinstance(v, str)}


EVENT_NAMES = _names(protocol.Event) | (_names(protocol.JobEvent) - {protocol.JobEvent.PREFIX})
STATE_NAMES = _names(protocol.JobState)


@pytest.mark.parametrize(
    "module", ["DTCCore.protocol", "DTCCore.errors", "DTCCore.training.runlog", "DTCCore.evaluation.preview"]
)
def test_the_contract_imports_without_torch(module):
    """Slicer's process imports the protocol (and the run log reader) without torch."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False"], module


def test_each_command_takes_the_driver_options_the_protocol_names():
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == set(protocol.COMMANDS)
    for name, parser in commands.items():
        options = {s for action in parser._actions for s in action.option_strings}
        streaming = name in protocol.STREAMING_COMMANDS
        assert (protocol.JSONL_OPTION in options) == streaming, name
        assert (protocol.CANCEL_FILE_OPTION in options) == streaming, name
        assert protocol.driver_options(name, "c") == ([protocol.JSONL_OPTION, protocol.CANCEL_FILE_OPTION, "c"]
                                                      if streaming else [])
    with pytest.raises(ValueError, match="unknown DTCCore command"):
        protocol.driver_options("segmnet", "c")


def test_job_command_lines_are_built_from_the_protocol(tmp_path):
    if str(MODULE_DIR) not in sys.path:
        sys.path.append(str(MODULE_DIR))
    from DTCSegmentationLib.jobs.infojob import ModelInfoJob
    from DTCSegmentationLib.jobs.rankjob import RankJob
    from DTCSegmentationLib.jobs.segmentjob import SegmentJob
    from DTCSegmentationLib.jobs.trainjob import TrainingJob, TrainingRequest

    info = ModelInfoJob(tmp_path / "i", ["m.pt"], "cpu", threads=1)
    assert info.command("py") == ["py", "-m", "DTCCore", "info", "m.pt", "--device", "cpu", "--threads", "1"]
    jobs = [SegmentJob(tmp_path / "s", tmp_path / "in.nrrd", (slice(1, 3), slice(0, 4), slice(2, 4)), threads=2),
            RankJob(tmp_path / "r", ["a.nrrd"], threads=2),
            TrainingJob(TrainingRequest(tmp_path / "m.json", tmp_path / "run", threads=2))]
    for job in jobs:
        line = job.command("py")
        assert line[:4] == ["py", "-m", "DTCCore", job.args[0]] and job.args[0] in protocol.STREAMING_COMMANDS
        assert line[-3:] == ["--jsonl", "--cancel-file", str(job.cancel_file)]
        assert build_parser().parse_args(line[3:]).threads == 2  # the engine accepts the whole line
    assert build_parser().parse_args(jobs[0].command("py")[3:]).roi == [1, 0, 2, 3, 4, 4]  # the ROI as --roi


def _literal_uses(path: Path) -> list[str]:
    """Event names / job states written as bare literals: emitted, compared, or put under an "event" key."""
    found = []
    names = EVENT_NAMES | STATE_NAMES
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "emit":
            if node.args and isinstance(node.args[0], ast.Constant):
                found.append(f"{path.name}:{node.lineno} emit({node.args[0].value!r})")
        elif isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found += [f"{path.name}:{node.lineno} compares {c.value!r}" for c in items
                          if isinstance(c, ast.Constant) and c.value in names]
        elif isinstance(node, ast.Dict):
            found += [f"{path.name}:{node.lineno} {{'event': {v.value!r}}}" for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and k.value == protocol.EVENT_KEY and isinstance(v, ast.Constant)]
    return found


def test_no_event_name_or_job_state_is_a_bare_literal():
    """Both sides name events and states through DTCCore.protocol (they were bare strings on both)."""
    found = [use for path in ENGINE_FILES + SLICER_FILES for use in _literal_uses(path)]
    assert found == []


def test_shared_constants_have_one_owner():
    """The Slicer side keeps no copy of the engine's file constants, loss names or command options."""
    copies = {protocol.CHECKPOINT_DIR, protocol.CHECKPOINT_PATTERN.pattern, protocol.MODEL_MAGIC,
              protocol.JSONL_OPTION, protocol.CANCEL_FILE_OPTION, protocol.LOSS_NAMES}
    found = []
    for path in SLICER_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts):
                value = tuple(e.value for e in node.elts)  # type: ignore[attr-defined]
            if value is not None and not isinstance(value, (int, float)) and value in copies:
                found.append(f"{path.name}:{node.lineno} {value!r}")
    assert found == []
    from DTCCore.inference import predict as inference
    from DTCCore.model import checkpoint

    assert (checkpoint.CHECKPOINT_DIR, checkpoint.MAGIC, checkpoint.DEFAULT_MODEL) == (
        protocol.CHECKPOINT_DIR, protocol.MODEL_MAGIC, protocol.DEFAULT_MODEL)
    assert inference.OUTSIDE_LEVELSET is protocol.OUTSIDE_LEVELSET  # one owner: the engine imports it
