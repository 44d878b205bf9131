"""DTCCore's stage folders import each other without a cycle, and the folders a torch-free caller imports stay
torch-free (issue 40: the engine grouped by stage).

The import graph is read from the source with ``ast`` (every ``from X import`` and ``import X``, lazy ones inside
functions included), so a new import that runs a lower stage back up to a higher one fails here.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENGINE = REPO / "DTCCore"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _group(module: str) -> str:
    """The stage of a module: its folder, or for a top-level module 'config', 'entry' (__main__) or 'core'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    if (ENGINE / parts[1]).is_dir():
        return parts[1]
    return {"config": "config", "__main__": "entry"}.get(parts[1], "core")


def _imports(path: Path) -> set[str]:
    """Every DTCCore module ``path`` imports (relative imports resolved; ``from pkg import mod`` names mod)."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("DTCCore")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("DTCCore"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (REPO / (sub.replace(".", "/") + ".py")).exists() or (REPO / sub.replace(".", "/")).is_dir()
                found.add(sub if is_module else target)
    return found


def _group_edges() -> set[tuple[str, str]]:
    edges = set()
    for path in ENGINE.rglob("*.py"):
        here = _group(_module_name(path))
        for target in _imports(path):
            there = _group(target)
            if there != here:
                edges.add((here, there))
    return edges


def test_the_stage_folders_import_each_other_without_a_cycle():
    sorter = graphlib.TopologicalSorter()
    for importer, imported in _group_edges():
        sorter.add(importer, imported)
    sorter.prepare()  # raises graphlib.CycleError naming the cycle


def test_the_cycle_check_sees_a_cycle():
    """The checker itself: a lower stage importing a higher one is a cycle."""
    edges = _group_edges() | {("data", "training")}
    sorter = graphlib.TopologicalSorter()
    for importer, imported in edges:
        sorter.add(importer, imported)
    try:
        sorter.prepare()
    except graphlib.CycleError:
        return
    raise AssertionError("a data -> training import was not seen as a cycle")


def test_the_stages_depend_in_the_documented_order():
    """The order docs/engine-api.md states: nothing below imports anything above it."""
    order = ["core", "data", "planning", "config", "runtime", "model", "evaluation", "inference", "training", "cli",
             "entry"]
    rank = {g: i for i, g in enumerate(order)}
    upward = sorted((a, b) for a, b in _group_edges() if rank[b] >= rank[a])
    assert upward == []


def test_the_torch_free_stages_import_without_torch():
    """The Slicer process imports these: loading them must not load torch."""
    code = (
        "import sys; import DTCCore, DTCCore.config, DTCCore.planning.pools, DTCCore.planning.dims, "
        "DTCCore.planning.extent, DTCCore.data.manifest, DTCCore.data.labels, DTCCore.data.images, "
        "DTCCore.runtime.threads, DTCCore.protocol, DTCCore.atomic; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
