"""A cancel keeps the checkpoint however it arrives: a signal to the whole process group while batch
workers run (the panel's escalation, Ctrl-C in a terminal), or the reader of the output going away
(Slicer quit mid-training). Real ``dtc train`` processes, real DataLoader worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_blob_dataset, tiny_config
from DTCCore.errors import EXIT_CANCELLED
from DTCCore.model.checkpoint import find_latest_checkpoint, load_checkpoint
from DTCCore.training.runlog import read_log

ITERATIONS = 100_000  # never reached: every run here is cancelled after its first progress events
TIMEOUT_S = 120  # generous: a loaded 2-core CI machine


def _start(tmp_path: Path, workers: int) -> tuple[subprocess.Popen, Path]:
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=1)
    cfg = tmp_path / "cfg.json"
    tiny_config(iterations=ITERATIONS, num_workers=workers, log_every=1, checkpoint_every=ITERATIONS).save(cfg)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "DTCCore", "train", str(manifest), "-o", str(run), "--config", str(cfg), "--jsonl"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)  # own group, as the panel starts it
    return proc, run


def _wait_for_progress(proc: subprocess.Popen, iterations: int = 3) -> None:
    """Read the JSON lines until the trainer reports ``iterations`` iterations done (loader workers running)."""
    deadline = time.monotonic() + TIMEOUT_S
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["iteration"] >= iterations:
            return
        assert time.monotonic() < deadline, "no progress in time"
    pytest.fail(f"the trainer ended before training: {proc.wait()} {proc.stderr.read()}")


def _assert_cancelled_with_checkpoint(run: Path, returncode: int, stderr: str) -> None:
    assert returncode == EXIT_CANCELLED, stderr
    cancelled = [r for r in read_log(run) if r["event"] == "cancelled"]
    assert len(cancelled) == 1, stderr
    found = find_latest_checkpoint(run)
    assert found is not None and Path(cancelled[0]["checkpoint"]) == found[0]
    assert load_checkpoint(found[0])["iteration"] == cancelled[0]["iteration"] >= 3


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_group_with_loader_workers_running_keeps_the_checkpoint(tmp_path, sig):
    """The panel's SIGTERM (and Ctrl-C's SIGINT) reach every process of the group, workers included."""
    proc, run = _start(tmp_path, workers=2)
    _wait_for_progress(proc)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert "DataLoader worker" not in err, err
    _assert_cancelled_with_checkpoint(run, proc.returncode, err)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_reader_going_away_is_a_cancel(tmp_path, workers):
    """Slicer quits mid-training: both pipes close, the next JSON line finds no reader."""
    proc, run = _start(tmp_path, workers=workers)
    _wait_for_progress(proc)
    proc.stdout.close()
    proc.stderr.close()
    returncode = proc.wait(timeout=TIMEOUT_S)
    _assert_cancelled_with_checkpoint(run, returncode, "(stderr closed)")
