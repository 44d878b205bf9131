"""Where the network runs: a user's device choice resolved to a torch device, and how it is described.

The names a user may give (``auto``, ``cpu``, ``cuda``, ``cuda:N``) are checked by
:func:`DTCCore.config.check_device` (torch-free, so configs and command lines are checked without torch);
this module adds what needs torch: whether the choice is usable here, the one-line description every
command prints, and ``dtc info --device``'s report (the Slicer panel's device line).
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import check_device
from ..errors import DTCError

__all__ = ["resolve_device", "describe_device", "device_report"]


def resolve_device(name: str) -> torch.device:
    """Map a user's device choice ("auto", "cpu", "cuda", "cuda:N") to a torch device; DTCError if unusable."""
    name = check_device(str(name).strip().lower())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DTCError("no CUDA GPU was found (or this PyTorch build has no CUDA support); use --device cpu "
                       "or install a CUDA build of PyTorch")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DTCError(f"device {name} does not exist ({torch.cuda.device_count()} CUDA GPU(s) found); "
                       "use cuda:0 or --device cpu")
    return device


def describe_device(device: torch.device | str) -> str:
    """One line for logs and the UI: GPU name and memory, or ``CPU (N threads)``."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"{props.name} ({props.total_memory / 2**30:.1f} GiB)"
    if device.type == "cpu":
        return f"CPU ({torch.get_num_threads()} threads)"
    return str(device)


def device_report(requested: str) -> dict[str, Any]:
    """The ``device`` event's fields (``dtc info --device``): what ``requested`` resolves to here, described
    as ``segment`` and ``rank`` print it, and why there is no GPU if none."""
    why = ""
    if not torch.cuda.is_available():
        why = "this PyTorch has no CUDA support" if torch.version.cuda is None else "no NVIDIA GPU/driver found"
    try:
        device = resolve_device(requested)
    except DTCError as exc:
        return {"requested": requested, "resolved": None, "description": f"not available: {exc}",
                "cuda_available": torch.cuda.is_available(), "why_no_gpu": why}
    return {"requested": requested, "resolved": str(device), "description": describe_device(device),
            "cuda_available": torch.cuda.is_available(), "why_no_gpu": why}
