"""Reliability: disk full / read-only folder during a checkpoint write, kills at random moments, determinism.

Faults are injected at a precise moment through the progress listener (it runs inside the training
loop): after the first checkpoint event the disk is filled, or the checkpoints folder becomes read-only.
Real faults are used when this machine allows mounts (a 64 KiB-page tmpfs, a read-only bind mount; CI
runs as root); otherwise the same errno is raised by the writer (monkeypatched ``os.replace``). Both
paths assert the same things.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, make_blob_dataset, tiny_config
from DTCCore.errors import DTCError
from DTCCore.model.checkpoint import (
    CHECKPOINT_DIR,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from DTCCore.model.network import build_network
from DTCCore.training.runlog import read_log
from DTCCore.training.trainer import train

KILL_MOMENTS = 2  # 1 SIGTERM + 1 SIGKILL (suite time); the bench (bench/reliability/reliability_soak.py) does 50


def _mount(args: list[str], allowed: bool = True) -> bool:
    return allowed and subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _fill(folder: Path, leave_bytes: int) -> None:
    """Fill the file system of ``folder`` until fewer than ``leave_bytes`` are free."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    size = (folder / "filler").stat().st_size
    os.truncate(folder / "filler", max(0, size - leave_bytes))


@pytest.fixture
def fault_run(tmp_path):
    """(manifest, run_dir on a mount point or not, mount flag); unmounts at the end."""
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=1, n_unlabeled=0)
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    yield manifest, mount_point
    subprocess.run(["umount", "-l", str(mount_point / "run" / CHECKPOINT_DIR)], capture_output=True)
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _checkpoint_size(tmp_path: Path) -> int:
    cfg = tiny_config()
    return save_checkpoint(tmp_path / "probe.pt", build_network(cfg.network), torch.optim.SGD(
        build_network(cfg.network).parameters(), lr=0.1, momentum=0.9), 0, cfg).stat().st_size


@pytest.mark.parametrize("mode", ["real", "simulated"])
@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
def test_checkpoint_write_fault_gives_a_clear_error_and_keeps_the_previous_checkpoint(
        tmp_path, fault_run, monkeypatch, fault, mode):
    """mode "real" uses a mount when this machine permits one, else falls back to the simulation."""
    manifest, disk = fault_run
    run = disk / "run"
    ckpt_dir = run / CHECKPOINT_DIR
    if fault == "disk-full":
        size_kib = 4 * (_checkpoint_size(tmp_path) // 1024) + 256  # room for the first checkpoint + logs
        real = _mount(["-t", "tmpfs", "-o", f"size={size_kib}k,nr_inodes=10000", "tmpfs", str(disk)], mode == "real")
    else:
        real = None  # decided when the folder exists (a bind mount needs it)
    expected_reason = os.strerror(errno.ENOSPC if fault == "disk-full" else errno.EROFS)
    armed = {"on": False}
    real_replace = os.replace

    real_mkstemp = tempfile.mkstemp

    def failing_replace(src, dst, *a, **k):  # a full disk fails the write of the temp file's data
        if Path(dst).parent == ckpt_dir:
            raise OSError(errno.ENOSPC, expected_reason)
        return real_replace(src, dst, *a, **k)

    def failing_mkstemp(*a, dir=None, **k):  # a read-only folder refuses to create the temp file
        if dir is not None and Path(dir) == ckpt_dir:
            raise OSError(errno.EROFS, expected_reason)
        return real_mkstemp(*a, dir=dir, **k)

    def inject(event: dict) -> None:
        nonlocal real
        if event["event"] != "checkpoint" or armed["on"]:
            return
        armed["on"] = True
        if fault == "disk-full" and real:
            _fill(disk, leave_bytes=16 * 1024)  # log lines still fit, a checkpoint does not
        elif fault == "read-only":
            real = _mount(["--bind", str(ckpt_dir), str(ckpt_dir)], mode == "real") and _mount(
                ["-o", "remount,bind,ro", str(ckpt_dir)])
        if not real and fault == "disk-full":
            monkeypatch.setattr(os, "replace", failing_replace)
        elif not real:
            monkeypatch.setattr(tempfile, "mkstemp", failing_mkstemp)

    with pytest.raises(DTCError) as info:
        train(tiny_config(iterations=4, checkpoint_every=2), manifest, run, progress=inject)
    message = str(info.value)
    assert "\n" not in message and str(ckpt_dir) in message and expected_reason in message, message
    assert ("free disk space" if fault == "disk-full" else "choose a writable folder") in message, message
    assert [it for it, _ in list_checkpoints(run)] == [2], "the previous checkpoint stays the newest"
    assert not [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")], "no temp file left"
    path, payload = find_latest_checkpoint(run)
    assert payload["iteration"] == 2 and path.name == "iter_000002.pt"
    assert not (run / "model.pt").exists()
    print(f"{fault}: {'real mount' if real else 'simulated errno'}")


def test_find_latest_checkpoint_ignores_stray_temp_files(tmp_path):
    cfg = tiny_config()
    model = build_network(cfg.network)
    save_checkpoint(tmp_path / CHECKPOINT_DIR / "iter_000002.pt", model, None, 2, cfg)
    # what a SIGKILL in the middle of a write leaves: the writer's temp file, never the final name
    (tmp_path / CHECKPOINT_DIR / ".iter_000004.pt.abc123.tmp").write_bytes(b"DTCCKPT1\n" + b"0" * 50)
    path, payload = find_latest_checkpoint(tmp_path)
    assert path.name == "iter_000002.pt" and payload["iteration"] == 2


def _start(manifest: Path, run: Path, cfg_file: Path, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "DTCCore", "train", str(manifest), "-o", str(run), "--config", str(cfg_file)]
    return subprocess.Popen(args + (["--resume"] if resume else []), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def kill_at_random_moment(manifest: Path, run: Path, cfg_file: Path, rng: random.Random, sig: int) -> str:
    """Start (or resume) a run, kill it with ``sig`` at a random moment, check the newest checkpoint.

    Returns what happened: "killed", or "finished" when the run ended before the kill. Shared with the bench.
    """
    proc = _start(manifest, run, cfg_file, resume=(run / "config.json").exists())
    done_before = sum(r["event"] == "progress" for r in read_log(run))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(r["event"] == "progress" for r in read_log(run)) <= done_before:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))  # somewhere in the training loop, often inside a checkpoint write
    outcome = "finished" if proc.poll() is not None else "killed"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if outcome == "killed" and sig == signal.SIGTERM and proc.returncode not in (0, -signal.SIGTERM):
        assert proc.returncode == 3 and "cancelled" in err, err  # a clean cancel: checkpoint, exit 3
    checkpoints = list_checkpoints(run)
    if checkpoints:
        load_checkpoint(checkpoints[0][1])  # the newest file by name must verify: never a broken one
    return outcome


def test_kills_at_random_moments_then_resume_finishes(tmp_path):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=1, n_unlabeled=1)
    cfg_file = tmp_path / "cfg.json"
    total = 400
    tiny_config(iterations=total, checkpoint_every=1, log_every=1).save(cfg_file)
    rng = random.Random(5)
    run = tmp_path / "run"
    for moment in range(KILL_MOMENTS):
        sig = signal.SIGTERM if moment % 2 == 0 else signal.SIGKILL
        assert kill_at_random_moment(manifest, run, cfg_file, rng, sig) == "killed"
    found = find_latest_checkpoint(run)
    assert found is not None and 0 < found[1]["iteration"] < total
    cfg = tiny_config(iterations=found[1]["iteration"] + 3, checkpoint_every=1)
    model = train(cfg, manifest, run, resume=True)
    assert load_checkpoint(model)["iteration"] == found[1]["iteration"] + 3


def test_two_runs_with_the_same_seed_give_identical_weights(tmp_path):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=1)
    a = load_checkpoint(train(tiny_config(iterations=3), manifest, tmp_path / "a"))["model"]
    b = load_checkpoint(train(tiny_config(iterations=3), manifest, tmp_path / "b"))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_checkpoint(train(tiny_config(iterations=3, seed=7), manifest, tmp_path / "c"))["model"]
    assert not all(torch.equal(a[k], c[k]) for k in a), "another seed must give other weights"
