"""Offline checks of the extension as the Slicer Extensions Index reviews it; each returns a list of problems.

Rules copied from the index (``Slicer/ExtensionsIndex`` at commit 07f1d1b2781c, 2026-08-07):
``scripts/check_description_files.py`` (category list, licence file names, ``project()`` and URL regular
expressions, repository naming) and the catalog-entry schema its ``$schema`` names
(``Slicer/Slicer`` ``Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json``). The checks that need the
network (the schema download, the icon and screenshot URLs answering with an image, the GitHub topic
``3d-slicer-extension``, the size of a fresh clone) are done by the index's CI; see docs/publishing.md.
Used by ``test_extension_description.py``; every function takes the repository root so a test can point
it at a broken copy.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import urllib.parse
from pathlib import Path

EXTENSION = "DTCSegmentation"

# check_description_files.py ACCEPTED_EXTENSION_CATEGORIES (index commit 07f1d1b2781c)
ACCEPTED_EXTENSION_CATEGORIES = (
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda",
    "Converters", "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation",
    "Filtering", "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT",
    "Informatics", "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning",
    "Otolaryngology", "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy",
    "Registration", "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis",
    "Shape Regression", "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging",
    "Supervisely", "Surface Models", "SurfaceLearner", "Tomographic Reconstruction", "Tracking", "Tractography",
    "Training", "Ultrasound", "Utilities", "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools",
    "Web System Tools", "Wizards",
)
# check_license_file: the names it looks for at the repository root, in this order
LICENSE_FILE_NAMES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")
# check_git_repository_name: allowed prefixes of the repository name
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
# check_cmakelists_content: its regular expressions, verbatim
PROJECT_PATTERN = r'project\s*\(\s*([^\s\)\n\r]+)'
ICON_URL_PATTERN = r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)'
SCREENSHOT_URLS_PATTERN = r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)'
# The catalog-entry schema v1.0.1 (Slicer/Slicer main, Schemas/, commit 583e9b37d5): required keys and the type
# of every allowed key ("additionalProperties": false), scm_type's enum and tier's range.
SCHEMA_URL = ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
              "slicer-extension-catalog-entry-schema-v1.0.1.json#")
SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
SCHEMA_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}
SCHEMA_SCM_TYPES = ("git", "local")
SCHEMA_TIER_RANGE = (1, 5)
# The PyTorch extension's name in the index (PyTorch.json, fepegar/SlicerPyTorch)
PYTORCH_EXTENSION = "PyTorch"

# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the standard text with its appendix unfilled
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
APACHE_APPENDIX_TEMPLATE = "Copyright [yyyy] [name of copyright owner]"
COPYRIGHT_LINE = "Copyright 2026 DTCSegmentation contributors"

# What the module may import at file scope: Slicer loads every scripted module at start-up, so a package that
# Slicer's Python lacks breaks the whole module before the user can be asked to install it. Slicer's own
# (slicer, vtk, qt, ctk, NumPy: External_python-numpy.cmake) and SimpleITK (Slicer_USE_SimpleITK ON and
# SuperBuild/External_SimpleITK.cmake at v5.6.2, External_python-SimpleITK.cmake at v5.12.3); our own packages
# (DTCSegmentationLib, DTCCore: bundled by DTCSegmentation/CMakeLists.txt) are followed into their files.
SLICER_PROVIDED = frozenset({"slicer", "vtk", "qt", "ctk", "numpy", "SimpleITK", "__future__"})
OWN_PACKAGES = ("DTCSegmentationLib", "DTCCore")

# The supported range as every description states it (README, s4ext, CMake)
SUPPORTED_RANGE = "5.6 to 5.12"


def read_s4ext(root: Path) -> dict[str, str]:
    """``key value`` lines of DTCSegmentation.s4ext (comments and blank lines skipped)."""
    out = {}
    for line in (root / f"{EXTENSION}.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out[key] = value.strip()
    return out


def cmake_set(content: str, name: str) -> str | None:
    """The quoted value of ``set(NAME "value")`` in a CMakeLists.txt, or None."""
    match = re.search(r'set\s*\(\s*' + re.escape(name) + r'\s+"([^"]*)"', content)
    return match.group(1) if match else None


def license_problems(root: Path) -> list[str]:
    """The index finds a licence file and it is the Apache-2.0 text pyproject.toml declares."""
    found = [n for n in LICENSE_FILE_NAMES if (root / n).is_file()]
    if not found:
        return ["no licence file at the repository root (the index refuses the extension)"]
    problems = []
    text = (root / found[0]).read_text(encoding="utf-8")
    if COPYRIGHT_LINE not in text:
        problems.append(f"{found[0]} lacks the line {COPYRIGHT_LINE!r}")
    standard = text.replace(COPYRIGHT_LINE, APACHE_APPENDIX_TEMPLATE).encode("utf-8")
    if hashlib.sha256(standard).hexdigest() != APACHE_2_SHA256:
        problems.append(f"{found[0]} is not the standard Apache License 2.0 text")
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    if 'license = { text = "Apache-2.0" }' not in pyproject:
        problems.append("pyproject.toml does not declare Apache-2.0")
    return problems


def description_problems(root: Path) -> list[str]:
    """DTCSegmentation.json against the schema and the index's checks, and against the s4ext and CMake."""
    problems = []
    path = root / f"{EXTENSION}.json"
    raw = path.read_bytes()
    if b"\r" in raw:
        problems.append(f"{path.name} has CR line endings (check_json_file_format wants LF only)")
    entry = json.loads(raw)
    problems += [f"{path.name} lacks {k!r}" for k in SCHEMA_REQUIRED if k not in entry]
    for key, value in entry.items():
        if key not in SCHEMA_TYPES:
            problems.append(f"{path.name}: {key!r} is not allowed by the schema")
        elif not isinstance(value, SCHEMA_TYPES[key]) or (SCHEMA_TYPES[key] is int and isinstance(value, bool)):
            problems.append(f"{path.name}: {key!r} must be a {SCHEMA_TYPES[key].__name__}")
    if entry.get("$schema") != SCHEMA_URL:
        problems.append(f"{path.name}: $schema is {entry.get('$schema')!r}, not the v1.0.1 catalog-entry schema")
    if entry.get("category") not in ACCEPTED_EXTENSION_CATEGORIES:
        problems.append(f"{path.name}: category {entry.get('category')!r} is not one the index accepts")
    if "scm_type" in entry and entry["scm_type"] not in SCHEMA_SCM_TYPES:
        problems.append(f"{path.name}: scm_type must be one of {SCHEMA_SCM_TYPES}")
    low, high = SCHEMA_TIER_RANGE
    tier = entry.get("tier", low)
    if isinstance(tier, int) and not low <= tier <= high:
        problems.append(f"{path.name}: tier must be in {low}..{high}")
    if not all(isinstance(d, str) for d in entry.get("build_dependencies", [])):
        problems.append(f"{path.name}: build_dependencies must be names")
    url = str(entry.get("scm_url", ""))
    if urllib.parse.urlsplit(url).scheme not in ("git", "https"):
        problems.append(f"{path.name}: scm_url {url!r} must be git:// or https://")
    repo = Path(urllib.parse.urlsplit(url.strip().strip("/")).path).stem
    if not repo.startswith(REPOSITORY_PREFIXES):
        problems.append(f"repository name {repo!r} must start with 'Slicer'")
    if EXTENSION.lower().startswith("slicer"):
        problems.append("the extension name must not start with 'Slicer'")
    return problems


def consistency_problems(root: Path) -> list[str]:
    """One name, category, dependency list and icon/screenshot set across the JSON, the s4ext and CMake."""
    problems = []
    entry = json.loads((root / f"{EXTENSION}.json").read_text(encoding="utf-8"))
    s4ext = read_s4ext(root)
    cmake = (root / "CMakeLists.txt").read_text(encoding="utf-8")
    names = re.findall(PROJECT_PATTERN, cmake, re.IGNORECASE | re.MULTILINE)
    project = names[0].strip().strip('"').strip("'") if names else None
    stems = {p.stem for p in root.glob("*.json")} & {p.stem for p in root.glob("*.s4ext")}
    if project != EXTENSION or stems != {EXTENSION}:
        problems.append(f"CMake project() {project!r}, JSON/s4ext names {sorted(stems)} and {EXTENSION!r} differ")
    categories = {entry.get("category"), s4ext.get("category"), cmake_set(cmake, "EXTENSION_CATEGORY")}
    if len(categories) != 1:
        problems.append(f"categories differ between the JSON, the s4ext and CMake: {sorted(map(str, categories))}")
    depends_cmake = (cmake_set(cmake, "EXTENSION_DEPENDS") or "NA").split()
    depends = [sorted(entry.get("build_dependencies", [])), sorted(s4ext.get("depends", "NA").split()),
               sorted(depends_cmake)]
    depends = [[d for d in ds if d != "NA"] for ds in depends]
    if not all(d == depends[0] for d in depends):
        problems.append(f"dependencies differ between the JSON, the s4ext and CMake: {depends}")
    if PYTORCH_EXTENSION not in depends[0]:
        problems.append(f"the extension does not depend on the {PYTORCH_EXTENSION} extension")
    if entry.get("scm_url") != "https://" + s4ext.get("scmurl", "").split("://", 1)[-1]:
        problems.append("the JSON's scm_url and the s4ext's scmurl differ")
    icon = re.findall(ICON_URL_PATTERN, cmake, re.IGNORECASE | re.MULTILINE)
    shots = re.findall(SCREENSHOT_URLS_PATTERN, cmake, re.IGNORECASE | re.MULTILINE)
    if not icon or not shots:
        problems.append("CMakeLists.txt lacks EXTENSION_ICONURL or EXTENSION_SCREENSHOTURLS in the index's form")
        return problems
    if icon[0].strip() != s4ext.get("iconurl") or shots[0].split() != s4ext.get("screenshoturls", "").split():
        problems.append("the icon or screenshot URLs of CMake and the s4ext differ")
    problems += _image_url_problems(root, entry, [icon[0].strip(), *shots[0].split()])
    return problems


def _image_url_problems(root: Path, entry: dict, urls: list[str]) -> list[str]:
    """Each URL is raw.githubusercontent.com/<owner>/<repo>/<scm_revision>/<path> of a PNG in this repository."""
    owner_repo = urllib.parse.urlsplit(entry["scm_url"]).path.strip("/").removesuffix(".git")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/{entry.get('scm_revision', 'main')}/"
    problems = []
    for url in urls:
        if not url.startswith(prefix):
            problems.append(f"{url} is not a file of {prefix}")
            continue
        path = root / url[len(prefix):]
        if not path.is_file() or path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
            problems.append(f"{url}: {path.relative_to(root)} is not a PNG file of the repository")
    return problems


def range_problems(root: Path) -> list[str]:
    """README, s4ext, CMake, the module guide and the module's docstring state the supported range, and none an
    older or open-ended one."""
    texts = {"README.md": (root / "README.md").read_text(encoding="utf-8"),
             f"{EXTENSION}.s4ext": read_s4ext(root).get("description", ""),
             "CMakeLists.txt": cmake_set((root / "CMakeLists.txt").read_text(encoding="utf-8"),
                                         "EXTENSION_DESCRIPTION") or "",
             "docs/slicer-module.md": (root / "docs" / "slicer-module.md").read_text(encoding="utf-8"),
             f"{EXTENSION}/{EXTENSION}.py": ast.get_docstring(ast.parse(
                 (root / EXTENSION / f"{EXTENSION}.py").read_text(encoding="utf-8"))) or ""}
    problems = []
    for name, text in texts.items():
        if f"Slicer {SUPPORTED_RANGE}" not in text:
            problems.append(f"{name} does not say 'Slicer {SUPPORTED_RANGE}'")
        stale = re.findall(r"Slicer 5\.\d+ (?:or|and) (?:newer|later)", text)
        if stale:
            problems.append(f"{name} says {stale[0]!r}")
    return problems


def cmake_script_problems(root: Path) -> list[str]:
    """DTCSegmentation/CMakeLists.txt installs every .py of the module and lists no missing file."""
    module = root / EXTENSION
    content = (module / "CMakeLists.txt").read_text(encoding="utf-8").replace("${MODULE_NAME}", EXTENSION)
    block = re.search(r"set\(MODULE_PYTHON_SCRIPTS(.*?)\)", content, re.DOTALL)
    listed = set(block.group(1).split()) if block else set()
    present = {p.relative_to(module).as_posix() for p in module.rglob("*.py") if "__pycache__" not in p.parts}
    problems = [f"{p} is not in MODULE_PYTHON_SCRIPTS (it would not be installed)" for p in sorted(present - listed)]
    problems += [f"MODULE_PYTHON_SCRIPTS lists {p}, which does not exist" for p in sorted(listed - present)]
    return problems


def file_scope_imports(path: Path) -> list[tuple[str, int]]:
    """``(module, level)`` of the imports a Python file runs when it is imported: at module level, in class
    bodies and in ``if``/``try`` blocks, not in functions nor under ``if TYPE_CHECKING``. ``from . import a``
    gives ``("a", 1)``; ``from .b import c`` gives ``("b", 1)``."""
    found: list[tuple[str, int]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((a.name, 0) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.module:
                    found.append((node.module, node.level))
                else:
                    found.extend((a.name, node.level) for a in node.names)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit([s for h in node.handlers for s in h.body])
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.ClassDef, ast.With)):
                visit(node.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def _own_file(root: Path, dotted: str) -> list[Path]:
    """Files run by importing ``dotted`` (an own package's ``__init__`` first), or [] if it is not ours."""
    parts = dotted.split(".")
    base = root / EXTENSION if parts[0] == "DTCSegmentationLib" else root
    files = []
    for i in range(1, len(parts) + 1):
        stem = base.joinpath(*parts[:i])
        if (stem / "__init__.py").is_file():
            files.append(stem / "__init__.py")
        elif stem.with_suffix(".py").is_file():
            files.append(stem.with_suffix(".py"))
    return files


def external_imports(root: Path) -> dict[str, list[str]]:
    """``{top-level package: [files importing it]}`` for everything outside our packages that loading the
    Slicer module imports, following our own packages' file-scope imports."""
    todo = sorted((root / EXTENSION).glob("*.py"))
    seen: set[Path] = set()
    external: dict[str, list[str]] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = ".".join(path.relative_to(root).with_suffix("").parts)
        package = package.removeprefix(f"{EXTENSION}.").removesuffix(".__init__")
        if path.name != "__init__.py":
            package = package.rpartition(".")[0]
        for module, level in file_scope_imports(path):
            if level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (level - 1)]
                candidates = [".".join([*anchor, module])]
            else:
                candidates = [module]
            for dotted in candidates:
                top = dotted.split(".")[0]
                if top in OWN_PACKAGES or (root / EXTENSION / f"{top}.py").is_file():
                    todo.extend(_own_file(root, dotted) or _own_file(root, f"{EXTENSION}Lib.{dotted}"))
                elif top not in sys.stdlib_module_names:
                    external.setdefault(top, []).append(path.relative_to(root).as_posix())
    return external


def import_problems(root: Path) -> list[str]:
    """Loading the module imports nothing but the standard library and what Slicer ships."""
    return [f"{name} is imported at file scope by {', '.join(sorted(set(files)))}; Slicer does not ship it "
            "(import it inside the function that needs it, after dependencies.ensure_torch)"
            for name, files in sorted(external_imports(root).items()) if name not in SLICER_PROVIDED]
