"""torch.distributed glue: one process per GPU under ``torchrun``, a no-op otherwise.

``torchrun --nproc-per-node N -m DTCCore train ...`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`current_context` then joins the process group (NCCL on CUDA, gloo on the CPU), and the trainer
wraps the model in DistributedDataParallel. Each rank draws its own labeled + unlabeled batches (the
batch stream is seeded by rank), so the global batch is ``world_size`` times the per-process batch.
Only rank 0 writes logs and checkpoints; checkpoints hold the bare module's weights, so a run resumes
with any number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import DTCConfig


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # None: the trainer resolves config.train.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (so all ranks stop together)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device is not None else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def wrap(self, model: torch.nn.Module, config: DTCConfig) -> torch.nn.Module:
        """DDP-wrap ``model`` (optionally with SyncBatchNorm) when running distributed."""
        if not self.active:
            return model
        if config.train.sync_batchnorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def current_context(device_name: str = "auto") -> DistContext:
    """The process's distributed context; joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)
