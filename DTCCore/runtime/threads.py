"""CPU threads of one engine process: ``dtc ... --threads N``.

By default torch starts one compute thread per core in every process. Two engine jobs at once (a
fine-tune and a Segment, started by the Slicer panel) then run twice as many busy threads as there are
cores, and torch's thread pool waits at every barrier for the thread the OS put aside: measured on 2
cores (issue 25), a ``dtc train`` fell from 5.95 to 0.88 iterations per second beside a second one, and
ran at 5.3 it/s when each used one thread. ``--threads N`` sets torch's intra-op threads, its inter-op
threads (where still allowed: only before any parallel work) and SimpleITK's default threads, so the
jobs can share the cores. No torch import at module level (the Slicer module uses :func:`available_cores`).
"""

from __future__ import annotations

import os
from typing import Any


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def apply_threads(threads: int | None, uses_torch: bool = True) -> dict[str, Any]:
    """Use ``threads`` CPU threads (None: leave every library's default); what is in effect afterwards.

    Returns ``{"threads": requested or None, "intra_op": int | None, "inter_op": int | None, "cores": int}``
    (``intra_op``/``inter_op`` None when the command does not load torch).
    """
    if threads is not None and threads < 1:
        from ..errors import DTCError

        raise DTCError(f"--threads {threads}: use a whole number of threads, 1 or more")
    state: dict[str, Any] = {"threads": threads, "intra_op": None, "inter_op": None, "cores": available_cores()}
    if threads is not None:
        try:
            import SimpleITK as sitk

            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
        except ImportError:  # pragma: no cover - SimpleITK is a dependency
            pass
    if not uses_torch:
        return state
    import torch

    if threads is not None:
        try:
            torch.set_num_interop_threads(int(threads))
        except RuntimeError:  # parallel work already started in this process (an in-process caller)
            pass
        torch.set_num_threads(int(threads))
    state["intra_op"], state["inter_op"] = torch.get_num_threads(), torch.get_num_interop_threads()
    return state


def describe_threads(state: dict[str, Any]) -> str:
    """One line for the command's output, e.g. ``threads: 1 (torch intra-op 1, inter-op 1; 2 cores)``."""
    cores = f"{state['cores']} core{'s' if state['cores'] != 1 else ''}"
    requested = "default" if state["threads"] is None else str(state["threads"])
    if state["intra_op"] is None:
        return f"threads: {requested} (no torch in this command; {cores})"
    return f"threads: {requested} (torch intra-op {state['intra_op']}, inter-op {state['inter_op']}; {cores})"
