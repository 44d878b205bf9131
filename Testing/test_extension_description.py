"""The extension passes what the Slicer Extensions Index checks offline (rules and sources: extension_checks.py).

Each check runs on this repository and on a copy broken in the one way it guards against, so every
assertion is seen to fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import extension_checks as ec

REPO = Path(__file__).resolve().parent.parent
COPIED = ("LICENSE", "pyproject.toml", "README.md", "CMakeLists.txt", "DTCSegmentation.json", "DTCSegmentation.s4ext",
          "DTCSegmentation", "DTCCore", "docs/screenshot.png", "docs/slicer-module.md")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The files the checks read, copied (models and sample data left out: no check reads them)."""
    for name in COPIED:
        src, dst = REPO / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.nrrd"))
        else:
            shutil.copy2(src, dst)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}: the test's breakage no longer applies"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_license_is_the_apache_2_text(copy):
    assert ec.license_problems(REPO) == []
    edit(copy / "LICENSE", "2. Grant of Copyright License.", "2. Grant of License.")
    assert ec.license_problems(copy) == ["LICENSE is not the standard Apache License 2.0 text"]
    (copy / "LICENSE").unlink()
    assert ec.license_problems(copy) == ["no licence file at the repository root (the index refuses the extension)"]


@pytest.mark.parametrize("key, value, expected", [
    ("category", "AI Segmentation", "category 'AI Segmentation' is not one the index accepts"),
    ("$schema", "https://example.org/schema.json", "not the v1.0.1 catalog-entry schema"),
    ("tier", 6, "tier must be in 1..5"),
    ("tier", "1", "'tier' must be a int"),
    ("homepage", "https://example.org", "'homepage' is not allowed by the schema"),
    ("scm_url", "https://github.com/DTCSegmentation/DTCSegmentation.git", "must start with 'Slicer'"),
])
def test_catalog_entry_follows_the_schema_and_the_index(copy, key, value, expected):
    assert ec.description_problems(REPO) == []
    path = copy / "DTCSegmentation.json"
    entry = json.loads(path.read_text())
    entry[key] = value
    path.write_text(json.dumps(entry, indent=2) + "\n")
    problems = ec.description_problems(copy)
    assert len(problems) == 1 and expected in problems[0], problems


def test_catalog_entry_has_the_required_keys_and_lf_endings(copy):
    path = copy / "DTCSegmentation.json"
    entry = json.loads(path.read_text())
    del entry["category"]
    path.write_bytes(json.dumps(entry, indent=2).replace("\n", "\r\n").encode())
    problems = ec.description_problems(copy)
    assert any("CR line endings" in p for p in problems) and any("lacks 'category'" in p for p in problems)


@pytest.mark.parametrize("file, old, new, expected", [
    ("CMakeLists.txt", "project(DTCSegmentation)", "project(SlicerDTCSegmentation)", "CMake project()"),
    ("CMakeLists.txt", 'set(EXTENSION_DEPENDS "PyTorch")', 'set(EXTENSION_DEPENDS "NA")', "dependencies differ"),
    ("DTCSegmentation.s4ext", "category Segmentation", "category Utilities", "categories differ"),
    ("DTCSegmentation.s4ext", "main/docs/screenshot.png", "main/docs/screenshot2.png", "URLs of CMake and the s4ext"),
])
def test_json_s4ext_and_cmake_agree(copy, file, old, new, expected):
    assert ec.consistency_problems(REPO) == []
    edit(copy / file, old, new)
    problems = ec.consistency_problems(copy)
    assert len(problems) >= 1 and all(expected in p for p in problems), problems


def test_icon_and_screenshot_urls_name_png_files_of_the_repository(copy):
    for name in ("CMakeLists.txt", "DTCSegmentation.s4ext"):
        edit(copy / name, "main/docs/screenshot.png", "main/docs/screenshot2.png")
    assert ec.consistency_problems(copy) == [
        "https://raw.githubusercontent.com/DTCSegmentation/SlicerDTCSegmentation/main/docs/screenshot2.png: "
        "docs/screenshot2.png is not a PNG file of the repository"]


def test_pytorch_comes_through_the_pytorch_extension(copy):
    edit(copy / "CMakeLists.txt", 'set(EXTENSION_DEPENDS "PyTorch")', 'set(EXTENSION_DEPENDS "NA")')
    edit(copy / "DTCSegmentation.s4ext", "depends PyTorch", "depends NA")
    path = copy / "DTCSegmentation.json"
    path.write_text(path.read_text().replace('"PyTorch"', ""))
    path.write_text(json.dumps(dict(json.loads(path.read_text()), build_dependencies=[])))
    assert ec.consistency_problems(copy) == ["the extension does not depend on the PyTorch extension"]


@pytest.mark.parametrize("file, old, new", [
    ("README.md", "Slicer 5.6 to 5.12", "Slicer 5.8 and newer"),
    ("DTCSegmentation.s4ext", "Slicer 5.6 to 5.12", "Slicer 5.8 or newer"),
    ("CMakeLists.txt", "Slicer 5.6 to 5.12", "Slicer 5.6 to 5.10"),
    ("docs/slicer-module.md", "Slicer 5.6 to 5.12**", "Slicer 5.8 and newer**"),
    ("DTCSegmentation/DTCSegmentation.py", "Slicer 5.6 to 5.12", "Slicer 5.8 and newer"),
])
def test_supported_range_is_stated_the_same_everywhere(copy, file, old, new):
    assert ec.range_problems(REPO) == []
    edit(copy / file, old, new)
    problems = ec.range_problems(copy)
    assert problems and all(p.startswith(file) for p in problems), problems


def test_supported_range_matches_the_versions_the_harness_checks():
    from slicer_harness.api_versions import SUPPORTED_TAGS

    minors = sorted({".".join(tag.lstrip("v").split(".")[:2]) for tag in SUPPORTED_TAGS},
                    key=lambda v: tuple(map(int, v.split("."))))
    assert f"{minors[0]} to {minors[-1]}" == ec.SUPPORTED_RANGE


def test_cmake_installs_every_module_file(copy):
    assert ec.cmake_script_problems(REPO) == []
    (copy / "DTCSegmentation" / "DTCSegmentationLib" / "extra.py").write_text("")
    edit(copy / "DTCSegmentation" / "CMakeLists.txt", "  ${MODULE_NAME}Lib/curves.py\n", "")
    assert ec.cmake_script_problems(copy) == [
        "DTCSegmentationLib/curves.py is not in MODULE_PYTHON_SCRIPTS (it would not be installed)",
        "DTCSegmentationLib/extra.py is not in MODULE_PYTHON_SCRIPTS (it would not be installed)"]
    (copy / "DTCSegmentation" / "DTCSegmentationLib" / "jobs" / "enginejob.py").unlink()
    missing = "MODULE_PYTHON_SCRIPTS lists DTCSegmentationLib/jobs/enginejob.py, which does not exist"
    assert missing in ec.cmake_script_problems(copy)


def test_loading_the_module_imports_only_what_slicer_ships(copy):
    assert ec.import_problems(REPO) == []
    found = ec.external_imports(REPO)
    assert {"slicer", "numpy"} <= set(found) and "torch" not in found  # the walk reaches the module's own files
    # a third-party import two levels down (module -> DTCSegmentationLib -> DTCCore) is found
    edit(copy / "DTCCore" / "errors.py", "from __future__ import annotations\n",
         "from __future__ import annotations\n\nimport torch\n")
    problems = ec.import_problems(copy)
    assert len(problems) == 1 and problems[0].startswith("torch is imported at file scope by DTCCore/errors.py")


def test_file_scope_imports_skip_functions_and_type_checking(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
                    "def f():\n    import scipy\ntry:\n    import tqdm\nexcept ImportError:\n    pass\n"
                    "class C:\n    import medpy\nfrom . import sibling\nfrom ..pkg import thing\n")
    assert ec.file_scope_imports(path) == [("typing", 0), ("tqdm", 0), ("medpy", 0), ("sibling", 1), ("pkg", 2)]
