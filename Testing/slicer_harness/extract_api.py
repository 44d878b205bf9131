"""Extract what PythonQt exposes of Slicer's and CTK's widget classes from their C++ headers.

PythonQt makes a QObject's Q_PROPERTYs, signals, public slots and Q_INVOKABLE methods reachable from
Python, nothing else. This script reads those from the headers at a named tag and writes
``api/<name>.json``: ``{"source": ..., "classes": {class: {"base", "properties", "methods", "signals"}}}``
(signals as normalised signatures, e.g. ``currentNodeChanged(vtkMRMLNode*)``). Run it with git
checkouts of Slicer and CTK (not needed by the tests, which read the JSON kept in the repository)::

    python extract_api.py SLICER_GIT_DIR v5.8.1 CTK_GIT_DIR 82cae5781621845486bad2697aed095f04cfbe76

The CTK commit is the one Slicer v5.8.1 pins in ``SuperBuild/External_CTK.cmake``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SLICER_HEADERS = {
    "qMRMLWidget": "Libs/MRML/Widgets/qMRMLWidget.h",
    "qMRMLNodeComboBox": "Libs/MRML/Widgets/qMRMLNodeComboBox.h",
    "qMRMLCheckableNodeComboBox": "Libs/MRML/Widgets/qMRMLCheckableNodeComboBox.h",
    "qMRMLAbstractViewWidget": "Libs/MRML/Widgets/qMRMLAbstractViewWidget.h",
    "qMRMLPlotWidget": "Libs/MRML/Widgets/qMRMLPlotWidget.h",
    "qSlicerCoreApplication": "Base/QTCore/qSlicerCoreApplication.h",
    "qSlicerApplication": "Base/QTGUI/qSlicerApplication.h",
    "qSlicerWidget": "Base/QTGUI/qSlicerWidget.h",
    "qSlicerAbstractModuleWidget": "Base/QTGUI/qSlicerAbstractModuleWidget.h",
    "qSlicerScriptedLoadableModuleWidget": "Base/QTGUI/qSlicerScriptedLoadableModuleWidget.h",
}
# PythonQt decorators add methods to wrapped classes: ``static_<Class>_<name>(...)`` is a static method,
# ``<name>(<Class>* self, ...)`` a member function.
DECORATOR_HEADERS = ["Base/QTCore/qSlicerBaseQTCorePythonQtDecorators.h",
                     "Base/QTGUI/qSlicerBaseQTGUIPythonQtDecorators.h"]
PYTHON_SOURCES = {"ScriptedLoadableModule": "Base/Python/slicer/ScriptedLoadableModule.py"}
CTK_HEADERS = {
    "ctkCollapsibleButton": "Libs/Widgets/ctkCollapsibleButton.h",
    "ctkDirectoryButton": "Libs/Widgets/ctkDirectoryButton.h",
}
SECTION = re.compile(r"^\s*(public|protected|private)?\s*(slots|Q_SLOTS|signals|Q_SIGNALS)?\s*:\s*(?!:)")


def _strip(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _class_body(text: str, name: str) -> tuple[str, str]:
    m = re.search(r"class\s+(?:\w+_EXPORT\s+)?" + name + r"\s*:\s*public\s+([\w:]+)[^{;]*\{", text)
    if not m:
        raise ValueError(f"class {name} not found")
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return m.group(1), text[m.end(): i - 1]


def _drop_inline_bodies(body: str) -> str:
    out, depth = [], 0
    for ch in body:
        if ch == "{":
            depth += 1
            if depth == 1:
                out.append(";")
            continue
        if ch == "}":
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    return "".join(out)


def _normalise_type(param: str) -> str:
    param = re.sub(r"=.*$", "", param).strip()
    param = re.sub(r"\bconst\b", "", param).replace("&", "").strip()
    tokens = param.split()
    if len(tokens) >= 2 and not tokens[-1].endswith("*") and re.match(r"^\*?\w+$", tokens[-1]):
        name = tokens.pop()  # parameter name
        if name.startswith("*"):
            tokens[-1] += "*"
    return "".join(" ".join(tokens).split()) if tokens else ""


def parse(text: str, name: str) -> dict:
    base, body = _class_body(_strip(text), name)
    body = _drop_inline_bodies(body)
    props, methods, signals = set(), set(), set()
    section = "private"
    for statement in body.split(";"):
        lines = statement.strip().splitlines()
        rest = []
        for line in lines:
            m = SECTION.match(line)
            if m and (m.group(1) or m.group(2)):
                section = f"{m.group(1) or 'public'} {m.group(2) or ''}".strip()
                if m.group(2) in ("signals", "Q_SIGNALS"):
                    section = "signals"
                line = line[m.end():]
            rest.append(line)
        decl = " ".join(rest).strip()
        for prop in re.findall(r"Q_PROPERTY\s*\(\s*[\w:<>, ]+?\s+(\w+)\s+(?:READ|MEMBER)", decl):
            props.add(prop)
        decl = re.sub(r"Q_PROPERTY\s*\(.*?\)\s*(?=\w|$)", "", decl)
        call = re.search(r"(~?\w+)\s*\(", decl)
        if not call or "Q_PROPERTY" in decl:
            continue
        fname = call.group(1)
        if fname in (name, "~" + name) or fname.startswith("Q_"):
            continue
        depth, i = 1, call.end()
        while depth and i < len(decl):
            depth += {"(": 1, ")": -1}.get(decl[i], 0)
            i += 1
        inner = re.sub(r"\([^()]*\)", "", decl[call.end(): i - 1])  # default values such as QVariant()
        if section == "signals":
            params = [p for p in inner.split(",") if p.strip()]
            signals.add(f"{fname}({','.join(_normalise_type(p) for p in params)})")
        elif section in ("public slots", "public Q_SLOTS") or ("Q_INVOKABLE" in decl and section == "public"):
            methods.add(fname)
    return {"base": base, "properties": sorted(props), "methods": sorted(methods), "signals": sorted(signals)}


def decorated(text: str, classes: dict) -> None:
    """Add the methods a PythonQt decorator header gives to ``classes`` (in place)."""
    text = _strip(text)
    for cls, name in re.findall(r"\bstatic_(q\w+?)_(\w+)\s*\(", text):
        if cls in classes:
            classes[cls]["methods"] = sorted(set(classes[cls]["methods"]) | {name})
    for name, cls in re.findall(r"\b(\w+)\s*\(\s*(q\w+)\s*\*\s*\w+\s*[,)]", text):
        if cls in classes and not name.startswith(("new_", "delete_", "static_")):
            classes[cls]["methods"] = sorted(set(classes[cls]["methods"]) | {name})


def python_classes(text: str) -> dict:
    """{class: sorted method and class-attribute names} of a Python source file."""
    import ast

    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef):
            names = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            for n in ast.walk(node):  # attributes set on self (self.moduleName = ...)
                if (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                        and getattr(n.value, "id", "") == "self"):
                    names.add(n.attr)
            out[node.name] = sorted(names)
    return out


def git_show(repo: str, ref: str, path: str) -> str:
    return subprocess.run(["git", "-C", repo, "show", f"{ref}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def main(argv: list[str]) -> int:
    slicer_repo, slicer_tag, ctk_repo, ctk_ref = argv
    classes = {name: parse(git_show(slicer_repo, slicer_tag, path), name) for name, path in SLICER_HEADERS.items()}
    classes.update({name: parse(git_show(ctk_repo, ctk_ref, path), name) for name, path in CTK_HEADERS.items()})
    for path in DECORATOR_HEADERS:
        try:
            decorated(git_show(slicer_repo, slicer_tag, path), classes)
        except subprocess.CalledProcessError:
            pass
    python = {name: python_classes(git_show(slicer_repo, slicer_tag, path)) for name, path in PYTHON_SOURCES.items()}
    out = {"source": {"Slicer": f"https://github.com/Slicer/Slicer tag {slicer_tag}",
                      "CTK": f"https://github.com/commontk/CTK commit {ctk_ref} (pinned by Slicer {slicer_tag})",
                      "headers": {**SLICER_HEADERS, **CTK_HEADERS}, "python": PYTHON_SOURCES},
           "classes": classes, "python": python}
    target = Path(__file__).resolve().parent / "api" / f"slicer-{slicer_tag}.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
