"""docs/engine-api.md's module map names every DTCCore module (in every stage folder) and every command; the
module guide names the protocol module both sides import."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENGINE_API = (REPO / "docs" / "engine-api.md").read_text(encoding="utf-8")


def test_the_module_map_names_every_engine_module():
    rows = set(re.findall(r"^\| `([\w/]+\.py)` \|", ENGINE_API, flags=re.M))
    engine = REPO / "DTCCore"
    modules = {p.relative_to(engine).as_posix() for p in engine.rglob("*.py")}
    assert sorted(modules - rows) == []
    assert sorted(rows - modules) == []  # no row for a module that is gone


def test_the_docs_name_every_command_and_the_protocol():
    from DTCCore import protocol

    assert [c for c in protocol.COMMANDS if f"`dtc {c}" not in ENGINE_API] == []
    assert "`DTCCore/protocol.py`" in (REPO / "docs" / "slicer-module.md").read_text(encoding="utf-8")
