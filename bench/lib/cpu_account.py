"""Run one command and record the CPU seconds it and every process it waited for used (trainer + loaders).

    python bench/lib/cpu_account.py LEDGER.jsonl -- COMMAND...

Appends one JSON line to LEDGER per run: ``{"cpu_s", "user_s", "system_s", "wall_s", "exit", "started"}``, from
``getrusage(RUSAGE_CHILDREN)`` after the command ends: the process CPU seconds of the command and of its loader
processes (a DataLoader's workers are joined by the trainer, so their time is in its children's total). A study
that resumes a run appends a line per segment; the run's CPU time is the sum (:func:`cpu_minutes`). SIGTERM and
SIGINT are passed on to the command, so a killed study still records what ran. Exits with the command's status.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path


def cpu_minutes(ledger: Path) -> float | None:
    """The CPU minutes of every segment recorded in ``ledger`` (None when there is none)."""
    if not ledger.exists():
        return None
    rows = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    return sum(r["cpu_s"] for r in rows) / 60.0 if rows else None


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python bench/lib/cpu_account.py LEDGER.jsonl -- COMMAND...")
    ledger, command = Path(argv[0]), argv[2:]
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S"), time.monotonic()
    proc = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: proc.send_signal(s))
    code = proc.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {"cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime, "system_s": usage.ru_stime,
           "wall_s": time.monotonic() - t0, "exit": code, "started": started}
    with open(ledger, "a", encoding="utf-8") as f:  # append-only ledger: a line per segment
        f.write(json.dumps(row) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
