"""How the panel shares the CPU cores between the engine jobs it runs at once (``dtc ... --threads N``).

torch gives every process one thread per core; a fine-tune and a Segment side by side then oversubscribe
the cores, and both slow down far more than by half (DTCCore/runtime/threads.py). A running process cannot
change its threads, so the split is decided when each job starts:

- a fine-tune always leaves :func:`reserved_cores` to Segment / Next case / model information, whether or
  not one runs yet (it runs for minutes to hours, they come and go);
- any other job, started while jobs run, takes the cores they leave free (at least one); started alone,
  it keeps the engine's default (every core).

No torch here (the module runs in Slicer's process).
"""

from __future__ import annotations

from typing import Any

from DTCCore.runtime.threads import available_cores

# A fine-tune leaves a quarter of the cores, at least one, to the short jobs (our choice). Our measurement
# (bench/speed/two_jobs.py, bench/RESULTS.md "Two jobs at once"): on 2 cores, a Segment beside a fine-tune at
# default threads took 1.9x as long as with this split (1 thread each), and the 1-thread fine-tune ran
# no slower than a 2-thread one, alone or beside the Segment.
RESERVED_SHARE = 4


def reserved_cores(cores: int) -> int:
    """Cores a fine-tune leaves free on a machine with ``cores`` cores (0 on one core: nothing to share)."""
    return 0 if cores <= 1 else max(1, cores // RESERVED_SHARE)


def train_threads(cores: int | None = None) -> int:
    """Threads of a fine-tune: every core but the reserved ones."""
    cores = cores or available_cores()
    return max(1, cores - reserved_cores(cores))


def job_threads(kind: str, running: dict[str, Any], cores: int | None = None) -> int | None:
    """``--threads`` for a new job of ``kind`` ("train", "segment", "rank", "info") beside ``running``
    (kind -> job with a ``threads`` attribute, None meaning every core); None: the engine's default."""
    cores = cores or available_cores()
    if kind == "train":
        return train_threads(cores)
    others = [job for other, job in running.items() if other != kind]
    if not others:
        return None
    busy = sum(getattr(job, "threads", None) or cores for job in others)
    return max(1, cores - busy)
