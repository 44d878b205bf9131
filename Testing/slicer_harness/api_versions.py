"""The Slicer API per supported version, read from ``api/slicer-<tag>.json`` (written by ``extract_api.py``).

The module must run on every tag of :data:`SUPPORTED_TAGS`, so the harness exposes what ALL of them have:
:func:`widget_api` is the intersection of the four widget lists (what :mod:`pythonqt` serves), and
:func:`missing_tags` says at which tags a VTK/MRML name, a ``slicer.util`` function or a Python module is
absent (what the static check of :mod:`api_check` reports).
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

from . import extract_python

API_DIR = Path(__file__).resolve().parent / "api"
SUPPORTED_TAGS = ("v5.6.2", "v5.8.1", "v5.10.0", "v5.12.3")  # README's range; extract_api.SUPPORTED_TAGS


@functools.lru_cache(maxsize=None)
def load(tag: str) -> dict:
    """The API record of one tag (``api/slicer-<tag>.json``)."""
    return json.loads((API_DIR / f"slicer-{tag}.json").read_text())


def _intersect_lists(records: list[dict], key: str) -> list:
    return sorted(set.intersection(*(set(r[key]) for r in records)))


@functools.lru_cache(maxsize=None)
def widget_api() -> dict:
    """``{"source", "classes", "python"}`` in the format of one tag's file, keeping only what every tag has.

    A class whose declared base differs between tags keeps the base of the oldest tag (none does today;
    ``Testing/test_slicer_api_versions.py`` checks it)."""
    records = [load(tag) for tag in SUPPORTED_TAGS]
    names = set.intersection(*(set(r["classes"]) for r in records))
    classes = {}
    for name in sorted(names):
        per_tag = [r["classes"][name] for r in records]
        classes[name] = {"base": per_tag[0]["base"],
                         **{key: _intersect_lists(per_tag, key) for key in ("properties", "methods", "signals")}}
    python = {}
    for module in records[0]["python"]:
        python[module] = {cls: sorted(set.intersection(*(set(r["python"][module].get(cls, [])) for r in records)))
                          for cls in records[0]["python"][module]}
    source = {"Slicer": "intersection of https://github.com/Slicer/Slicer tags " + ", ".join(SUPPORTED_TAGS),
              "tags": {tag: r["source"] for tag, r in zip(SUPPORTED_TAGS, records)}}
    return {"source": source, "classes": classes, "python": python}


@functools.lru_cache(maxsize=None)
def vtk_names(tag: str, class_name: str) -> frozenset:
    """Methods and constants of a VTK-wrapped class at ``tag``, inherited ones included (empty: no such class)."""
    classes = load(tag)["vtk"]
    names: set = set()
    todo = [class_name]
    while todo:
        entry = classes.get(todo.pop())
        if entry is not None:
            names |= set(entry["methods"]) | set(entry["constants"])
            todo.extend(entry["bases"])
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def vtk_union(tag: str) -> frozenset:
    """Every method and constant of every extracted class at ``tag``."""
    return frozenset().union(*(vtk_names(tag, name) for name in load(tag)["vtk"]))


def defining_classes(tag: str, name: str) -> list[str]:
    """The extracted classes that declare ``name`` themselves at ``tag``."""
    return sorted(c for c, e in load(tag)["vtk"].items() if name in e["methods"] or name in e["constants"])


def module_api(tag: str, module: str) -> dict | None:
    """``slicer.util`` / ``slicer.packaging`` / ``SampleData`` at ``tag`` (None: the tag has no such module)."""
    return load(tag)["modules"].get(module)


def module_member(tag: str, module: str, path: list[str]):
    """The signature record of ``module.<path>`` at ``tag`` (a function, or a class method for
    ``[class, method]``); ``{}`` for a class or another public name; None when it does not exist."""
    api = module_api(tag, module)
    if api is None or not path:
        return None if api is None else {}
    head = path[0]
    if head in api["functions"]:
        return api["functions"][head] if len(path) == 1 else None
    if head in api["classes"]:
        if len(path) == 1:
            return {}
        return api["classes"][head]["methods"].get(path[1]) if len(path) == 2 else None
    return {} if head in api["names"] and len(path) == 1 else None


def member_signature(record: dict, unbound: bool = False) -> inspect.Signature:
    """The call signature of a function or method record. A class method drops ``cls``; a plain method drops
    ``self`` unless ``unbound`` (called on the class: ``Class.method(self, ...)``)."""
    decorators = set(record.get("decorators", ["staticmethod"]))  # a module-level function: nothing to drop
    drop = "classmethod" in decorators or (not decorators & {"staticmethod", "classmethod"} and not unbound)
    return extract_python.signature(record, drop_first=drop)


def missing_tags(predicate) -> list[str]:
    """The supported tags at which ``predicate(tag)`` is false."""
    return [tag for tag in SUPPORTED_TAGS if not predicate(tag)]
