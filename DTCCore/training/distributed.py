"""torch.distributed glue: one process per GPU under ``torchrun``, a no-op otherwise.

``torchrun --nproc-per-node N -m DTCCore train ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`current_context` then joins the process group (NCCL on CUDA, gloo on the CPU), and the trainer
wraps the model in DistributedDataParallel. Each rank draws its own labeled + unlabeled batches (the
batch stream is seeded by rank), so the global batch is ``world_size`` times the per-process batch.
Only rank 0 writes logs and checkpoints; checkpoints hold the bare module's weights, so a run resumes
with any number of processes.

Failures never leave a rank waiting: every step that can fail on some ranks only (reading the inputs,
writing a checkpoint) runs inside :meth:`DistContext.check`, which makes all ranks raise together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from ..config import DTCConfig
from ..errors import DTCError

T = TypeVar("T")


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # None: the trainer resolves config.train.device
    owns_group: bool = False  # True when current_context created the process group (close() destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def _reduce(self, t: torch.Tensor, op) -> torch.Tensor:
        t = t.detach().to(self.device if self.device is not None else "cpu", torch.float32).clone()
        dist.all_reduce(t, op=op)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (so all ranks stop together)."""
        if not self.active:
            return flag
        return bool(self._reduce(torch.tensor([1.0 if flag else 0.0]), dist.ReduceOp.MAX).item() > 0)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise mean of ``values`` over the ranks (float32, on the CPU); ``values`` itself when alone."""
        if not self.active:
            return values.detach().float().cpu()
        return (self._reduce(values, dist.ReduceOp.SUM) / self.world_size).cpu()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; used for the resumed checkpoint's payload)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def check(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on this rank; if it fails on ANY rank, raise on every rank.

        The failing rank re-raises its own exception; the others raise DTCError with its message, so no
        rank is left waiting in a collective (a hang) when one rank cannot read a file or write a
        checkpoint.
        """
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            if not self.active:
                raise
            error = exc
        if self.active:
            messages: list[Any] = [None] * self.world_size
            dist.all_gather_object(messages, None if error is None else (str(error) or type(error).__name__))
            if error is not None:
                raise error
            for rank, text in enumerate(messages):
                if text is not None:
                    raise DTCError(f"process of rank {rank} failed: {text}")
        return result

    def wrap(self, model: torch.nn.Module, config: DTCConfig) -> torch.nn.Module:
        """DDP-wrap ``model`` (optionally with SyncBatchNorm) when running distributed."""
        if not self.active:
            return model
        if config.train.sync_batchnorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        """Leave the process group if this context created it (no-op otherwise)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def current_context(device_name: str = "auto") -> DistContext:
    """The process's distributed context; joins the process group when launched by torchrun.

    Raises DTCError when the launch environment is incomplete or a GPU is missing for a local rank.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda and local >= torch.cuda.device_count():
        raise DTCError(
            f"local rank {local} has no GPU ({torch.cuda.device_count()} found); start at most that many "
            "processes per node (torchrun --nproc-per-node)"
        )
    if use_cuda:
        torch.cuda.set_device(local)
    owns = False
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        except (ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DTCError(f"cannot join the torch.distributed process group ({reason}); "
                           "launch with torchrun") from None
        owns = True
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, owns_group=owns)
