"""``bench/reliability/mutants.py --check``: every hand-made mutant still names a snippet that is in the code
exactly once (a changed line must update its mutant, not silently retire it). test_mutants_caught.py runs them."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, bench_module


def test_every_mutant_snippet_is_in_the_code_once():
    proc = subprocess.run([sys.executable, "bench/reliability/mutants.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) >= 6 and all(line.split()[-1] == "ok" for line in lines), proc.stdout


def test_check_fails_on_a_missing_snippet(tmp_path):
    mutants = bench_module("mutants")
    m = mutants.MUTANTS[0]
    (tmp_path / m.path).parent.mkdir(parents=True)
    (tmp_path / m.path).write_text("nothing here\n")
    assert "found 0 times" in mutants.snippet_problem(m, tmp_path)
    (tmp_path / m.path).write_text(m.original * 2)
    assert "found 2 times" in mutants.snippet_problem(m, tmp_path)
    (tmp_path / m.path).write_text(m.original)
    assert "test file(s) not found" in mutants.snippet_problem(m, tmp_path)
    assert mutants.snippet_problem(m, REPO) is None


def test_a_tree_that_is_not_a_git_checkout_is_copied_without_ignored_files(tmp_path):
    mutants = bench_module("mutants")
    for name in ("DTCCore/a.py", "Testing/test_a.py", "pyproject.toml", "DTCCore/__pycache__/a.cpython-311.pyc",
                 ".git/HEAD", "dtc.egg-info/PKG-INFO", "DTCCore/.manifest.json.x1.tmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert mutants.repository_files(tmp_path) == ["DTCCore/a.py", "Testing/test_a.py", "pyproject.toml"]
