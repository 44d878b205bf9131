"""Public functions and classes of a Slicer Python file, with their exact signatures (read with ``ast``).

A signature is kept as ``{"args": [...], "defaults": n, "kwonly": [...], "kwdefaults": [...],
"vararg": bool, "kwarg": bool}`` (``defaults``: how many of the last positional parameters have one),
enough to rebuild an :class:`inspect.Signature` (:func:`signature`) and bind a call against it exactly as
Python would. Used by ``extract_api.py`` (``slicer.util``, ``slicer.packaging``, ``SampleData``) and by
the harness's stand-ins and static check.
"""

from __future__ import annotations

import ast
import inspect


def _signature_record(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict:
    a = fn.args
    positional = [p.arg for p in getattr(a, "posonlyargs", [])] + [p.arg for p in a.args]
    return {"args": positional, "defaults": len(a.defaults), "kwonly": [p.arg for p in a.kwonlyargs],
            "kwdefaults": [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None],
            "vararg": a.vararg is not None, "kwarg": a.kwarg is not None}


def _decorators(fn) -> list[str]:
    return [d.id if isinstance(d, ast.Name) else ast.unparse(d) for d in fn.decorator_list]


def module_api(text: str) -> dict:
    """{"functions": {name: signature}, "classes": {name: {"methods": {name: signature + "decorators"}}},
    "names": [other public top-level names]} of the public (not ``_``-prefixed) top level of ``text``."""
    functions, classes, names = {}, {}, set()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            functions[node.name] = _signature_record(node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            methods = {}
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    methods[item.name] = {**_signature_record(item), "decorators": _decorators(item)}
            classes[node.name] = {"bases": [ast.unparse(b) for b in node.bases], "methods": methods}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name) and not target.id.startswith("_"):
                    names.add(target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = (alias.asname or alias.name).split(".")[0]
                if not name.startswith("_") and name != "*":
                    names.add(name)
    return {"functions": functions, "classes": classes, "names": sorted(names - set(functions) - set(classes))}


def signature(record: dict, drop_first: bool = False) -> inspect.Signature:
    """The :class:`inspect.Signature` of a signature record (``drop_first``: a bound method's ``self``)."""
    P = inspect.Parameter
    args = record["args"][1:] if drop_first else record["args"]
    first_default = len(record["args"]) - record["defaults"]
    offset = 1 if drop_first else 0
    params = [P(name, P.POSITIONAL_OR_KEYWORD, default=None if i + offset >= first_default else P.empty)
              for i, name in enumerate(args)]
    if record["vararg"]:
        params.append(P("_varargs", P.VAR_POSITIONAL))
    params += [P(name, P.KEYWORD_ONLY, default=None if name in record["kwdefaults"] else P.empty)
               for name in record["kwonly"]]
    if record["kwarg"]:
        params.append(P("_varkwargs", P.VAR_KEYWORD))
    return inspect.Signature(params)
