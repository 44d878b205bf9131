"""The DTC trainer: the reference recipe, resumable, cancellable, with progress events.

``train(config, manifest, run_dir)`` runs ``config.train.iterations`` SGD steps on batches of
``labeled_batch`` labeled + ``unlabeled_batch`` unlabeled random crops and the losses of
:mod:`DTCCore.model.losses`. It writes into ``run_dir``: ``config.json``, ``log.jsonl`` (see
:mod:`DTCCore.training.runlog`), ``curves.png``, ``checkpoints/iter_XXXXXX.pt`` (every ``checkpoint_every``
iterations and on cancel) and, at the end, ``model.pt`` (weights + config, no optimizer state).

The copy-paste modes ("copy-paste", "copy-paste-teacher") take the same batches through their own step
(copypaste_step.py); the teacher of "copy-paste-teacher" is saved in the checkpoints (teacher.py), and a
time limit is fitted over its two stages (two_stage_budget.py).

Determinism: the batch of iteration ``i`` depends only on ``(seed, rank, i)`` and the dropout RNG is
reseeded from ``(seed, rank, i)`` at every step, so a resumed run repeats an uninterrupted one exactly
on the CPU (with ``deterministic=True``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import COPY_PASTE_MODES, TEACHER_MODE, UNLABELED_MODES, DTCConfig, check_batchnorm_batch, lr_in_stage2
from ..errors import CancelledError, DTCError
from ..model.checkpoint import (
    checkpoint_path,
    find_latest_checkpoint,
    float32_state,
    load_weights_into,
    save_checkpoint,
)
from ..planning.extent import EXTENT_KEY, manifest_training_extent
from ..protocol import LOSS_NAMES, OPTIONAL_LOSS_NAMES, Event
from ..runtime.precision import autocast, autocast_dtype, describe_precision
from .cancel_flag import CancelFlag
from .distributed import DistContext, current_context
from .runlog import Listener, RunLog
from .schedule import UNBOUNDED_ITERATIONS, TimeBudget, lr_at

# model.pt gets recomputed BatchNorm statistics only when training ended at a learning rate above this:
# there the running averages lag the weights (LA, lr 0.01: eval Dice 0.02-0.63 on training crops, 0.65-0.82
# recomputed); after the reference's decay they are right and recomputing cost 0.02 Dice on 4 validation
# scans at lr 0.001 (our measurements, bench/RESULTS.md "BatchNorm statistics").
PRECISE_BN_ABOVE_LR = 1e-3
SEED_STRIDE = 1_000_003  # a prime: per-iteration seeds seed*stride + rank*7919 + i never collide in practice
RANK_SEED_STRIDE = 7919  # a prime: each rank's dropout stream differs
BF16_REDONE_KEY = "bf16_steps_redone_in_fp32"  # metadata key: bf16 steps with non-finite gradients, redone
REDO_REPORT_EVERY = 100  # our choice: a log line for the 1st, 100th, 200th... redone step, not one per step


def on_main(ctx: DistContext, fn: Callable[[], Any]) -> None:
    """Run ``fn`` on rank 0 only; if it fails there, every rank raises (no rank left waiting)."""
    ctx.check(lambda: fn() if ctx.is_main else None)


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse a run folder that cannot be used, before anything is read or written (no partial output)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise DTCError(f"run folder {run_dir} is a file; choose a folder name")
    has_run = (run_dir / "config.json").exists() or (run_dir / "model.pt").exists()
    if has_run and not resume:
        raise DTCError(f"{run_dir} already holds a training run; "
                       "add --resume to continue it or choose another -o folder")
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


def _precise_bn(model: torch.nn.Module, batches, device: torch.device, amp: torch.dtype | None) -> torch.nn.Module:
    """A copy of ``model`` with BatchNorm statistics recomputed for its final weights (see model/batchnorm.py)."""
    import copy

    from ..model.batchnorm import recompute_batchnorm_stats

    final = copy.deepcopy(model)
    images = (batches[i]["image"].to(device) for i in batches.indices())
    recompute_batchnorm_stats(final, images, amp)
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
    receives every event dict (see :mod:`DTCCore.training.runlog`; rank 0 only under torchrun). Bad inputs
    raise DTCError before anything is written to ``run_dir``.
    """
    config.validate()
    ctx: DistContext = current_context(config.train.device)
    try:
        run = _prepare(ctx, config, manifest_path, Path(run_dir), resume, init_from, progress)
        _loop(run, cancel)
        return _finish(run)
    finally:
        ctx.close()


@dataclass
class _Run:
    """Everything the steps of one training run share."""

    ctx: DistContext
    config: DTCConfig
    run_dir: Path
    model: torch.nn.Module  # the bare network (what checkpoints hold)
    train_model: torch.nn.Module  # the same, wrapped for DistributedDataParallel when distributed
    optimizer: torch.optim.Optimizer
    log: RunLog
    device: torch.device
    labeled: list
    unlabeled: list
    start: int
    began: float
    iteration: int = 0
    last_saved: int = -1
    extra: dict[str, Any] = field(default_factory=dict)
    teacher: torch.nn.Module | None = None  # "copy-paste-teacher" in stage 2: the EMA teacher (teacher.py)
    stage2_clock: tuple[float, int] | None = None  # (monotonic time, iteration) when this launch began stage 2
    gate_waited: int = -1  # the last iteration whose stage-2 gate check kept the teacher waiting (copypaste_step.py)

    @property
    def amp(self) -> torch.dtype | None:
        """The forward passes' autocast dtype (train.precision on this device, runtime/precision.py), None for fp32."""
        return autocast_dtype(self.config.train.precision, self.device, training=True)


def _prepare(ctx: DistContext, config: DTCConfig, manifest_path, run_dir: Path, resume: bool, init_from,
             progress: Listener | None) -> _Run:
    """Resume state, data, backend, model and optimizer, run folder and log: everything before step 1."""
    began = time.monotonic()
    if ctx.active and config.train.sync_batchnorm and (ctx.device is None or ctx.device.type != "cuda"):
        raise DTCError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm is GPU-only); drop it for CPU processes")
    notes: list[str] = []
    found = _resume_state(ctx, run_dir, resume, notes)
    start = 0
    if found is not None:
        config, start = _resumed_config(found[1]["config"], config, notes), int(found[1]["iteration"])
    else:
        config.train.stage2_began = None  # a new run has no teacher yet, whatever config it was given
    _check_batch(config, manifest_path)  # before the data are read: a refusal in seconds
    labeled, unlabeled = _read_data(ctx, config, manifest_path)
    notes += _patch_notes(config, [c.image.shape for c in labeled + unlabeled])
    if config.network.dims == 2:
        notes.append(f"2-D network: in-plane convolutions, {config.train.patch[2]} slices per crop "
                     f"({config.train.patch[0]}x{config.train.patch[1]}), each slice's own level set")
    device = _backend(ctx, config)
    model, optimizer = _model_and_optimizer(ctx, config, device, found, init_from, notes)
    on_main(ctx, lambda: _create_run_dir(run_dir))
    log = RunLog(run_dir, progress if ctx.is_main else None, write=ctx.is_main)
    if found is not None:
        log.records = [r for r in log.records if r.get("iteration", 0) <= start]
    for note in notes:
        log.message(note)
    on_main(ctx, lambda: config.save(run_dir / "config.json"))
    extra = {"labeled": len(labeled), "unlabeled": len(unlabeled), "manifest": str(manifest_path),
             "world_size": ctx.world_size, EXTENT_KEY: manifest_training_extent(manifest_path)}
    teacher = None
    if found is not None and found[1].get("teacher") is not None:
        from .teacher import restore_teacher

        teacher = restore_teacher(model, found[1]["teacher"])
        if teacher is not None and config.train.stage2_began is None:  # saved before train.stage2_began existed:
            from .copypaste_step import stage2_start  # its teacher started at the fraction (unless gated)

            config.train.stage2_began = stage2_start(config)
    return _Run(ctx, config, run_dir, model, ctx.wrap(model, config), optimizer, log, device, labeled, unlabeled,
                start, began, iteration=start, last_saved=start if found is not None else -1, extra=extra,
                teacher=teacher)


def _resume_state(
    ctx: DistContext, run_dir: Path, resume: bool, notes: list[str]
) -> tuple[Path, dict[str, Any]] | None:
    """Rank 0's newest valid checkpoint (decides the starting iteration, config and weights), on every rank."""
    def find() -> tuple[Path, dict[str, Any]] | None:
        if not ctx.is_main:
            return None
        _check_run_dir(run_dir, resume)
        found = find_latest_checkpoint(run_dir, warn=notes.append) if resume else None
        if resume and found is None:
            notes.append(f"no checkpoint in {run_dir}; starting from the beginning")
        return found

    return ctx.broadcast(ctx.check(find))


def _resumed_config(saved: DTCConfig, asked: DTCConfig, notes: list[str]) -> DTCConfig:
    """The run's own config, with what belongs to this launch (device, workers, SyncBatchNorm) taken from
    ``asked``; ``iterations`` too (extending a run), unless the run's schedule was fitted (to a time limit
    or to ``--iterations``) or its lr steps were placed in a stage 2 that has begun (recipe.cp_lr_in_stage2): then a
    note says that an asked, different length is not applied."""
    moved = saved.recipe.mode == TEACHER_MODE and lr_in_stage2(saved) and saved.train.stage2_began is not None
    asked_length = asked.train.iterations != saved.train.iterations and (
        not saved.train.schedule_fitted or asked.train.schedule_fitted)
    if asked_length and moved:
        notes.append(f"this run's lr steps fall in its stage 2, from iteration {saved.train.stage2_began} to "
                     f"{saved.train.iterations}; --iterations {asked.train.iterations} is not applied on --resume "
                     "(it would move steps already passed): to train longer, start a new run with --init-from its "
                     "model")
    elif asked_length and not saved.train.schedule_fitted:
        saved.train.iterations = asked.train.iterations
    elif asked_length:
        notes.append(f"this run's schedule is fitted to {saved.train.iterations} iterations (lr steps at "
                     f"{', '.join(map(str, saved.train.lr_steps))}); --iterations {asked.train.iterations} is not "
                     "applied on --resume: to train longer, start a new run with --init-from its model")
    for launch_setting in ("device", "num_workers", "sync_batchnorm"):
        setattr(saved.train, launch_setting, getattr(asked.train, launch_setting))
    return saved


def _check_batch(config: DTCConfig, manifest_path) -> None:
    """config.check_batchnorm_batch with the manifest's unlabeled scans (an unreadable manifest is _read_data's)."""
    from ..data.manifest import load_manifest

    try:
        has_unlabeled = bool(load_manifest(manifest_path, check_files=False).unlabeled)
    except DTCError:
        return
    check_batchnorm_batch(config, has_unlabeled)


def _read_data(ctx: DistContext, config: DTCConfig, manifest_path) -> tuple[list, list]:
    """Every rank reads (and resamples to the plan's spacing) the data: the same error on all ranks."""
    from ..data.manifest import load_manifest
    from .batches import load_cases

    labeled, unlabeled = ctx.check(lambda: load_cases(load_manifest(manifest_path), config.network.num_classes,
                                                      progress=None, spacing=config.plan.spacing,
                                                      dims=config.network.dims))
    if config.recipe.mode not in UNLABELED_MODES:  # the labeled-only modes never look at unlabeled data
        unlabeled = []
    elif config.recipe.mode == TEACHER_MODE and not unlabeled:
        raise DTCError(f"--mode {TEACHER_MODE} learns from unlabeled scans and the manifest has none; add some to "
                       "its \"unlabeled\" list, or train labeled-only with --mode copy-paste")
    return labeled, unlabeled


def _patch_notes(config: DTCConfig, shapes: list[tuple[int, ...]]) -> list[str]:
    """A hint when the patch is longer than every training scan (on the model grid) along an axis by a whole
    size multiple or more: every crop is padded there, e.g. a 112x112x80 patch over 10-slice cardiac scans
    costs 8x the compute of 112x112x12."""
    from ..planning.pools import fit_patch

    patch = tuple(int(v) for v in config.train.patch)
    largest = [max(int(s[axis]) for s in shapes) for axis in range(3)]
    fitted = fit_patch(patch, config.network.pools, largest)
    if fitted == patch:
        return []
    axes = [axis for axis in range(3) if patch[axis] != fitted[axis]]
    return [f"patch {'x'.join(map(str, patch))} is longer than every training scan along "
            + ", ".join(f"{'xyz'[a]} (largest {largest[a]} voxels)" for a in axes)
            + f": every crop is padded there; --patch {' '.join(map(str, fitted))} covers the largest scan "
            "at less cost"]


def _backend(ctx: DistContext, config: DTCConfig) -> torch.device:
    """The device, and the determinism / cuDNN / TF32 settings for it."""
    from ..runtime.devices import resolve_device

    device = ctx.device if ctx.device is not None else resolve_device(config.train.device)
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        # Fixed patch size: cuDNN autotuning pays off; TF32 matmuls (measured on an H200: 901 -> 531 ms per
        # reference iteration with benchmark + TF32).
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _model_and_optimizer(ctx: DistContext, config: DTCConfig, device: torch.device, found, init_from,
                         notes: list[str]) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The network (fresh, resumed or fine-tuned from ``init_from``) and its SGD optimizer."""
    from ..model.network import build_network

    t = config.train
    torch.manual_seed(t.seed)
    model = build_network(config.network).to(device)
    if device.type == "cuda":
        # Module.to takes memory_format at run time; torch's type overloads leave it out
        model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if found is not None:
        model.load_state_dict(float32_state(found[1]["model"]))
        if found[1]["optimizer"] is not None:
            optimizer.load_state_dict(found[1]["optimizer"])
        notes.append(f"resuming from {found[0].name} at iteration {found[1]['iteration']}")
    elif init_from is not None:
        ctx.check(lambda: load_weights_into(model, init_from))
        notes.append(f"fine-tuning from {init_from}")
    return model, optimizer


def _save(run: _Run, iteration: int) -> Path:
    """Checkpoint ``iteration`` (rank 0 writes; a failure such as a full disk raises on every rank)."""
    path = checkpoint_path(run.run_dir, iteration)
    on_main(run.ctx, lambda: save_checkpoint(path, run.model, run.optimizer, iteration, run.config,
                                             {**run.extra, "iterations_done": iteration}, teacher=run.teacher))
    run.log.emit(Event.CHECKPOINT, iteration=iteration, path=str(path))
    run.last_saved = iteration
    return path


def _loop(run: _Run, cancel: Callable[[], bool] | None) -> None:
    """The training iterations: cancel check, one step, schedule fitting, progress event, checkpoints."""
    from .batches import TrainBatches, make_loader

    t, ctx = run.config.train, run.ctx
    if run.config.recipe.mode == TEACHER_MODE:  # two stages of different cost (two_stage_budget.py)
        from .two_stage_budget import TwoStageBudget

        budget: Any = TwoStageBudget(run.config, run.began, run.start, agree=ctx.broadcast, say=run.log.message,
                                     in_stage2=lambda: run.teacher is not None)
    else:
        budget = TimeBudget(run.config, run.began, run.start, agree=ctx.broadcast, say=run.log.message)
    dataset = TrainBatches(run.labeled, run.unlabeled, t, run.config.recipe, seed=t.seed, rank=ctx.rank,
                           start_iteration=run.start,
                           num_iterations=UNBOUNDED_ITERATIONS if budget.active else max(0, t.iterations - run.start))
    loader = make_loader(dataset, t.num_workers, pin_memory=run.device.type == "cuda")
    run.log.emit(Event.START, total=t.iterations, start_iteration=run.start, device=str(run.device),
                 precision=describe_precision(t.precision, run.device, training=True), labeled=len(run.labeled),
                 unlabeled=len(run.unlabeled), world_size=ctx.world_size, threads=torch.get_num_threads())
    t0 = last_saved_time = time.monotonic()
    with CancelFlag(cancel) as flag:
        run.model.train()
        for batch in loader:
            if ctx.any(flag.is_set()):
                _cancelled(run)
            lr = lr_at(run.iteration, run.config)
            losses = _train_step(run, batch, lr)
            run.iteration += 1
            budget.after_step(run.iteration)
            if ctx.any(not bool(torch.isfinite(losses["total"]))):
                # No checkpoint of the diverged weights: the newest checkpoint stays the last good one.
                run.log.close()
                # A bf16 step with non-finite gradients was redone in fp32 (_train_step): this diverged in fp32.
                raise DTCError(f"the loss became {losses['total'].item()} at iteration {run.iteration}; "
                               "lower the learning rate (the last good checkpoint is kept)")
            if run.iteration % t.log_every == 0 or run.iteration == t.iterations:
                _progress_event(run, losses, lr, time.monotonic() - t0)
            due = time.monotonic() - last_saved_time > t.checkpoint_minutes * 60.0
            if (run.iteration % t.checkpoint_every == 0 or ctx.any(due)) and run.iteration < t.iterations:
                _save(run, run.iteration)
                last_saved_time = time.monotonic()
            if run.iteration >= t.iterations and not budget.active:
                break


def _cancelled(run: _Run) -> None:
    """Checkpoint (unless this iteration already is one), log, and raise CancelledError."""
    path = checkpoint_path(run.run_dir, run.iteration) if run.last_saved == run.iteration else _save(run, run.iteration)
    run.log.emit(Event.CANCELLED, iteration=run.iteration, checkpoint=str(path))
    run.log.close()
    raise CancelledError(f"training cancelled at iteration {run.iteration}; resume with --resume ({path.name} kept)")


def _train_step(run: _Run, batch: dict[str, torch.Tensor], lr: float) -> dict[str, torch.Tensor]:
    """One SGD step at learning rate ``lr`` on ``batch``; returns the losses (see losses.compute_losses).

    Under bf16 autocast a step whose weight gradients are not all finite is redone in fp32 from the same
    batch, dropout masks and BatchNorm statistics before the weights move (``_redo_in_fp32``): bf16 weight
    gradients of the VNet's deepest convolutions came out NaN on an AVX512-BF16 CPU (runtime/precision.py)."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    image = batch["image"].to(run.device, non_blocking=True)
    label = batch["label"].to(run.device, non_blocking=True)
    sdf = batch["sdf"].to(run.device, non_blocking=True)
    if run.device.type == "cuda":
        image = image.contiguous(memory_format=torch.channels_last_3d)
    buffers = [b.clone() for b in run.model.buffers()] if run.amp is not None else []  # BatchNorm statistics
    losses = _forward_backward(run, image, label, sdf, run.amp)
    if run.amp is not None and not finite_gradients(run.model):
        _redo_in_fp32(run)
        for buffer, before in zip(run.model.buffers(), buffers):
            buffer.copy_(before)  # the redo updates the running statistics once, as the step would have
        losses = _forward_backward(run, image, label, sdf, None)
    run.optimizer.step()
    if run.teacher is not None:
        from .teacher import ema_update

        ema_update(run.teacher, run.model)
    return losses


def _forward_backward(run: _Run, image: torch.Tensor, label: torch.Tensor, sdf: torch.Tensor,
                      amp: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Forward under ``amp`` (None: fp32), the losses in fp32, fresh gradients; the dropout RNG is seeded from
    ``(seed, rank, iteration)`` first, so a redo draws the same masks."""
    from ..model.losses import compute_losses

    t = run.config.train
    if run.config.recipe.mode in COPY_PASTE_MODES:  # mixed images, their own losses (copypaste_step.py)
        from .copypaste_step import forward_backward

        return forward_backward(run, image, label, amp, t.seed * SEED_STRIDE + run.ctx.rank * RANK_SEED_STRIDE
                                + run.iteration)
    torch.manual_seed(t.seed * SEED_STRIDE + run.ctx.rank * RANK_SEED_STRIDE + run.iteration)  # dropout, resumable
    with autocast(run.device, amp):
        seg, lsf = run.train_model(image)
    losses = compute_losses(seg.float(), lsf.float(), label, sdf, t.labeled_batch, run.iteration, run.config.recipe)
    run.optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    return losses


def finite_gradients(model: torch.nn.Module) -> bool:
    """True when every parameter gradient of ``model`` is finite (no NaN or inf); True with no gradients."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def _redo_in_fp32(run: _Run) -> None:
    """Count a bf16 step redone in fp32 (``run.extra[BF16_REDONE_KEY]``, saved with checkpoints and model.pt);
    say so the first time and every REDO_REPORT_EVERY-th time."""
    done = int(run.extra.get(BF16_REDONE_KEY, 0)) + 1
    run.extra[BF16_REDONE_KEY] = done
    if done == 1 or done % REDO_REPORT_EVERY == 0:
        run.log.message(f"iteration {run.iteration + 1}: bf16 gave non-finite weight gradients; step redone in "
                        f"fp32 ({done} so far)")


def _progress_event(run: _Run, losses: dict[str, torch.Tensor], lr: float, elapsed: float) -> None:
    """One "progress" event: global-batch mean losses, lr, lambda, elapsed time and ETA."""
    t = run.config.train
    names = LOSS_NAMES + tuple(k for k in OPTIONAL_LOSS_NAMES if k in losses)
    values = run.ctx.mean(torch.stack([losses[k].detach() for k in names]))
    done = run.iteration - run.start
    if run.config.recipe.mode == TEACHER_MODE:  # stage-2 steps cost more (copypaste_step.eta_seconds)
        from .copypaste_step import eta_seconds

        eta = eta_seconds(run, elapsed)
    else:
        eta = elapsed / done * (t.iterations - run.iteration)
    run.log.emit(Event.PROGRESS, iteration=run.iteration, total=t.iterations,
                 losses={k: float(v) for k, v in zip(names, values)}, lr=lr,
                 **{"lambda": float(losses["lambda"])}, elapsed_s=round(elapsed, 3), eta_s=round(eta, 1))


def _finish(run: _Run) -> Path:
    """Last checkpoint, ``model.pt`` (BatchNorm statistics recomputed after a high final lr), "done" event."""
    from .batches import TrainBatches

    t = run.config.train
    final = checkpoint_path(run.run_dir, run.iteration) if run.last_saved == t.iterations else _save(run, t.iterations)
    model_path = run.run_dir / "model.pt"
    final_model = run.model
    if run.ctx.is_main and t.precise_bn_batches > 0 and lr_at(run.iteration - 1, run.config) > PRECISE_BN_ABOVE_LR:
        final_model = _precise_bn(run.model, TrainBatches(
            run.labeled, run.unlabeled, t, run.config.recipe, seed=t.seed, rank=run.ctx.rank,
            start_iteration=run.iteration, num_iterations=t.precise_bn_batches), run.device, run.amp)
    seconds = round(time.monotonic() - run.began, 1)
    if run.extra.get(BF16_REDONE_KEY):
        run.log.message(f"{run.extra[BF16_REDONE_KEY]} of {run.iteration - run.start} bf16 steps had non-finite "
                        "weight gradients and were redone in fp32")
    on_main(run.ctx, lambda: save_checkpoint(model_path, final_model, None, run.iteration, run.config, {
        **run.extra, "iterations_done": run.iteration, "train_seconds": seconds}))
    run.log.emit(Event.DONE, iteration=run.iteration, model=str(model_path), checkpoint=str(final), elapsed_s=seconds)
    run.log.close()
    return model_path
