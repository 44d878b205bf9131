"""Hand-made mutants of the engine: each plausible bug must make a named test fail.

    python bench/mutants.py [--list | --check] [--only NAME...] [--keep] [--no-baseline]

For each mutant, the repository's files (``git ls-files``: tracked and untracked-but-not-ignored files,
as they are in the working tree, so uncommitted edits count) are copied to a temporary folder, one exact
snippet of one file is replaced by its mutated form, and ``python -m pytest -q -x TESTS`` runs there
(``PYTHONPATH`` = that folder, so the copy, not the installed engine, is imported). A failing pytest
means the mutant is *caught*; a passing one means it is *MISSED*. Before the mutants, the same tests run
once on the unmutated copy and must pass (else a "caught" could be an unrelated failure).

Exit status 0 only when the baseline passes and every mutant is caught. A snippet that is not found
exactly once in its file is an error too (status 2): the code changed, so the mutant must be updated,
not silently skipped. ``--check`` does only that check, on the working tree (no copy, no pytest; the CI
smoke test runs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    original: str  # exact text, found exactly once in the file
    mutated: str
    tests: tuple[str, ...]  # pytest node ids: at least one must fail
    bug: str  # what the mutation means


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "gaussian-as-uniform", "DTCCore/inference/sliding_window.py",
        "    weight = importance_map(patch, blend, device)\n",
        '    weight = importance_map(patch, "uniform", device)\n',
        ("Testing/test_sliding_window.py::test_gaussian_blend_equals_naive_gaussian_loop",),
        "uniform weights used where Gaussian blending is asked for",
    ),
    Mutant(
        "thick-axis-pooled-first", "DTCCore/planning/pools.py",
        "2 if stage >= STAGES - int(p) else 1",
        "2 if stage < int(p) else 1",
        ("Testing/test_pools.py::test_stage_strides_pool_a_thick_axis_last",),
        "an axis pooled fewer than 4 times is halved in the first stages instead of the last",
    ),
    Mutant(
        "lr-of-next-iteration", "DTCCore/training/trainer.py",
        "lr = lr_at(run.iteration, run.config)",
        "lr = lr_at(run.iteration + 1, run.config)",
        ("Testing/test_trainer.py::test_each_iteration_uses_its_own_learning_rate",),
        "the trainer applies the learning rate of the next iteration",
    ),
    Mutant(
        "augment-image-only", "DTCCore/training/batches.py",
        "            out = augment.flips_and_turns(out, rng, self.augment)\n",
        '            out = {**out, "image": augment.flips_and_turns({"image": out["image"]}, rng, self.augment)'
        '["image"]}\n',
        ("Testing/test_augmentation.py::test_batches_keep_image_label_and_sdf_together",),
        "TrainBatches augments the image but not the label and level set",
    ),
    Mutant(
        "augment-transform-image-only", "DTCCore/training/augment.py",
        "        out[key] = np.ascontiguousarray(a)\n",
        '        out[key] = np.ascontiguousarray(a if key == "image" else arrays[key])\n',
        ("Testing/test_augmentation.py::test_label_and_sdf_follow_the_image_voxel_for_voxel",),
        "flips_and_turns() moves the image's voxels only",
    ),
    Mutant(
        "inverse-transform-sign", "DTCCore/model/levelset.py",
        "        return torch.sigmoid(-k * z)\n",
        "        return torch.sigmoid(k * z)\n",
        ("Testing/test_losses.py", "Testing/test_levelset.py"),
        "T^-1(z) = sigmoid(+k z): inside and outside swapped in the consistency loss",
    ),
    Mutant(
        "dice-smoothing-dropped", "DTCCore/model/losses.py",
        "(z_sum + y_sum + DICE_SMOOTH)",
        "(z_sum + y_sum)",
        ("Testing/test_losses.py",),
        "Dice loss without the reference's smoothing term in the denominator",
    ),
    Mutant(
        "threshold-inclusive", "DTCCore/inference/predict.py",
        "label = (source > threshold).astype(np.uint8)",
        "label = (source >= threshold).astype(np.uint8)",
        ("Testing/test_inference.py",),
        "a probability of exactly 0.5 counted as foreground (reference: > 0.5)",
    ),
    Mutant(
        "padding-split", "DTCCore/inference/sliding_window.py",
        "    lo = [p // 2 for p in pads]\n",
        "    lo = [p - p // 2 for p in pads]\n",
        ("Testing/test_sliding_window.py",),
        "a volume smaller than the patch padded with the odd voxel before instead of after",
    ),
    Mutant(
        "ramp-reversed", "DTCCore/model/losses.py",
        "    phase = 1.0 - t / length\n",
        "    phase = t / length\n",
        ("Testing/test_losses.py",),
        "consistency weight ramps down instead of up",
    ),
)


def repository_files(repo: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files that exist in the working tree."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         check=True, capture_output=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (repo / f).is_file()})


def copy_repository(repo: Path, files: list[str], dest: Path) -> None:
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / f, target)


def snippet_problem(mutant: Mutant, root: Path) -> str | None:
    """Why ``mutant`` cannot be applied to the tree at ``root`` (None when its snippet is there exactly once)."""
    path = root / mutant.path
    if not path.is_file():
        return f"{mutant.path} not found"
    count = path.read_text(encoding="utf-8").count(mutant.original)
    if count != 1:
        return f"snippet found {count} times in {mutant.path} (expected once): update the mutant"
    missing = [t for t in mutant.tests if not (root / t.split("::")[0]).is_file()]
    if missing:
        return f"test file(s) not found: {', '.join(missing)}"
    return None


def apply(mutant: Mutant, root: Path) -> str | None:
    """Mutate the copy under ``root``; an error message when the snippet is not there exactly once."""
    problem = snippet_problem(mutant, root)
    if problem is None:
        path = root / mutant.path
        path.write_text(path.read_text(encoding="utf-8").replace(mutant.original, mutant.mutated), encoding="utf-8")
    return problem


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[bool, float, str]:
    """(passed, seconds, last output lines) of ``pytest -q -x tests`` in the copy at ``root``."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                          cwd=root, env=env, capture_output=True, text=True)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
    return proc.returncode == 0, time.monotonic() - t0, tail


def imports_the_copy(root: Path) -> bool:
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", "import DTCCore; print(DTCCore.__file__)"], cwd=root, env=env,
                         capture_output=True, text=True).stdout.strip()
    return Path(out).resolve().is_relative_to(root.resolve()) if out else False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="print the mutants and exit")
    p.add_argument("--check", action="store_true", help="only check that every snippet is in the working tree")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    p.add_argument("--keep", action="store_true", help="keep the temporary copies (their paths are printed)")
    args = p.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        p.error(f"unknown mutant(s): {', '.join(sorted(unknown))}")
    if args.list:
        for m in mutants:
            print(f"{m.name}: {m.bug} ({m.path}; {' '.join(m.tests)})")
        return 0
    if args.check:
        problems = [(m.name, snippet_problem(m, REPO)) for m in mutants]
        for name, problem in problems:
            print(f"{name:30s} {'ERROR: ' + problem if problem else 'ok'}")
        return 2 if any(problem for _, problem in problems) else 0

    files = repository_files(REPO)
    status = 0
    work = Path(tempfile.mkdtemp(prefix="dtc-mutants-"))
    try:
        if not args.no_baseline:
            base = work / "baseline"
            copy_repository(REPO, files, base)
            if not imports_the_copy(base):
                print("error: the copy's DTCCore is not the one imported; cannot run mutants", file=sys.stderr)
                return 2
            tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            passed, seconds, tail = run_tests(base, tests)
            print(f"{'baseline':30s} {'passes' if passed else 'FAILS':8s} {seconds:6.1f} s")
            if not passed:
                print(tail, file=sys.stderr)
                return 2
        for i, m in enumerate(mutants):
            root = work / f"m{i}-{m.name}"
            copy_repository(REPO, files, root)
            problem = apply(m, root)
            if problem:
                print(f"{m.name:30s} {'ERROR':8s} {problem}")
                status = 2
                continue
            passed, seconds, tail = run_tests(root, m.tests)
            print(f"{m.name:30s} {'MISSED' if passed else 'caught':8s} {seconds:6.1f} s  {' '.join(m.tests)}",
                  flush=True)
            if passed:
                status = max(status, 1)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if args.keep:
            print(f"copies kept under {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
