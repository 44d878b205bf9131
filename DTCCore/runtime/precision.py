"""Numeric precision of the network's forward pass: ``auto``, ``fp32`` or ``bf16`` (bfloat16 autocast).

``auto`` (the default of ``train.precision`` and ``infer.precision``) means bf16 where the hardware runs it
natively, else fp32:

- CUDA: bf16 when the GPU supports it (``torch.cuda.is_bf16_supported``: Ampere and newer), as before;
- CPU: bf16 only on a CPU with native bf16 arithmetic, detected, not guessed: AVX512-BF16 or AMX
  (Intel Cooper Lake / Sapphire Rapids and newer, AMD Zen 4 and newer), the instructions oneDNN's bf16
  convolutions use. Other CPUs emulate bf16 through fp32 conversions; measured on an AVX2-only AMD EPYC
  (Zen 3) that is slower than fp32, not faster (bench/RESULTS.md), so ``auto`` stays fp32 there.

Training on the CPU stays fp32 under ``auto``, native bf16 or not: with PyTorch 2.13 on an AVX512-BF16 AMD
EPYC (Zen 4) the bf16 weight gradients of the VNet's deepest convolutions came out NaN (our measurement:
the test suite's 2-filter network, within 1-20 SGD steps, with and without deterministic algorithms; its
forward passes and inference stayed finite and agree with fp32, Testing/test_precision.py). A forced
``bf16`` still trains there, and its first line says so; the trainer redoes in fp32 any bf16 step whose
weight gradients are not all finite (same batch, dropout masks and BatchNorm statistics; 4-13 of 60 steps
of that network, none in 800 steps of the 16-filter one) and counts them in the log and the model.

``bf16`` forces bf16 autocast even where it is emulated (slow; useful to check a model's bf16 agreement
anywhere). Only the network runs under autocast: the losses, the level-set transform ``sigmoid(-k z)``,
the window blending and the metrics stay fp32 (their callers cast the network's outputs to float32).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from ..config import PRECISIONS, check_precision

__all__ = ["PRECISIONS", "check_precision", "CPU_BF16_TRAINING_NOTE", "cpu_native_bf16", "resolve_precision",
           "describe_precision", "autocast_dtype", "autocast"]
CPUINFO = "/proc/cpuinfo"  # Linux: the kernel's CPU flags, read when PyTorch's own checks are unavailable
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # Linux cpuinfo flag names of the instructions (kernel x86 cpufeatures)


def cpu_native_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX).

    Uses PyTorch's own CPU-feature checks (``torch.cpu._is_avx512_bf16_supported`` and
    ``_is_amx_tile_supported``, present in PyTorch 2.1 and newer); falls back to the Linux cpuinfo flags
    when those are missing. False on anything else (ARM, macOS without the checks): never a guess.
    """
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(check) for check in checks):
        return any(bool(check()) for check in checks)  # type: ignore[misc]
    try:
        with open(CPUINFO, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in NATIVE_BF16_FLAGS)
    except OSError:
        pass
    return False


CPU_BF16_TRAINING_NOTE = "bf16 training on the CPU can give NaN weight gradients"  # measured, module docstring


def resolve_precision(choice: str, device: torch.device | str, training: bool = False) -> str:
    """``"bf16"`` or ``"fp32"``: what ``choice`` (one of PRECISIONS) means on ``device``; ``training``: for the
    training steps (``auto`` is fp32 on every CPU, see the module docstring), else for inference."""
    choice = check_precision(choice)
    if choice != "auto":
        return choice
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_native_bf16() and not training else "fp32"
    return "fp32"


def describe_precision(choice: str, device: torch.device | str, training: bool = False) -> str:
    """One line part for a command's first line, e.g. ``fp32 (auto: this CPU has no native bf16)``."""
    resolved = resolve_precision(choice, device, training)
    device = torch.device(device)
    where = "GPU" if device.type == "cuda" else "CPU"
    cpu_training = training and device.type == "cpu"
    if check_precision(choice) == "auto":
        if cpu_training and cpu_native_bf16():
            return f"fp32 (auto: {CPU_BF16_TRAINING_NOTE})"
        reason = f"this {where} has {'native' if resolved == 'bf16' else 'no native'} bf16"
        return f"{resolved} (auto: {reason})"
    if resolved == "bf16" and device.type == "cpu" and not cpu_native_bf16():
        return "bf16 (emulated: this CPU has no native bf16, slower than fp32)" + (
            f"; {CPU_BF16_TRAINING_NOTE}" if cpu_training else "")
    if resolved == "bf16" and cpu_training:
        return f"bf16 (forced; {CPU_BF16_TRAINING_NOTE}: such steps are redone in fp32)"
    return resolved


def autocast_dtype(choice: str, device: torch.device | str, training: bool = False) -> torch.dtype | None:
    """``torch.bfloat16`` when ``choice`` resolves to bf16 on ``device`` (``training``: for the training
    steps), else None (the model's fp32)."""
    return torch.bfloat16 if resolve_precision(choice, device, training) == "bf16" else None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> ContextManager:
    """Autocast to ``dtype`` on ``device``'s type, or a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
