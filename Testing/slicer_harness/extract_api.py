"""Extract, from Slicer's source at each supported tag, the API the module and the harness may use.

Written to ``api/slicer-<tag>.json`` (the tests read these files, never a Slicer checkout):

- ``classes``: what PythonQt exposes of Slicer's and CTK's widget classes (Q_PROPERTYs, signals,
  public slots, Q_INVOKABLE methods, PythonQt decorator methods) from their C++ headers: ``{class:
  {"base", "properties", "methods", "signals"}}`` (signals as normalised signatures, e.g.
  ``currentNodeChanged(vtkMRMLNode*)``). CTK's headers are read at the CTK commit the Slicer tag pins in
  ``SuperBuild/External_CTK.cmake``.
- ``vtk``: what VTK's Python wrapping exposes of the MRML / segmentation / logic classes the module uses
  (:data:`VTK_CLASSES`) and of every base they derive from (:mod:`extract_vtk`): ``{class: {"bases",
  "methods", "constants", "header"}}``, own names only (walk ``bases`` for inherited ones). Base
  classes from VTK itself (vtkObject, vtkTable ...) are read at :data:`VTK_REF`.
- ``python`` (``ScriptedLoadableModule`` class members) and ``modules``: the public functions and
  classes, with exact signatures, of ``slicer.util``, ``slicer.packaging`` (null where the tag has none:
  it appeared in 5.12) and ``SampleData`` (:mod:`extract_python`).

Regenerate all four files (Slicer, CTK and Slicer's VTK fork as git clones, bare or not)::

    python Testing/slicer_harness/extract_api.py SLICER_GIT_DIR CTK_GIT_DIR VTK_GIT_DIR \\
        v5.6.2 v5.8.1 v5.10.0 v5.12.3

(``git clone --bare https://github.com/Slicer/Slicer``, ``.../commontk/CTK``, ``.../Slicer/VTK``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

if __package__:
    from . import extract_python, extract_vtk
else:  # run as a script
    import extract_python
    import extract_vtk

SUPPORTED_TAGS = ("v5.6.2", "v5.8.1", "v5.10.0", "v5.12.3")  # the module's supported range (README)

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
PYTHON_MODULES = {"slicer.util": "Base/Python/slicer/util.py", "slicer.packaging": "Base/Python/slicer/packaging.py",
                  "SampleData": "Modules/Scripted/SampleData/SampleData.py"}
# The VTK-wrapped classes the module (DTCSegmentation/**/*.py) calls methods on, by name or through the
# objects it gets (display nodes, segmentations, image data, tables); their bases are added by the
# extractor. Testing/test_slicer_api_versions.py checks that every vtk*/vtkMRML* name in the module is here.
VTK_CLASSES = (
    "vtkMRMLScene", "vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLScalarVolumeDisplayNode",
    "vtkMRMLLabelMapVolumeDisplayNode", "vtkMRMLSegmentationNode", "vtkMRMLSegmentationDisplayNode",
    "vtkMRMLTableNode", "vtkMRMLPlotChartNode", "vtkMRMLPlotSeriesNode", "vtkMRMLPlotViewNode",
    "vtkMRMLProceduralColorNode", "vtkMRMLColorTableNode", "vtkMRMLSubjectHierarchyNode", "vtkMRMLTransformNode",
    "vtkMRMLMarkupsROINode", "vtkMRMLScriptedModuleNode", "vtkMRMLLayoutNode", "vtkMRMLSelectionNode",
    "vtkSegment", "vtkSegmentation", "vtkSlicerSegmentationsModuleLogic",
    "vtkDoubleArray", "vtkStringArray", "vtkTable", "vtkImageData", "vtkColorTransferFunction", "vtkMatrix4x4",
    "vtkVariant", "vtkCommand",
)
# VTK's own headers: the VTK commits the tags pin (VTK 9.2.20230607 at 5.6.2 / 5.8.1, 9.5.2 at 5.10.0,
# 9.6.2 at 5.12.3, SuperBuild/External_VTK.cmake) are not in the stored mirror of Slicer/VTK, whose
# newest tag is v9.0.1: older than all of them. A name found at v9.0.1 that the installed vtk (9.6.2, the
# VTK of 5.12.3) also has is in every VTK between; Testing/test_slicer_api_versions.py checks the second half.
VTK_REF = "v9.0.1"
VTK_NOTE = ("the VTK commits the tag pins are not mirrored; v9.0.1 is older than all of them, and the tests "
            "also check the installed vtk 9.6.2")
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


def ctk_commit(slicer_repo: str, tag: str) -> str:
    """The CTK commit ``SuperBuild/External_CTK.cmake`` pins at ``tag``."""
    text = git_show(slicer_repo, tag, "SuperBuild/External_CTK.cmake")
    m = re.search(r"Slicer_\$\{proj\}_GIT_TAG\s*\n?\s*\"([0-9a-f]{40})\"", text)
    if not m:
        raise ValueError(f"no CTK commit in {tag}:SuperBuild/External_CTK.cmake")
    return m.group(1)


def python_module(repo: str, tag: str, path: str) -> dict | None:
    try:
        text = git_show(repo, tag, path)
    except subprocess.CalledProcessError:
        return None  # not at this tag (slicer.packaging before 5.12)
    return {"path": path, **extract_python.module_api(text)}


def extract(slicer_repo: str, ctk_repo: str, vtk_repo: str, tag: str) -> dict:
    """The API record of one Slicer tag (see the module docstring)."""
    ctk_ref = ctk_commit(slicer_repo, tag)
    classes = {name: parse(git_show(slicer_repo, tag, path), name) for name, path in SLICER_HEADERS.items()}
    classes.update({name: parse(git_show(ctk_repo, ctk_ref, path), name) for name, path in CTK_HEADERS.items()})
    for path in DECORATOR_HEADERS:
        try:
            decorated(git_show(slicer_repo, tag, path), classes)
        except subprocess.CalledProcessError:
            pass
    python = {name: python_classes(git_show(slicer_repo, tag, path)) for name, path in PYTHON_SOURCES.items()}
    sources = [(slicer_repo, tag, extract_vtk.header_index(slicer_repo, tag)),
               (vtk_repo, VTK_REF, extract_vtk.header_index(vtk_repo, VTK_REF))]
    vtk_classes = extract_vtk.classes_from_git(list(VTK_CLASSES), sources, git_show)
    modules = {name: python_module(slicer_repo, tag, path) for name, path in PYTHON_MODULES.items()}
    return {"source": {"Slicer": f"https://github.com/Slicer/Slicer tag {tag}",
                       "CTK": f"https://github.com/commontk/CTK commit {ctk_ref} (pinned by Slicer {tag} in "
                              "SuperBuild/External_CTK.cmake)",
                       "VTK": f"https://github.com/Slicer/VTK tag {VTK_REF} for VTK's own classes ({VTK_NOTE})",
                       "headers": {**SLICER_HEADERS, **CTK_HEADERS}, "python": {**PYTHON_SOURCES, **PYTHON_MODULES}},
            "classes": classes, "python": python, "vtk": vtk_classes, "modules": modules}


def main(argv: list[str]) -> int:
    slicer_repo, ctk_repo, vtk_repo, *tags = argv
    for tag in tags or SUPPORTED_TAGS:
        target = Path(__file__).resolve().parent / "api" / f"slicer-{tag}.json"
        target.write_text(json.dumps(extract(slicer_repo, ctk_repo, vtk_repo, tag), indent=1, sort_keys=True) + "\n")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
