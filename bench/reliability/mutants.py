"""Hand-made mutants of the engine: each plausible bug must make a named test fail.

    python bench/reliability/mutants.py [--list | --check] [--only NAME...] [--keep] [--no-baseline]

For each mutant, the repository's files (``git ls-files``: tracked and untracked-but-not-ignored files,
as they are in the working tree, so uncommitted edits count) are copied to a temporary folder, one exact
snippet of one file is replaced by its mutated form, and ``python -m pytest -q -x TESTS`` runs there
(``PYTHONPATH`` = that folder, so the copy, not the installed engine, is imported). A failing pytest
means the mutant is *caught*; a passing one means it is *MISSED*. Before the mutants, the same tests run
once on the unmutated copy and must pass (else a "caught" could be an unrelated failure). Only pytest's
"tests failed" status counts as caught: a mutant that breaks collection or selects no test is an error.

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

REPO = Path(__file__).resolve().parents[2]


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
        "stage2-lr-from-the-fraction", "DTCCore/training/copypaste_step.py",
        "    run.config.train.stage2_began = i  #",
        "    run.config.train.stage2_began = stage2_start(run.config)  #",
        ("Testing/test_teacher_lr.py::test_the_lr_waits_with_the_gated_teacher",),
        "--teacher-lr stage2 counts stage 2 from --stage1-fraction, not from the iteration a gated teacher started",
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
        ("Testing/test_inference.py::test_a_probability_of_exactly_one_half_is_background",),
        "a probability of exactly 0.5 counted as foreground (reference: > 0.5)",
    ),
    Mutant(
        "padding-split", "DTCCore/inference/sliding_window.py",
        "    lo = [p // 2 for p in pads]\n",
        "    lo = [p - p // 2 for p in pads]\n",
        ("Testing/test_sliding_window.py::test_windows_are_placed_and_cropped_back",),
        "a volume smaller than the patch padded with the odd voxel before instead of after",
    ),
    Mutant(
        "ramp-reversed", "DTCCore/model/losses.py",
        "    phase = 1.0 - t / length\n",
        "    phase = t / length\n",
        ("Testing/test_losses.py",),
        "consistency weight ramps down instead of up",
    ),
    Mutant(
        "manifest-written-in-place", "DTCCore/data/manifest.py",
        '    atomic_write_text(path, json.dumps(data, indent=2) + "\\n")\n',
        '    path.write_text(json.dumps(data, indent=2) + "\\n")\n',
        ("Testing/test_rewrite_faults.py::test_manifest_keeps_the_previous_entries",),
        "manifest.json rewritten in place: a write that fails partway leaves the annotator's dataset truncated",
    ),
    Mutant(
        "reference-geometry-axis-aligned", "DTCSegmentation/DTCSegmentationLib/results.py",
        "    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)\n",
        "    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)\n"
        "    axis_aligned = np.diag([*reference.GetSpacing(), 1.0])\n"
        "    axis_aligned[:3, 3] = reference.GetOrigin()\n"
        "    node.GetSegmentation().SetConversionParameter(\n"
        "        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),\n"
        "        slicer.vtkSegmentationConverter.SerializeImageGeometry(\n"
        "            slicer.util.vtkMatrixFromArray(axis_aligned), reference.GetImageData()))\n",
        ("Testing/test_slicer_results_geometry.py",),
        "the segmentation's stored reference geometry axis-aligned, not the oblique volume's (Segment Editor "
        "would paint on a wrong grid; an export through the volume hides it)",
    ),
    Mutant(
        "probabilities-resampled-nearest", "DTCCore/inference/predict.py",
        "        seg, lsf = resize_linear(seg, inner_shape), resize_linear(lsf, inner_shape)\n",
        "        seg, lsf = (torch.nn.functional.interpolate(torch.from_numpy(a)[None], size=inner_shape,\n"
        '                                                    mode="nearest-exact")[0].numpy() for a in (seg, lsf))\n',
        ("Testing/test_resample.py::test_outputs_linear_on_the_model_grid_come_back_as_the_analytic_ramp",),
        "a plan model's probabilities and level sets brought back to the scan's grid by nearest neighbour",
    ),
    Mutant(
        "hd95-as-maximum", "DTCCore/evaluation/metrics.py",
        '        "hd95_vox": float(binary.hd95(pred, truth)),\n',
        '        "hd95_vox": float(binary.hd(pred, truth)),\n',
        ("Testing/test_metrics.py::test_hand_computed_case_where_the_95th_percentile_is_not_the_maximum",),
        "the Hausdorff distance's maximum reported as its 95th percentile",
    ),
    Mutant(
        "curves-without-data", "DTCCore/evaluation/preview.py",
        'isinstance(r.get("losses"), dict)]',
        'isinstance(r.get("losses"), list)]',
        ("Testing/test_preview.py::test_curves_png",),
        "curves.png drawn without the progress records (a valid PNG that says 'no progress yet')",
    ),
    Mutant(
        "levelset-zero-outside", "DTCCore/model/levelset.py",
        "    sdf[_inner_boundary(mask, face)] = 0.0\n",
        "    sdf[_inner_boundary(~mask, face)] = 0.0\n",
        ("Testing/test_augment_nnunet.py::test_train_batches_with_nnunet_augment_are_deterministic_and_aligned",),
        "the level-set target's zero on the outer boundary (outside voxels at 0, not positive)",
    ),
)


# Left out of a copy of a tree that is not a git checkout (an unpacked archive): .gitignore's folders.
NOT_COPIED = {".git", "__pycache__", ".pytest_cache", ".venv", "build", "dist", "out", "runs"}


def repository_files(repo: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files that exist in the working tree (outside a git checkout:
    every file but those under NOT_COPIED, ``*.egg-info`` and ``*.tmp``)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                             check=True, capture_output=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        files = []
        for folder, dirs, names in os.walk(repo):
            dirs[:] = [d for d in dirs if d not in NOT_COPIED and not d.endswith(".egg-info")]
            files += [str((Path(folder) / n).relative_to(repo)) for n in names if not n.endswith(".tmp")]
        return sorted(files)
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


PYTEST_TESTS_FAILED = 1  # pytest's exit status when tests ran and some failed (2-5: errors, no tests)


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[int, float, str]:
    """(pytest exit status, seconds, last output lines) of ``pytest -q -x tests`` in the copy at ``root``."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                          cwd=root, env=env, capture_output=True, text=True)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
    return proc.returncode, time.monotonic() - t0, tail


def run_mutant(mutant: Mutant, root: Path) -> tuple[str, float, str]:
    """Apply ``mutant`` to the copy at ``root``, run its tests, put the file back.

    Returns (outcome, seconds, last output lines); outcome is "caught" (its tests failed), "MISSED" (they
    passed) or "ERROR" (the snippet is not there once, or pytest could not run them: collection error, no test).
    """
    path = root / mutant.path
    original = path.read_text(encoding="utf-8") if path.is_file() else None
    problem = apply(mutant, root)
    if problem:
        return "ERROR", 0.0, problem
    try:
        code, seconds, tail = run_tests(root, mutant.tests)
    finally:
        if original is not None:
            path.write_text(original, encoding="utf-8")
    outcome = "caught" if code == PYTEST_TESTS_FAILED else "MISSED" if code == 0 else "ERROR"
    return outcome, seconds, tail


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
            print(f"{name:32s} {'ERROR: ' + problem if problem else 'ok'}")
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
            code, seconds, tail = run_tests(base, tests)
            print(f"{'baseline':32s} {'passes' if code == 0 else 'FAILS':8s} {seconds:6.1f} s")
            if code != 0:
                print(tail, file=sys.stderr)
                return 2
        for i, m in enumerate(mutants):
            root = work / f"m{i}-{m.name}"
            copy_repository(REPO, files, root)
            outcome, seconds, tail = run_mutant(m, root)
            if args.keep and outcome != "ERROR":
                apply(m, root)  # kept as mutated, for a look
            print(f"{m.name:32s} {outcome:8s} {seconds:6.1f} s  {' '.join(m.tests)}", flush=True)
            if outcome == "ERROR":
                print(tail, file=sys.stderr)
                status = 2
            elif outcome == "MISSED":
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
