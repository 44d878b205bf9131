"""Static check: every Slicer / MRML / VTK name the module's source uses exists at every supported tag.

At run time the harness's MRML is ``slicer-core`` 5.13 (newer than every supported Slicer), so a call such
as ``vtkSegment.HasTerminology()`` (5.10+) would pass every test. This check reads the module's Python
files (``ast``) and looks each name up in ``api/slicer-<tag>.json`` for every tag of
``api_versions.SUPPORTED_TAGS``:

- ``slicer.<name>`` / ``from slicer import <name>``: a known namespace member or an extracted class;
- ``<VTK class>.<name>`` (``slicer.vtkSegment.GetTerminologyEntryTagName``): that class' own or inherited
  methods and enum constants;
- ``<object>.<Name>`` with a VTK-style name (``Get...``, ``IsA``: capital first, a lower-case letter after)
  on any other object (a node, a display node, a segmentation, an image): a method or constant of some
  extracted class; names only VTK itself declares must also exist in the installed vtk (9.6.2, the VTK of
  Slicer 5.12.3), because VTK's own headers are read at an older tag (``extract_api.VTK_REF``);
- ``slicer.util.<f>(...)``, ``SampleData.SampleDataLogic.<f>(...)``, ``<slicer.packaging>.<f>(...)``: the
  function exists and the call binds to its signature (positional count, keyword names) at every tag;
- a name some tag lacks is accepted only when listed in :data:`GUARDED` AND reached through
  ``getattr(obj, "name", default)`` / ``hasattr(obj, "name")`` (a feature check), never directly.

Attributes of Python modules the file imports (``subprocess.PIPE``, ``qt.QTimer``: Qt is checked at run
time by :mod:`pythonqt`) and lower-case names (Python / PythonQt methods) are not looked up here.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from . import api_versions

# Names some supported tag lacks, each reached only behind a feature check that is tested both ways
# (Testing/test_slicer_api_versions.py runs the code with the name present, with exactly the API of the
# tag that has it, and absent).
GUARDED = {
    # DTCSegmentationLib/dependencies.py: getattr(slicer, "packaging", None); Base/Python/slicer/packaging.py
    # exists from v5.12 only; before it the module falls back on slicer.util.pip_install.
    "slicer.packaging": "getattr(slicer, 'packaging', None), else slicer.util.pip_install",
}
# slicer.<name> that are not classes: what every supported Slicer's Python package `slicer` provides
# (Base/Python/slicer/__init__.py and slicerqt.py at each tag; the harness's stand-ins provide them too).
SLICER_NAMESPACE = {"util", "app", "mrmlScene", "modules", "parameterNodeWrapper", "ScriptedLoadableModule",
                    "selfTests"}
# vtk.<name> that are not classes: VTK's Python utilities (vtk.reference exists since VTK 8.1, older than
# every supported Slicer's VTK 9.2+).
VTK_PYTHON = {"reference"}
VTK_STYLE = re.compile(r"^[A-Z]\w*[a-z]\w*$")  # GetName, IsA, SetAndObserveTableNodeID; not T, PIPE
KNOWN_OBJECTS = {"slicer.mrmlScene": "vtkMRMLScene"}  # Slicer's scene is a vtkMRMLScene at every tag
PYTHON_MODULES = {"slicer.util": "slicer.util", "SampleData": "SampleData", "slicer.packaging": "slicer.packaging"}


@dataclass
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _tags(missing: list[str]) -> str:
    return ", ".join(missing)


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path, self.problems = path, []
        self.modules: set[str] = set()  # names bound to Python modules that are not slicer / vtk
        self.aliases: dict[str, str] = {}  # local name -> "slicer", "vtk", "slicer.util", "slicer.packaging" ...
        self.classes: dict[str, str] = {}  # local name -> VTK class name (from slicer import vtkMRMLScene)
        self.checked_calls: set[int] = set()  # attributes already checked as the function of a call
        self.imports_done = False

    def report(self, node: ast.AST, message: str) -> None:
        self.problems.append(Problem(self.path, getattr(node, "lineno", 0), message))

    # ---- names
    def visit_Import(self, node: ast.Import) -> None:
        if self.imports_done:
            return
        for alias in node.names:
            local = alias.asname or alias.name.split(".")[0]
            if alias.name in ("slicer", "vtk") or alias.name in PYTHON_MODULES:
                self.aliases[local] = alias.name if alias.asname else local
            else:
                self.modules.add(local)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if self.imports_done:
            return
        for alias in node.names:
            local = alias.asname or alias.name
            if node.module == "slicer":
                self.aliases[local] = f"slicer.{alias.name}"
                self._slicer_member(node, alias.name, direct=True)
                if alias.name.startswith("vtk"):
                    self.classes[local] = alias.name
            elif node.module in PYTHON_MODULES:
                self._module_member(node, node.module, [alias.name], None)
            else:
                self.modules.add(local)

    def visit_Assign(self, node: ast.Assign) -> None:
        # x = getattr(slicer, "packaging", None): x stands for slicer.packaging (guarded)
        value = node.value
        if (isinstance(value, ast.Call) and _dotted(value.func) == "getattr" and len(value.args) == 3
                and isinstance(value.args[1], ast.Constant)):
            target = f"{self._resolve(_dotted(value.args[0]))}.{value.args[1].value}"
            for t in node.targets:
                if isinstance(t, ast.Name) and target in PYTHON_MODULES:
                    self.aliases[t.id] = target
        self.generic_visit(node)

    def _resolve(self, dotted: str | None) -> str | None:
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if head in self.aliases:
            return self.aliases[head] + (f".{rest}" if rest else "")
        return dotted

    # ---- checks
    def _slicer_member(self, node: ast.AST, name: str, direct: bool) -> None:
        if name in SLICER_NAMESPACE or name in api_versions.widget_api()["classes"]:
            return
        if name.startswith("vtk"):
            missing = api_versions.missing_tags(lambda tag: name in api_versions.load(tag)["vtk"])
            if missing:
                self.report(node, f"slicer.{name} is not an extracted class at {_tags(missing)} "
                                  "(add it to extract_api.VTK_CLASSES and regenerate, or do not use it)")
            return
        dotted = f"slicer.{name}"
        missing = (api_versions.missing_tags(lambda tag: api_versions.module_api(tag, dotted) is not None)
                   if dotted in PYTHON_MODULES else list(api_versions.SUPPORTED_TAGS))
        if missing and (direct or dotted not in GUARDED):
            how = " (guarded names are reached only through getattr/hasattr)" if dotted in GUARDED else ""
            self.report(node, f"slicer.{name} is missing in Slicer {_tags(missing)}{how}")

    def _module_member(self, node: ast.AST, module: str, path: list[str], call: ast.Call | None,
                       guarded: bool = False) -> None:
        tags = [t for t in api_versions.SUPPORTED_TAGS if api_versions.module_api(t, module) is not None]
        missing = [t for t in tags if api_versions.module_member(t, module, path) is None]
        name = ".".join([module, *path])
        if missing and not (guarded and name in GUARDED):
            self.report(node, f"{name} is missing in Slicer {_tags(missing)}")
            return
        if call is None or any(isinstance(a, ast.Starred) for a in call.args) or any(
                k.arg is None for k in call.keywords):
            return
        refused: dict[str, list[str]] = {}  # error -> tags
        for tag in tags:
            record = api_versions.module_member(tag, module, path)
            if not record:
                continue  # a class or a constant: nothing to bind
            try:
                api_versions.member_signature(record, unbound=len(path) == 2).bind(
                    *call.args, **{k.arg: k.value for k in call.keywords})
            except TypeError as exc:
                refused.setdefault(str(exc), []).append(tag)
        for error, refusing in refused.items():
            self.report(node, f"{name}(...) does not match its signature at Slicer {_tags(refusing)}: {error}")

    def _class_member(self, node: ast.AST, cls: str, name: str) -> None:
        missing = api_versions.missing_tags(lambda tag: name in api_versions.vtk_names(tag, cls))
        if missing:
            self.report(node, f"{cls}.{name} is missing in Slicer {_tags(missing)}")

    def _any_object_member(self, node: ast.AST, name: str) -> None:
        missing = api_versions.missing_tags(lambda tag: name in api_versions.vtk_union(tag))
        if missing:
            self.report(node, f"{name} (called on an MRML/VTK object) is in no extracted class at Slicer "
                              f"{_tags(missing)}")
            return
        import vtk

        tag = api_versions.SUPPORTED_TAGS[-1]
        owners = api_versions.defining_classes(tag, name)
        vtk_only = not any(api_versions.load(tag)["vtk"][c]["header"].startswith(tag + ":") for c in owners)
        if vtk_only and not any(hasattr(getattr(vtk, c, None), name) for c in owners):
            self.report(node, f"{name} is declared by VTK's {', '.join(owners)} at the old VTK tag read, but not "
                              "by the installed vtk (9.6.2, Slicer 5.12.3's VTK)")

    def visit_Call(self, node: ast.Call) -> None:
        func = _dotted(node.func)
        # feature checks: getattr(obj, "name", default) / hasattr(obj, "name")
        if func in ("getattr", "hasattr") and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            owner = self._resolve(_dotted(node.args[0]))
            guarded = func == "hasattr" or len(node.args) == 3
            if owner == "slicer":
                self._slicer_member(node, node.args[1].value, direct=not guarded)
            elif owner in PYTHON_MODULES:
                self._module_member(node, owner, [node.args[1].value], None, guarded)
        if isinstance(node.func, ast.Attribute):
            self._attribute(node.func, node)
            self.checked_calls.add(id(node.func))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) not in self.checked_calls:
            self._attribute(node, None)
        self.generic_visit(node)

    def _attribute(self, node: ast.Attribute, call: ast.Call | None) -> None:
        resolved = self._resolve(_dotted(node))
        owner = self._resolve(_dotted(node.value))
        if owner == "slicer":
            self._slicer_member(node, node.attr, direct=True)
            return
        if owner == "vtk":
            if node.attr not in VTK_PYTHON:
                missing = api_versions.missing_tags(lambda tag: node.attr in api_versions.load(tag)["vtk"])
                if missing:
                    self.report(node, f"vtk.{node.attr} is not an extracted class at {_tags(missing)}")
            return
        for module in PYTHON_MODULES:
            if resolved and resolved.startswith(module + "."):
                path = resolved[len(module) + 1:].split(".")
                if len(path) <= 2:  # a function, a class or a class' method
                    self._module_member(node, module, path, call)
                return
        if owner in self.classes or owner in KNOWN_OBJECTS or (owner or "").startswith(("slicer.vtk", "vtk.vtk")):
            cls = self.classes.get(owner) or KNOWN_OBJECTS.get(owner) or owner.rsplit(".", 1)[-1]
            self._class_member(node, cls, node.attr)
            return
        root = _root(node.value)
        if root in self.modules or root in ("qt", "ctk") or not VTK_STYLE.match(node.attr):
            return
        if root in self.aliases and self.aliases[root] in PYTHON_MODULES:
            return
        self._any_object_member(node, node.attr)


def check_file(path: str | Path, text: str | None = None) -> list[Problem]:
    """The problems of one Python file (``text``: its source, when not read from ``path``)."""
    source = Path(path).read_text(encoding="utf-8") if text is None else text
    checker = _Checker(Path(path).name)
    tree = ast.parse(source)
    for node in ast.walk(tree):  # imports first: a function-level import binds for the whole file here
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            checker.visit(node)
    imports_done = list(checker.problems)
    checker.problems, checker.imports_done = [], True
    for node in tree.body:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            checker.visit(node)
    return imports_done + [p for p in checker.problems]


def check_sources(paths: list[Path]) -> list[Problem]:
    return [problem for path in paths for problem in check_file(path)]
