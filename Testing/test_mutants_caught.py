"""The hand-made mutants of ``bench/reliability/mutants.py`` run in CI: each plausible bug must make its named
tests fail.

The repository (``git ls-files``, as in the working tree) is copied once to a temporary folder; each mutant
is applied there (never in place), its tests run with ``pytest -q -x`` in a child process that imports the
copy, and the file is put back. Only pytest's "tests failed" status counts: a mutant that breaks collection
or selects no test fails here as an error, so does one whose tests pass (MISSED). The tests themselves pass
on the unmutated code elsewhere in this suite, which is the baseline ``bench/reliability/mutants.py`` runs first.

All 17 mutants run, each on the narrowest tests that catch it: 75 s of CPU for the file (user + sys, most
of it each child's imports of torch and slicer; the slowest mutant, lr-of-next-iteration, trains a few
iterations), 148 s of wall time on a 2-core machine shared at load 7 (measured; bench/results/reliability.md,
"Mutants").
Marked ``mutants``: ``-m "not mutants"`` leaves them out of a quick local run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, bench_module

mutants = bench_module("mutants")
pytestmark = pytest.mark.mutants


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """One copy of the repository for every mutant (each puts its file back)."""
    root = tmp_path_factory.mktemp("mutants") / "repo"
    mutants.copy_repository(REPO, mutants.repository_files(REPO), root)
    assert mutants.imports_the_copy(root), "the child process would not import the copy's DTCCore"
    return root


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=[m.name for m in mutants.MUTANTS])
def test_mutant_is_caught_by_its_tests(copy, mutant):
    before = (copy / mutant.path).read_bytes()
    outcome, seconds, tail = mutants.run_mutant(mutant, copy)
    assert (copy / mutant.path).read_bytes() == before  # put back for the next mutant
    assert outcome == "caught", f"{mutant.name} ({mutant.bug}): {outcome} after {seconds:.1f} s\n{tail}"


def test_a_mutant_whose_tests_pass_is_missed_and_one_that_selects_nothing_is_an_error(copy):
    harmless = mutants.Mutant("comment-added", "DTCCore/evaluation/metrics.py", '    """Metrics of a binary prediction',
                              '    # a comment\n    """Metrics of a binary prediction',
                              ("Testing/test_metrics.py::test_identical_and_shifted",), "no change in behaviour")
    assert mutants.run_mutant(harmless, copy)[0] == "MISSED"
    nothing = mutants.Mutant("no-test", harmless.path, harmless.original, harmless.mutated,
                             ("Testing/test_metrics.py::no_such_test",), "selects no test")
    assert mutants.run_mutant(nothing, copy)[0] == "ERROR"
