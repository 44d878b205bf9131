"""What VTK's Python wrapping exposes of a VTK-style C++ class (MRML nodes, segmentations, logics, VTK core).

VTK's wrapper makes every public method of a class reachable from Python (static ones on the class too),
plus the methods its ``vtk*Macro`` lines generate (``vtkGetMacro(Name, t)`` -> ``GetName``,
``vtkBooleanMacro(Name, t)`` -> ``NameOn`` / ``NameOff`` ...) and the enumerators of its public enums
(``vtkMRMLPlotSeriesNode.PlotTypeScatter``, ``vtkMRMLScene.EndCloseEvent``). Inherited names come from
the bases. :func:`parse` reads one header's class: ``{"bases": [...], "methods": [...], "constants": [...]}``
(own names only; :func:`classes_from_git` follows the bases). Headers list more than the wrapper exposes
(a method whose argument type cannot be wrapped), never less, so a name missing here is missing in Python.
Used by ``extract_api.py``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

KEYWORDS = {"if", "while", "for", "switch", "return", "sizeof", "operator", "decltype", "static_assert",
            "alignas", "noexcept", "throw", "defined"}
# vtkTypeMacro(Class, Base) and vtkAbstractTypeMacro give every class these (vtkSetGet.h)
TYPE_MACRO_METHODS = ("IsA", "IsTypeOf", "SafeDownCast", "NewInstance", "GetClassName")
SECTION = re.compile(r"\b(public|protected|private)\s*(?:slots|Q_SLOTS)?\s*:(?!:)")


def _strip(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"\\\n", " ", text)  # continued macro lines
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _matching(text: str, start: int, open_: str, close: str) -> int:
    """Index just past the bracket closing the one at ``start``."""
    depth, i = 0, start
    while i < len(text):
        depth += {open_: 1, close: -1}.get(text[i], 0)
        i += 1
        if depth == 0:
            return i
    raise ValueError(f"unbalanced {open_}{close}")


def _split_bases(text: str) -> list[str]:
    """Public base class names of a base clause (template arguments dropped: ``vtkGenericDataArray<...>``)."""
    previous = None
    while previous != text:
        previous, text = text, re.sub(r"<[^<>]*>", "", text)
    bases = []
    for part in text.split(","):
        m = re.match(r"\s*public\s+(?:virtual\s+)?([\w:]+)", part)
        if m:
            bases.append(m.group(1).split("::")[-1])
    return bases


def _find_class(text: str, name: str) -> tuple[list[str], str]:
    pattern = r"\b(?:class|struct)\s+(?:[A-Za-z_]\w*(?:\([^)]*\))?\s+)*" + name + r"\b\s*(?:final\s*)?(:[^{;]*)?\{"
    m = re.search(pattern, text)
    if not m:
        raise ValueError(f"class {name} not found")
    start = m.end() - 1
    end = _matching(text, start, "{", "}")
    return _split_bases((m.group(1) or ":")[1:]), text[start + 1: end - 1]


def _macro_names(macro: str, args: list[str], class_name: str) -> list[str]:
    first = args[0].strip() if args else ""
    if macro in ("vtkTypeMacro", "vtkAbstractTypeMacro", "vtkBaseTypeMacro", "vtkAbstractTemplateTypeMacro",
                 "vtkTemplateTypeMacro", "vtkTypeMacroWithNewInstanceType"):
        return list(TYPE_MACRO_METHODS)
    if macro == "vtkBooleanMacro":
        return [first + "On", first + "Off"]
    if macro == "vtkMRMLNodeNewMacro":
        return ["New", "CreateNodeInstance"]
    if macro == "vtkMRMLCopyContentMacro":
        return ["CopyContent", "HasCopyContent"]
    if macro == "vtkMRMLCopyContentDefaultMacro":
        return ["CopyContent", "HasCopyContent"]
    m = re.match(r"vtk(Get|Set)\w*Macro$", macro)
    if m and re.match(r"^\w+$", first):
        return [m.group(1) + first]
    m = re.match(r"vtkMRML(Get|Set)\w*Macro$", macro)
    if m and re.match(r"^\w+$", first):
        return [m.group(1) + first]
    return []


def _public_declarations(body: str, class_name: str, default: str = "private"):
    """Yield (kind, name) for the public methods, macro-made methods and enumerators of a class body."""
    buf, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "{":  # an inline body, an enum or a nested type: keep only the head
            end = _matching(body, i, "{", "}")
            so_far = "".join(buf)
            labels = SECTION.findall(so_far)
            section = labels[-1] if labels else default
            head = SECTION.split(so_far.rsplit(";", 1)[-1])[-1]
            if re.search(r"\benum\b", head) and section == "public":
                for item in body[i + 1: end - 1].split(","):
                    m = re.match(r"\s*([A-Za-z_]\w*)", item)
                    if m:
                        yield "constant", m.group(1)
            buf.append(";")
            i = end
            continue
        buf.append(ch)
        i += 1
    text = "".join(buf)
    pieces = SECTION.split(text)
    chunks = [(default, pieces[0])] + [(pieces[k], pieces[k + 1]) for k in range(1, len(pieces) - 1, 2)]
    for access, chunk in chunks:
        if access != "public":
            continue
        # macros first (a macro line may lack its semicolon), then declarations
        out, j = [], 0
        for m in re.finditer(r"\b(vtk\w*Macro)\s*\(", chunk):
            if m.start() < j:
                continue
            end = _matching(chunk, m.end() - 1, "(", ")")
            args = chunk[m.end(): end - 1].split(",")
            for name in _macro_names(m.group(1), args, class_name):
                yield "method", name
            out.append(chunk[j: m.start()] + ";")
            j = end
        out.append(chunk[j:])
        for statement in "".join(out).split(";"):
            statement = statement.strip()
            if not statement or re.match(r"(friend|typedef|using|template\s*<[^>]*>\s*friend)\b", statement):
                continue
            statement = re.sub(r"\b[A-Z][A-Z0-9_]+\s*\([^()]*\)", " ", statement)  # VTK_SIZEHINT(...), attributes
            call = re.search(r"(~?[A-Za-z_]\w*)\s*\(", statement)
            if not call:
                continue
            fname = call.group(1)
            if fname in KEYWORDS or fname.lstrip("~") == class_name or "operator" in statement[: call.start() + 9]:
                continue
            if fname.isupper() or fname.startswith("vtk"):  # a macro left over (VTK_LEGACY(...),
                continue  # vtkCreateWrappedArrayInterface(double)): no VTK method name starts with "vtk"
            yield "method", fname


# vtkCommand.h declares its public EventIds enum through macros: ``vtkEventDeclarationMacro(EventIds)`` expands to
# ``enum EventIds { NoEvent = 0, vtkAllEventsMacro() UserEvent = 1000 }`` and vtkAllEventsMacro lists every
# event as ``_vtk_add_event(ModifiedEvent)`` ... (VTK Common/Core/vtkCommand.h), so the enum parser sees none.
EVENT_DECLARATION = re.compile(r"\bvtkEventDeclarationMacro\s*\(")
EVENT_ITEM = re.compile(r"\b_vtk_add_event\s*\(\s*(\w+)\s*\)")
EVENT_BOUNDS = ("NoEvent", "UserEvent")  # the enum's first and last items, written out in the macro


def _declared_events(text: str, body: str) -> set[str]:
    """The enumerators of a vtkEventDeclarationMacro enum in ``body`` (none without one)."""
    if not EVENT_DECLARATION.search(body):
        return set()
    return set(EVENT_ITEM.findall(text)) | set(EVENT_BOUNDS)


def parse(text: str, name: str) -> dict:
    """{"bases", "methods", "constants"} of class ``name`` in header ``text`` (own names, sorted)."""
    bases, body = _find_class(_strip(text), name)
    is_struct = re.search(r"\bstruct\s+(?:[A-Za-z_]\w*\s+)*" + name + r"\b", _strip(text)) is not None
    methods, constants = set(), set()
    for kind, value in _public_declarations(body, name, "public" if is_struct else "private"):
        (methods if kind == "method" else constants).add(value)
    constants |= _declared_events(text, body)
    return {"bases": bases, "methods": sorted(methods), "constants": sorted(constants)}


def header_index(repo: str, ref: str) -> dict[str, str]:
    """{header base name: path} of every ``.h`` / ``.txx`` file at ``ref`` (the first found wins)."""
    files = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", ref], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    index: dict[str, str] = {}
    for path in sorted(files, key=lambda p: ("Testing" in p or "ThirdParty" in p or "Utilities" in p, p)):
        if path.endswith(".h"):
            index.setdefault(path.rsplit("/", 1)[-1][:-2], path)
    return index


def classes_from_git(seeds: list[str], sources: list[tuple[str, str, dict[str, str]]],
                     show: Callable[[str, str, str], str], stop: tuple[str, ...] = ()) -> dict:
    """Parse ``seeds`` and every base they derive from. ``sources``: (repo, ref, header index), searched in
    order; a class is taken from the first source whose index has its header. Returns
    {class: {"bases", "methods", "constants", "header"}}, header = "<ref>:<path>"."""
    out: dict = {}
    todo = list(seeds)
    while todo:
        name = todo.pop()
        if name in out or name in stop:
            continue
        for repo, ref, index in sources:
            if name in index:
                entry = parse(show(repo, ref, index[name]), name)
                entry["header"] = f"{ref}:{index[name]}"
                out[name] = entry
                todo.extend(entry["bases"])
                break
        else:
            raise ValueError(f"no header for {name} in {[ref for _, ref, _ in sources]}")
    return out
