"""Checkpoints and models: atomic writes, a content hash checked on load, clear refusals.

File layout (one file, written with a temp file + rename)::

    b"DTCCKPT1\\n" + sha256(payload).hexdigest() + b"\\n" + payload

where ``payload`` is a ``torch.save`` of a plain dict (weights, optimizer state, iteration, the full
config, the package version, metadata). A file without the magic line is "not a DTCSegmentation
checkpoint"; a hash mismatch means "corrupt or truncated"; weights that do not fit the network the
config describes mean "another architecture". All three are :class:`DTCError` with one line.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..atomic import atomic_write_bytes
from ..config import DTCConfig
from ..errors import DTCError
from ..protocol import CHECKPOINT_DIR, CHECKPOINT_PATTERN, DEFAULT_MODEL
from ..protocol import MODEL_MAGIC as MAGIC  # format tag; bump the digit when the payload layout changes incompatibly

FORMAT_VERSION = 1


def checkpoint_path(run_dir: str | os.PathLike, iteration: int) -> Path:
    """``RUN_DIR/checkpoints/iter_000123.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / f"iter_{iteration:06d}.pt"


def float32_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its floating tensors as float32 (fp16 bundled models), the others unchanged."""
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    iteration: int,
    config: DTCConfig,
    extra: dict[str, Any] | None = None,
    half: bool = False,
    teacher: torch.nn.Module | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    ``model`` may be wrapped (DDP / torch.compile): the bare module's weights are stored, so a
    checkpoint resumes with any number of processes. ``half`` stores floating weights as fp16 (the
    bundled model); they are restored to fp32 on load. ``teacher`` (mode "copy-paste-teacher", teacher.py):
    its weights are stored under the payload key ``"teacher"``, which other checkpoints do not have.
    """
    state = _bare(model).state_dict()
    if half:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    payload = {
        "format": "dtc-checkpoint",
        "format_version": FORMAT_VERSION,
        "dtc_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "iteration": int(iteration),
        "config": config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in state.items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "extra": dict(extra or {}),
    }
    if teacher is not None:
        payload["teacher"] = {k: v.detach().cpu() for k, v in _bare(teacher).state_dict().items()}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest().encode("ascii")
    path = Path(path)
    atomic_write_bytes(path, MAGIC + digest + b"\n" + data)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint; return its payload dict (``config`` as a DTCConfig)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DTCError(f"model file {path} does not exist; check the path or train one with 'dtc train'") from None
    except IsADirectoryError:
        raise DTCError(f"{path} is a folder; pass the model file (e.g. {path / 'model.pt'})") from None
    except OSError as exc:
        raise DTCError(f"cannot read model file {path} ({exc.strerror})") from None
    if not raw.startswith(MAGIC):
        raise DTCError(
            f"{path} is not a DTCSegmentation checkpoint (no DTC header); pass a model written by 'dtc train'"
        )
    header_end = len(MAGIC) + 64
    digest, data = raw[len(MAGIC) : header_end], raw[header_end + 1 :]
    if hashlib.sha256(data).hexdigest().encode("ascii") != digest:
        raise DTCError(f"{path} is corrupt or truncated (content hash mismatch); use another checkpoint")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # a hash-valid file that torch cannot read: written by an incompatible version
        raise DTCError(f"{path} cannot be read by this version ({type(exc).__name__}); retrain or upgrade") from None
    if payload.get("format") != "dtc-checkpoint" or payload.get("format_version", 0) > FORMAT_VERSION:
        raise DTCError(f"{path} has checkpoint format {payload.get('format_version')}; upgrade DTCSegmentation")
    payload["config"] = DTCConfig.from_dict(payload["config"])
    return payload


def load_model(
    path: str | os.PathLike | None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, DTCConfig]:
    """Build the network a checkpoint describes, load its weights (fp32) and put it in eval mode.

    ``path=None`` loads the bundled default model, with a clear error when none is bundled.
    """
    model, config, _ = load_model_with_extra(path, device)
    return model, config


def load_model_with_extra(
    path: str | os.PathLike | None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, DTCConfig, dict[str, Any]]:
    """:func:`load_model` plus the checkpoint's metadata (``extra``) and ``"path"``, the file read.

    A model a spare process loaded in advance for this file is used when it is still the same file
    (:mod:`.preload`)."""
    from . import preload
    from .network import build_network

    held = preload.take(path, device)
    if held is not None:
        return held
    if path is None:
        if not DEFAULT_MODEL.exists():
            raise DTCError(
                "no default model is bundled with this installation; pass --model MODEL.pt "
                "(a model.pt written by 'dtc train')"
            )
        path = DEFAULT_MODEL
    payload = load_checkpoint(path, map_location="cpu")
    config: DTCConfig = payload["config"]
    model = build_network(config.network)
    state = float32_state(payload["model"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise DTCError(
            f"{path} holds weights of another architecture than its config describes; it cannot be used"
        ) from None
    return model.to(device).eval(), config, {**payload["extra"], "path": str(path)}


def load_weights_into(model: torch.nn.Module, path: str | os.PathLike) -> DTCConfig:
    """Initialise ``model`` from a checkpoint (fine-tuning); the architectures must match."""
    payload = load_checkpoint(path)
    state = float32_state(payload["model"])
    try:
        _bare(model).load_state_dict(state, strict=True)
    except RuntimeError:
        net = payload["config"].network
        raise DTCError(
            f"{path} is a model of another architecture (base_filters={net.base_filters}, "
            f"num_classes={net.num_classes}, in_channels={net.in_channels}, pools={tuple(net.pools)}, "
            f"dims={net.dims}); use the same network settings"
        ) from None
    return payload["config"]


def read_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata for listing a model: iteration, created, version, config dict and ``extra``."""
    payload = load_checkpoint(path)
    return {
        "path": str(path),
        "iteration": payload["iteration"],
        "created": payload["created"],
        "dtc_version": payload["dtc_version"],
        "config": payload["config"].to_dict(),
        **payload["extra"],
    }


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every ``checkpoints/iter_*.pt`` in ``run_dir``, newest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = CHECKPOINT_PATTERN.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def find_latest_checkpoint(run_dir: str | os.PathLike, warn=None) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``run_dir`` that verifies, with its payload; ``None`` if there is none.

    Invalid files (a crash mid-write cannot leave one, but a disk fault can) are skipped with a
    message to ``warn``.
    """
    for _, path in list_checkpoints(run_dir):
        try:
            return path, load_checkpoint(path)
        except DTCError as exc:
            if warn is not None:
                warn(f"skipping {path.name}: {exc}")
    return None


def _bare(model: torch.nn.Module) -> torch.nn.Module:
    """Unwrap DistributedDataParallel / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
