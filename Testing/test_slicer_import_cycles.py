"""The Slicer module's library (DTCSegmentationLib) and the test harness (Testing/slicer_harness) import their own
files without a cycle (issue 40 item 7: the harness had fixtures -> scene -> wrapper_versions -> fixtures).

The graph is read from the source with ``ast``: every ``import`` and ``from ... import``, lazy ones inside functions
included, relative ones resolved, ``from package import module`` counted as importing that module.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

TESTING = Path(__file__).resolve().parent
REPO = TESTING.parent
PACKAGES = {  # package name -> the folder that holds it
    "DTCSegmentationLib": REPO / "DTCSegmentation",
    "slicer_harness": TESTING,
}


def _modules(package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of a package (vendored copies left out: they are Slicer's code)."""
    root = PACKAGES[package]
    out = {}
    for path in (root / package).rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if "vendor" in parts:
            continue
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(package: str) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}``; a package's ``__init__`` counts only where named."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = anchor[: len(anchor) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:
                        found.add(sub)
                    elif target in modules:
                        found.add(target)
        graph[name] = found - {name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first again at the end), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return list(error.args[1])
    return None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_the_package_imports_its_files_without_a_cycle(package):
    graph = import_graph(package)
    assert len(graph) > 10  # the walk found the package's files
    assert cycle(graph) is None


def test_the_check_sees_the_harness_cycle_it_had():
    """The checker itself: the lazy import wrapper_versions -> fixtures it had closes a cycle again."""
    graph = import_graph("slicer_harness")
    assert "slicer_harness.scene" in graph["slicer_harness.fixtures"]
    assert "slicer_harness.wrapper_versions" in graph["slicer_harness.scene"]
    graph["slicer_harness.wrapper_versions"].add("slicer_harness.fixtures")
    found = cycle(graph)
    assert found is not None and set(found) >= {"slicer_harness.fixtures", "slicer_harness.scene",
                                                "slicer_harness.wrapper_versions"}


def test_the_check_reads_lazy_relative_imports(tmp_path, monkeypatch):
    """An import inside a function, relative and two levels up, is an edge."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    monkeypatch.setitem(PACKAGES, "pkg", tmp_path)
    graph = import_graph("pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert cycle(graph) is not None
