"""Distributed training under torchrun (gloo, 2 CPU processes): completion, rank-0-only output, resume on
1 process, the loss trajectory of a 1-process run with the same global batch, cancel, errors without hangs.

What can match and what cannot: with rank-seeded random crops and augmentation, 2 processes see other
batches than 1 process, so trajectories differ by design. For the comparison the data is made
deterministic: 1 labeled + 1 unlabeled volume of exactly the patch size (the crop is the whole volume),
augmentation and dropout off. Then 2 x (1 labeled + 1 unlabeled) and 1 x (2 + 2) hold the same items,
BatchNorm statistics are equal (duplicated items do not change a mean or a biased variance, so plain
BatchNorm is enough: SyncBatchNorm is GPU-only) and DDP's gradient average equals the 1-process gradient
up to float rounding. Rounding differs (other reduction orders in the convolutions, 1 thread per
torchrun process) and training amplifies it, so iteration 1 matches to ~1e-7 and later iterations drift.
Measured on 6 iterations: |delta total loss| 0, 6e-8, 4e-6, 6e-5, 3e-4, 6e-4; a 1-process run with
batch 1 + 1 (same items, so the same mathematics) drifts from the 2 + 2 run by the same amounts, which
shows the drift is rounding, not a DDP error. The tolerances below are ~3x the measured drift.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, make_blob_dataset, tiny_config
from DTCCore.model.checkpoint import find_latest_checkpoint, load_checkpoint
from DTCCore.training.runlog import read_log
from DTCCore.training.trainer import train

PATCH = (32, 32, 16)  # == the volume size: the random crop is the whole volume
FIRST_ITERATION_TOL = 1e-6  # measured 0: same items, same initial weights, one step of rounding at most
TRAJECTORY_TOL = 2e-3  # measured max 6.1e-4 over 6 iterations (total loss ~1.0); see the module docstring
WEIGHTS_TOL = 0.05  # measured max |delta weight| 0.011 after 6 iterations
TIMEOUT_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], log_dir: Path, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "--log-dir", str(log_dir), "--redirects", "3", "-m", "DTCCore", "train", *args]
    # Both processes run on this host: gloo talks over loopback, whatever other interfaces the machine has (with eth0
    # up here, gloo's own pick made rank 1 abort with SIGABRT at start, 2026-12-08).
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def _rank_output(log_dir: Path, rank: int) -> str:
    files = sorted(log_dir.rglob(f"attempt_0/{rank}/std*.log"))
    assert files, f"no torchrun log for rank {rank} in {log_dir}"
    return "".join(f.read_text() for f in files)


def _comparison_config(per_process_batch: int, iterations: int):
    cfg = tiny_config(iterations=iterations, labeled_batch=per_process_batch, unlabeled_batch=per_process_batch,
                      augment=False, checkpoint_every=3)
    cfg.network.dropout = False
    cfg.recipe.k = 10.0  # a softer T^-1 than 1500 keeps rounding from being amplified as fast (same test value)
    return cfg


def _losses(run_dir: Path) -> list[dict[str, float]]:
    return [r["losses"] for r in read_log(run_dir) if r["event"] == "progress"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One 2-process run (6 iterations), shared by the tests below."""
    root = tmp_path_factory.mktemp("ddp")
    manifest = make_blob_dataset(root / "data", n_labeled=1, n_unlabeled=1, shape=PATCH)
    _comparison_config(1, 6).save(root / "cfg.json")
    proc = _torchrun([str(manifest), "-o", str(root / "run2"), "--config", str(root / "cfg.json")], root / "logs")
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    return root, manifest, proc.returncode, out


def test_two_process_run_completes_and_only_rank0_writes_or_prints(ddp_run):
    root, _, rc, out = ddp_run
    assert rc == 0, out
    run = root / "run2"
    assert (run / "model.pt").exists() and (run / "curves.png").exists()
    start = [r for r in read_log(run) if r["event"] == "start"]
    assert len(start) == 1 and start[0]["world_size"] == 2, "rank 1 must not write log.jsonl"
    assert [it for it, in [(r["iteration"],) for r in read_log(run) if r["event"] == "checkpoint"]] == [3, 6]
    assert "training on cpu" in _rank_output(root / "logs", 0)
    assert _rank_output(root / "logs", 1).strip() == "", "rank 1 must print nothing"
    assert load_checkpoint(run / "model.pt")["extra"]["world_size"] == 2


def test_loss_trajectory_matches_one_process_with_the_same_global_batch(ddp_run, tmp_path):
    root, manifest, rc, out = ddp_run
    assert rc == 0, out
    single = train(_comparison_config(2, 6), manifest, tmp_path / "run1")
    a, b = _losses(root / "run2"), _losses(tmp_path / "run1")
    assert len(a) == len(b) == 6
    assert abs(a[0]["total"] - b[0]["total"]) <= FIRST_ITERATION_TOL
    drift = max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)
    assert drift <= TRAJECTORY_TOL, (a, b)
    assert b[-1]["total"] != b[0]["total"], "the losses must change, or the comparison proves nothing"
    # the last training checkpoints (model.pt may get BatchNorm statistics recomputed on rank 0's batches only)
    last = "checkpoints/iter_000006.pt"
    wa, wb = load_checkpoint(root / "run2" / last)["model"], load_checkpoint(single.parent / last)["model"]
    assert max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) <= WEIGHTS_TOL


def test_two_process_checkpoint_resumes_on_one_process(ddp_run):
    root, manifest, rc, out = ddp_run
    assert rc == 0, out
    events = []
    model = train(_comparison_config(1, 8), manifest, root / "run2", resume=True, progress=events.append)
    assert any("resuming from iter_000006.pt at iteration 6" in e.get("text", "") for e in events)
    assert [e["iteration"] for e in events if e["event"] == "progress"] == [7, 8]
    payload = load_checkpoint(model)
    assert payload["iteration"] == 8 and payload["extra"]["world_size"] == 1


def test_sigterm_to_the_torchrun_group_cancels_every_rank_with_a_checkpoint(tmp_path):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=1)
    tiny_config(iterations=500, checkpoint_every=1000).save(tmp_path / "cfg.json")
    run = tmp_path / "run"
    proc = _torchrun([str(manifest), "-o", str(run), "--config", str(tmp_path / "cfg.json")], tmp_path / "logs",
                     start_new_session=True)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and sum(r["event"] == "progress" for r in read_log(run)) < 2:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    cancelled = [r for r in read_log(run) if r["event"] == "cancelled"]
    assert len(cancelled) == 1, out
    path, payload = find_latest_checkpoint(run)
    assert payload["iteration"] == cancelled[0]["iteration"] >= 2 and path.name == Path(cancelled[0]["checkpoint"]).name
    assert "cancelled: training cancelled" in _rank_output(tmp_path / "logs", 0)


def test_a_bad_input_stops_both_ranks_quickly_without_output(tmp_path):
    manifest = make_blob_dataset(tmp_path / "data", n_labeled=1, n_unlabeled=0)
    (tmp_path / "data" / "case0_label.nrrd").unlink()
    tiny_config(iterations=2).save(tmp_path / "cfg.json")
    proc = _torchrun([str(manifest), "-o", str(tmp_path / "run"), "--config", str(tmp_path / "cfg.json")],
                     tmp_path / "logs")
    out, _ = proc.communicate(timeout=90)  # a hang would time out here
    assert proc.returncode != 0
    for rank in (0, 1):
        text = _rank_output(tmp_path / "logs", rank)
        assert "Traceback" not in text and "missing file(s)" in text, text
    assert not (tmp_path / "run").exists(), "nothing may be written for a bad input"


def test_sync_bn_flag_reaches_the_config_and_is_refused_on_cpu_processes(tmp_path, monkeypatch):
    from DTCCore.cli import build_parser
    from DTCCore.cli.train import build_config
    from DTCCore.training.distributed import DistContext

    args = build_parser().parse_args(["train", "m.json", "-o", "r", "--sync-bn"])
    assert build_config(args).train.sync_batchnorm is True
    assert build_config(build_parser().parse_args(["train", "m.json", "-o", "r"])).train.sync_batchnorm is False
    import DTCCore.training.trainer as trainer_module
    from DTCCore.errors import DTCError

    fake = DistContext(rank=0, world_size=2, device=torch.device("cpu"))
    monkeypatch.setattr(trainer_module, "current_context", lambda device: fake)
    cfg = tiny_config(iterations=1, sync_batchnorm=True)
    with pytest.raises(DTCError, match="--sync-bn needs CUDA"):
        train(cfg, tmp_path / "m.json", tmp_path / "run")
    assert not (tmp_path / "run").exists()
