"""The DTC trainer: the reference recipe, resumable, cancellable, with progress events.

``train(config, manifest, run_dir)`` runs ``config.train.iterations`` SGD steps on batches of
``labeled_batch`` labeled + ``unlabeled_batch`` unlabeled random crops and the losses of
:mod:`DTCCore.losses`. It writes into ``run_dir``: ``config.json``, ``log.jsonl`` (see
:mod:`DTCCore.runlog`), ``curves.png``, ``checkpoints/iter_XXXXXX.pt`` (every ``checkpoint_every``
iterations and on cancel) and, at the end, ``model.pt`` (weights + config, no optimizer state).

Determinism: the batch of iteration ``i`` depends only on ``(seed, rank, i)`` and the dropout RNG is
reseeded from ``(seed, rank, i)`` at every step, so a resumed run repeats an uninterrupted one exactly
on the CPU (with ``deterministic=True``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import checkpoint_path, find_latest_checkpoint, load_weights_into, save_checkpoint
from .config import DTCConfig
from .distributed import DistContext, current_context
from .errors import CancelledError, DTCError
from .runlog import Listener, RunLog

# model.pt gets recomputed BatchNorm statistics only when training ended at a learning rate above this:
# there the running averages lag the weights (LA, lr 0.01: eval Dice 0.02-0.63 on training crops, 0.65-0.82
# recomputed); after the reference's decay they are right and recomputing cost 0.02 Dice on 4 validation
# scans at lr 0.001 (our measurements, bench/RESULTS.md "BatchNorm statistics").
PRECISE_BN_ABOVE_LR = 1e-3
# --time-limit: iterations timed to fit the schedule (the first ones are warm-up: allocator, thread pools).
CALIBRATION_SKIP = 3
CALIBRATION_ITERATIONS = 12
# The budget is re-timed once, this fraction of the run after the first fit (other work on a shared CPU
# makes the first iterations unrepresentative: measured here, 4.4 vs 19.7 s per iteration for two runs
# started together), if that is before REFIT_BEFORE of the run (the first lr step is at 42 %).
REFIT_AFTER, REFIT_BEFORE = 0.15, 0.35
UNBOUNDED_ITERATIONS = 10**9  # batches a time-limited run may draw before its schedule is fitted
SEED_STRIDE = 1_000_003  # a prime: per-iteration seeds seed*stride + rank*7919 + i never collide in practice


def lr_at(iteration: int, config: DTCConfig) -> float:
    """Step schedule: ``lr * gamma^(number of steps passed)`` (reference: x0.1 every 2500 iterations)."""
    t = config.train
    return t.lr * t.lr_gamma ** sum(iteration >= s for s in t.lr_steps)


def fit_schedule(config: DTCConfig, iterations: int) -> None:
    """Scale the recipe's schedule to ``iterations`` in place (``--time-limit``).

    The learning-rate steps and the consistency ramp keep their places as fractions of the run (reference:
    x0.1 at 2500/6000 and 5000/6000, lambda full at 6000/6000), so a short run still decays its learning
    rate and reaches full consistency weight. Sets ``train.schedule_fitted`` so a resume keeps it.
    """
    t = config.train
    iterations = max(1, int(iterations))
    scale = iterations / t.iterations
    t.lr_steps = tuple(max(1, int(round(s * scale))) for s in t.lr_steps)
    config.recipe.ramp_unit = max(1, int(round(config.recipe.ramp_unit * scale)))
    t.iterations = iterations
    t.schedule_fitted = True


def iterations_in_budget(limit_s: float, elapsed_s: float, done: int, seconds_per_iteration: float,
                         reserve_s: float) -> int:
    """Total iterations of a run that has used ``elapsed_s`` of ``limit_s`` for ``done`` iterations and
    runs ``seconds_per_iteration`` from now on, keeping ``reserve_s`` for the final save. At least ``done + 1``."""
    left = limit_s - elapsed_s - reserve_s
    return max(done + 1, done + int(left // max(seconds_per_iteration, 1e-9)))


class _CancelFlag:
    """Set by SIGINT/SIGTERM (main thread only) or by a cancel callback."""

    def __init__(self, cancel: Callable[[], bool] | None) -> None:
        self.cancel = cancel
        self.signalled = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_CancelFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def is_set(self) -> bool:
        return self.signalled or bool(self.cancel and self.cancel())


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse a run folder that cannot be used, before anything is read or written (no partial output)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise DTCError(f"run folder {run_dir} is a file; choose a folder name")
    has_run = (run_dir / "config.json").exists() or (run_dir / "model.pt").exists()
    if has_run and not resume:
        raise DTCError(f"{run_dir} already holds a training run; add --resume to continue it or choose another -o folder")
    ancestor = run_dir.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DTCError(f"cannot create run folder {run_dir}: {ancestor} is a file; choose another folder")
    if not os.access(ancestor, os.W_OK):
        raise DTCError(f"cannot write to run folder {run_dir} ({ancestor} is read-only); choose a writable folder")


def _create_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DTCError(f"cannot write to run folder {run_dir} ({exc.strerror}); choose a writable folder") from None


def _precise_bn(model: torch.nn.Module, batches, device: torch.device, amp: bool) -> torch.nn.Module:
    """A copy of ``model`` with BatchNorm statistics recomputed for its final weights (see precise_bn.py)."""
    import copy

    from .precise_bn import recompute_batchnorm_stats

    final = copy.deepcopy(model)
    images = (batches[i]["image"].to(device) for i in batches.indices())
    recompute_batchnorm_stats(final, images, torch.bfloat16 if amp else None)
    return final


def train(
    config: DTCConfig,
    manifest_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    cancel: Callable[[], bool] | None = None,
    progress: Listener | None = None,
) -> Path:
    """Train a dual-task VNet; return the path of ``model.pt``.

    ``cancel`` is polled every iteration (in-process use); SIGINT/SIGTERM do the same in the main
    thread. On cancel a checkpoint is written and :class:`CancelledError` raised. ``progress``
    receives every event dict (see :mod:`DTCCore.runlog`; rank 0 only under torchrun). Bad inputs
    raise DTCError before anything is written to ``run_dir``.
    """
    config.validate()
    ctx: DistContext = current_context(config.train.device)
    try:
        return _train(ctx, config, manifest_path, Path(run_dir), resume, init_from, cancel, progress)
    finally:
        ctx.close()


def _train(ctx: DistContext, config: DTCConfig, manifest_path, run_dir: Path, resume: bool, init_from,
           cancel: Callable[[], bool] | None, progress: Listener | None) -> Path:
    from .data import TrainBatches, load_cases, make_loader
    from .inference import resolve_device
    from .losses import compute_losses
    from .manifest import load_manifest
    from .network import build_network

    t_begin = time.monotonic()
    t_cfg = config.train
    notes: list[str] = []
    if ctx.active and t_cfg.sync_batchnorm and (ctx.device is None or ctx.device.type != "cuda"):
        raise DTCError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm is GPU-only); drop it for CPU processes")


    # Resume: rank 0's newest valid checkpoint decides the starting iteration, config and weights.
    def find() -> tuple[Path, dict[str, Any]] | None:
        if not ctx.is_main:
            return None
        _check_run_dir(run_dir, resume)
        found = find_latest_checkpoint(run_dir, warn=notes.append) if resume else None
        if resume and found is None:
            notes.append(f"no checkpoint in {run_dir}; starting from the beginning")
        return found

    found = ctx.broadcast(ctx.check(find))
    start = 0
    if found is not None:
        saved: DTCConfig = found[1]["config"]
        if not saved.train.schedule_fitted:
            saved.train.iterations = t_cfg.iterations  # allow extending a run; everything else is the run's
        for launch_setting in ("device", "num_workers", "sync_batchnorm"):  # how this launch runs, not the recipe
            setattr(saved.train, launch_setting, getattr(t_cfg, launch_setting))
        config, t_cfg = saved, saved.train
        start = int(found[1]["iteration"])

    def read_inputs():
        manifest = load_manifest(manifest_path)
        return load_cases(manifest, config.network.num_classes, progress=None, spacing=config.plan.spacing)

    labeled, unlabeled = ctx.check(read_inputs)  # every rank reads the data: the same error on all ranks
    if config.recipe.mode != "dtc":  # the ablations without consistency never look at unlabeled data
        unlabeled = []
    device = ctx.device if ctx.device is not None else resolve_device(t_cfg.device)
    if t_cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch size: autotuning pays off (DESIGN.md section 5)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(t_cfg.seed)
    model = build_network(config.network).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=t_cfg.lr, momentum=t_cfg.momentum, weight_decay=t_cfg.weight_decay)
    if found is not None:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in found[1]["model"].items()})
        if found[1]["optimizer"] is not None:
            optimizer.load_state_dict(found[1]["optimizer"])
        notes.append(f"resuming from {found[0].name} at iteration {start}")
    elif init_from is not None:
        ctx.check(lambda: load_weights_into(model, init_from))
        notes.append(f"fine-tuning from {init_from}")
    ctx.check(lambda: _create_run_dir(run_dir) if ctx.is_main else None)
    log = RunLog(run_dir, progress if ctx.is_main else None, write=ctx.is_main)
    if found is not None:
        log.records = [r for r in log.records if r.get("iteration", 0) <= start]
    for note in notes:
        log.message(note)
    if ctx.is_main:
        config.save(run_dir / "config.json")

    train_model = ctx.wrap(model, config)  # DDP broadcasts rank 0's weights and buffers to every rank

    fitting = t_cfg.time_limit_minutes is not None and not t_cfg.schedule_fitted
    dataset = TrainBatches(
        labeled, unlabeled, t_cfg, config.recipe, seed=t_cfg.seed, rank=ctx.rank, start_iteration=start,
        num_iterations=UNBOUNDED_ITERATIONS if fitting else max(0, t_cfg.iterations - start),
    )
    loader = make_loader(dataset, t_cfg.num_workers, pin_memory=device.type == "cuda")
    amp = t_cfg.amp and device.type == "cuda"
    log.emit("start", total=t_cfg.iterations, start_iteration=start, device=str(device), labeled=len(labeled),
             unlabeled=len(unlabeled), world_size=ctx.world_size)

    n_lab = t_cfg.labeled_batch
    t0, iteration = time.monotonic(), start
    last_saved = start if found is not None else -1
    last_saved_time = time.monotonic()
    calibration_t0 = 0.0
    refit: tuple[int, int, float] | None = None  # (iteration to re-time at, iteration of the fit, its time)
    extra = {"labeled": len(labeled), "unlabeled": len(unlabeled), "manifest": str(manifest_path),
             "world_size": ctx.world_size}
    loss_keys = ("total", "dice", "lsf", "consistency")

    def save(it: int) -> Path:
        """Rank 0 writes; a failure (disk full, read-only) raises DTCError on every rank."""
        path = checkpoint_path(run_dir, it)
        ctx.check(lambda: save_checkpoint(path, model, optimizer, it, config, {**extra, "iterations_done": it})
                  if ctx.is_main else None)
        log.emit("checkpoint", iteration=it, path=str(path))
        return path

    with _CancelFlag(cancel) as flag:
        model.train()
        for batch in loader:
            if ctx.any(flag.is_set()):
                path = save(iteration) if last_saved != iteration else checkpoint_path(run_dir, iteration)
                log.emit("cancelled", iteration=iteration, checkpoint=str(path))
                log.close()
                raise CancelledError(f"training cancelled at iteration {iteration}; resume with --resume ({path.name} kept)")
            lr = lr_at(iteration, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(t_cfg.seed * SEED_STRIDE + ctx.rank * 7919 + iteration)  # dropout RNG, resumable
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            sdf = batch["sdf"].to(device, non_blocking=True)
            if device.type == "cuda":
                image = image.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                seg, lsf = train_model(image)
            losses = compute_losses(seg.float(), lsf.float(), label, sdf, n_lab, iteration, config.recipe)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            iteration += 1
            if fitting and iteration - start == CALIBRATION_SKIP:
                calibration_t0 = time.monotonic()
            if fitting and iteration - start == CALIBRATION_SKIP + CALIBRATION_ITERATIONS:
                per_iteration = (time.monotonic() - calibration_t0) / CALIBRATION_ITERATIONS
                reserve = 5.0 + t_cfg.precise_bn_batches * per_iteration / 2  # final save + BatchNorm pass
                total = ctx.broadcast(iterations_in_budget(
                    t_cfg.time_limit_minutes * 60.0, time.monotonic() - t_begin, iteration, per_iteration, reserve))
                fit_schedule(config, total)
                fitting = False
                log.message(f"time limit {t_cfg.time_limit_minutes:g} min: {per_iteration:.2f} s per iteration, "
                            f"{total} iterations (lr steps at {', '.join(map(str, t_cfg.lr_steps))})")
                again = iteration + max(CALIBRATION_ITERATIONS, int(REFIT_AFTER * total))
                refit = (again, iteration, time.monotonic()) if again < REFIT_BEFORE * total else None
            elif refit is not None and iteration == refit[0]:
                per_iteration = (time.monotonic() - refit[2]) / (iteration - refit[1])
                reserve = 5.0 + t_cfg.precise_bn_batches * per_iteration / 2
                total = ctx.broadcast(iterations_in_budget(
                    t_cfg.time_limit_minutes * 60.0, time.monotonic() - t_begin, iteration, per_iteration, reserve))
                fit_schedule(config, total)
                refit = None
                log.message(f"time limit re-timed: {per_iteration:.2f} s per iteration, {total} iterations "
                            f"(lr steps at {', '.join(map(str, t_cfg.lr_steps))})")
            if ctx.any(not bool(torch.isfinite(losses["total"]))):
                # No checkpoint of the diverged weights: the newest checkpoint stays the last good one.
                log.close()
                raise DTCError(f"the loss became {losses['total'].item()} at iteration {iteration}; "
                               "lower the learning rate (the last good checkpoint is kept)")
            if iteration % t_cfg.log_every == 0 or iteration == t_cfg.iterations:
                elapsed = time.monotonic() - t0
                done = iteration - start
                values = ctx.mean(torch.stack([losses[k].detach() for k in loss_keys]))  # global-batch mean
                log.emit(
                    "progress", iteration=iteration, total=t_cfg.iterations,
                    losses={k: float(v) for k, v in zip(loss_keys, values)},
                    lr=lr, **{"lambda": float(losses["lambda"])},
                    elapsed_s=round(elapsed, 3), eta_s=round(elapsed / done * (t_cfg.iterations - iteration), 1),
                )
            due = time.monotonic() - last_saved_time > t_cfg.checkpoint_minutes * 60.0
            if (iteration % t_cfg.checkpoint_every == 0 or ctx.any(due)) and iteration < t_cfg.iterations:
                save(iteration)
                last_saved, last_saved_time = iteration, time.monotonic()
            if iteration >= t_cfg.iterations and not fitting:
                break

    final = save(t_cfg.iterations) if last_saved != t_cfg.iterations else checkpoint_path(run_dir, iteration)
    model_path = run_dir / "model.pt"
    final_model = model
    if ctx.is_main and t_cfg.precise_bn_batches > 0 and lr_at(iteration - 1, config) > PRECISE_BN_ABOVE_LR:
        final_model = _precise_bn(model, TrainBatches(
            labeled, unlabeled, t_cfg, config.recipe, seed=t_cfg.seed, rank=ctx.rank, start_iteration=iteration,
            num_iterations=t_cfg.precise_bn_batches), device, amp)
    ctx.check(lambda: save_checkpoint(model_path, final_model, None, iteration, config, {
        **extra, "iterations_done": iteration, "train_seconds": round(time.monotonic() - t0, 1)}) if ctx.is_main else None)
    log.emit("done", iteration=iteration, model=str(model_path), checkpoint=str(final),
             elapsed_s=round(time.monotonic() - t0, 3))
    log.close()
    return model_path
