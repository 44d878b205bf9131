"""Helpers shared by the bench scripts: repo on sys.path, data folder, device names, tables, JSON.

The bench scripts run from a clone (``python bench/speed/speed.py``); they import DTCCore from the repository
they live in, not from an installed copy. Each script puts this folder (``bench/lib``) on ``sys.path`` first.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

LIB = Path(__file__).resolve().parent  # bench/lib: these helpers, and la_eval.py / cpu_account.py run by path
REPO = LIB.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "la2018"  # ../shared/data/la2018 relative to the repo


def read_list(data: Path, name: str) -> list[str]:
    """Case names of ``data/<name>`` (one a line, blanks ignored)."""
    path = Path(data) / name
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; "
                         "pass --data FOLDER holding train.list, test.list and <case>/image.nrrd")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def case_files(data: Path, case: str) -> tuple[Path, Path]:
    """``(image, label)`` paths of one LA2018 case folder."""
    return Path(data) / case / "image.nrrd", Path(data) / case / "label.nrrd"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_name(device: str) -> str:
    """GPU name, or ``CPU: <model> (<n> cores)``."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="replace"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model} ({os.cpu_count()} cores, torch {torch.get_num_threads()} threads)"


def p_text(p: float) -> str:
    """A p-value as the tables print it: ``p = 0.012``, or ``p < 0.001`` (three decimals would show 0.000)."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats printed with 2 decimals (3 significant digits below 1)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "n/a"
            return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike, data: Any) -> None:
    from DTCCore.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(data, indent=2, default=float) + "\n")


def random_model_file(path: Path, base_filters: int = 16, patch=(112, 112, 80), seed: int = 0) -> Path:
    """Save a random-initialised DualTaskVNet as a DTC checkpoint (speed does not depend on the weights)."""
    import torch

    from DTCCore.config import DTCConfig
    from DTCCore.model.checkpoint import save_checkpoint
    from DTCCore.model.network import build_network

    config = DTCConfig()
    config.network.base_filters = int(base_filters)
    config.train.patch = tuple(int(p) for p in patch)
    config.validate()
    torch.manual_seed(seed)
    model = build_network(config.network).eval()
    return save_checkpoint(path, model, None, 0, config, {"note": "random init, for timing only"})


def without_paths(value: Any) -> Any:
    """``value`` with every absolute path string reduced to its file name (results name their model, manifest and
    run): what a study archives into the repository names no machine path."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "\\")) or (len(value) > 2 and value[1:3] in (":\\", ":/"))):
        return Path(value).name
    return value
