"""Strict stand-ins of Slicer's Python modules that ``slicer-core`` lacks: ``SampleData``, ``slicer.packaging``.

:func:`strict_module` builds a module with exactly the public functions and classes the module's API
record has (``api/slicer-<tag>.json``, :mod:`extract_python`) at the given tags, keeping the names all
of them have. Every call is bound against the real signature at EACH of those tags: a keyword or an
argument count one of them refuses raises ``TypeError`` naming the tag, as that Slicer would. Calls are
recorded as ``(name, {parameter: value})`` (bound at the newest tag, defaults left out); a function the
test does not implement raises ``NotImplementedError`` instead of answering anything.

Usage::

    calls = []
    sys.modules["SampleData"] = strict_module("SampleData", calls=calls,
                                              implementations={"SampleDataLogic.registerCustomSampleDataSource": None})
    slicer.packaging = strict_module("slicer.packaging", ("v5.12.3",), calls, {"pip_ensure": None})
"""

from __future__ import annotations

import types
from collections.abc import Callable

from . import api_versions


def _strict_function(module: str, path: list[str], tags: tuple[str, ...], calls: list,
                     implementation: Callable | None, implemented: bool, unbound: bool = False) -> Callable:
    qualified = ".".join([module, *path])
    signatures = {tag: api_versions.member_signature(api_versions.module_member(tag, module, path), unbound)
                  for tag in tags}

    def call(*args, **kwargs):
        bound = None
        for tag, signature in signatures.items():
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{qualified}() at Slicer {tag}: {exc}") from None
        if not implemented:
            raise NotImplementedError(f"{qualified} exists in Slicer but the test gave the stand-in no implementation")
        calls.append((".".join(path), dict(bound.arguments)))
        return implementation(*args, **kwargs) if implementation is not None else None

    call.__name__ = path[-1]
    call.__qualname__ = ".".join(path)
    return call


def strict_module(module: str, tags: tuple[str, ...] | None = None, calls: list | None = None,
                  implementations: dict[str, Callable | None] | None = None) -> types.ModuleType:
    """A stand-in of ``module`` ("SampleData", "slicer.packaging") with the API every tag of ``tags`` has
    (default: every supported tag that has the module). ``implementations``: {"function" or
    "Class.method": callable, or None to only record the call}."""
    tags = tags or tuple(t for t in api_versions.SUPPORTED_TAGS if api_versions.module_api(t, module) is not None)
    calls = calls if calls is not None else []
    implementations = implementations or {}
    records = [api_versions.module_api(tag, module) for tag in tags]
    if any(r is None for r in records):
        raise ValueError(f"{module} does not exist at every tag of {tags}")
    stand_in = types.ModuleType(module, f"strict stand-in of {module} (Slicer {', '.join(tags)})")
    for name in set.intersection(*(set(r["functions"]) for r in records)):
        setattr(stand_in, name, _strict_function(module, [name], tags, calls, implementations.get(name),
                                                 name in implementations))
    for class_name in set.intersection(*(set(r["classes"]) for r in records)):
        namespace = {}
        for method in set.intersection(*(set(r["classes"][class_name]["methods"]) for r in records)):
            key = f"{class_name}.{method}"
            decorators = set(records[-1]["classes"][class_name]["methods"][method]["decorators"])
            fn = _strict_function(module, [class_name, method], tags, calls, implementations.get(key),
                                  key in implementations, unbound=True)
            # a class method's signature has no ``cls`` (member_signature), so it is called like a static one
            namespace[method] = staticmethod(fn) if decorators & {"staticmethod", "classmethod"} else fn
        setattr(stand_in, class_name, type(class_name, (), namespace))
    return stand_in
