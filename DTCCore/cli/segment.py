"""``dtc segment IMAGE... -o OUT_DIR``: whole-volume inference, outputs on the input's exact grid."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..config import PRECISIONS
from ..errors import DTCError
from ..protocol import OUTPUT_KINDS, Event
from . import device_argument, events

SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "sample" / "la_sample_image.nrrd"

HELP = """\
Segment 3D scans. For each IMAGE (any format SimpleITK reads) OUT_DIR receives, with exactly the
input's size, spacing, origin and direction:
  <case>_seg.nrrd           label map (1 = structure; with several classes 1..C)
  <case>_levelset.nrrd      the level-set head: signed distance, negative inside, in [-1, 1]
                            (a model with C > 1 classes: <case>_levelset_<c>.nrrd, one per class)
  <case>_disagreement.nrrd  |p_seg - sigmoid(-k * levelset)|: where the two heads disagree
Without --model the bundled default model is used. A scan more than 2x larger along an axis than the
model's training scans (dtc info: training_extent_mm) gets a one-line warning: use --roi to crop it.
"""
ROI_HINT = "dtc segment --roi X0 Y0 Z0 X1 Y1 Z1, voxel indices"  # how to crop, named in the size warning


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment scans", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="scans to segment")
    p.add_argument("--sample", action="store_true", help="segment the bundled left-atrium MRI sample case")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the results (created)")
    p.add_argument("--model", metavar="MODEL", help="model.pt from 'dtc train' (default: the bundled model)")
    p.add_argument("--device", type=device_argument, metavar="auto|cpu|cuda|cuda:N", default="auto",
                   help="default auto: CUDA when present")
    p.add_argument("--overlap", type=float, metavar="F", help="window overlap in [0, 1) (default: the model's, 0.5)")
    p.add_argument("--stride", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="explicit window stride (reference LA: 18 18 4)")
    p.add_argument("--batch-windows", type=int, metavar="B", help="windows per forward pass (default 4)")
    p.add_argument("--whole-volume", action="store_true",
                   help="one forward pass over the whole scan instead of windows (faster on a CPU; up to 8 M voxels)")
    p.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=None,
                   help="keep only the largest connected component of each class (--no-largest-component: keep "
                        "every component); default: the model's own setting (on for the bundled model, chosen "
                        "on validation scans)")
    p.add_argument("--roi", type=int, nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                   help="segment only this box of voxel indices (X1 Y1 Z1 excluded; outside: background); "
                        "for a whole-field scan, a box around the structure the model was trained on")
    # --mirror / --no-mirror: the options' old names, still accepted (the Slicer module passes them).
    p.add_argument("--tta", "--mirror", dest="tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: average over the flips the model was trained with, or over its "
                        "90-degree turns for a model trained with --augment no-mirror (up to 4x the time; no "
                        "effect for --augment none); default: the model's own setting (on for the bundled "
                        "model, chosen on validation scans). --mirror/--no-mirror are the old names")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="forward-pass precision (default: the model's, auto: bf16 on a GPU or CPU with native bf16, "
                        "AVX512-BF16 or AMX; else fp32, as bf16 is emulated and slower on other CPUs)")
    p.add_argument("--format", choices=("nrrd", "nii.gz"), default="nrrd", help="output file format")
    p.add_argument("--preview", action="store_true", help="also write <case>_preview.png (three slices)")
    p.add_argument("--overwrite", action="store_true", help="replace existing result files")
    events.add_options(p)  # --jsonl: progress/results as JSON lines; --cancel-file: stop between windows
    p.set_defaults(run=run)


def output_paths(out_dir: Path, case: str, fmt: str, num_classes: int = 1) -> dict[str, Path]:
    """Result files of one case; one level-set file per class for multi-class models."""
    kinds = list(OUTPUT_KINDS)
    if num_classes > 1:
        kinds[1:2] = [f"levelset_{c}" for c in range(1, num_classes + 1)]
    return {kind: out_dir / f"{case}_{kind}.{fmt}" for kind in kinds}


def result_arrays(pred) -> dict:
    """``{kind: (X, Y, Z) array}`` matching :func:`output_paths`."""
    arrays = {"seg": pred.label, "disagreement": pred.disagreement}
    if pred.levelset.ndim == 3:
        arrays["levelset"] = pred.levelset
    else:
        arrays.update({f"levelset_{c + 1}": pred.levelset[c] for c in range(pred.levelset.shape[0])})
    return arrays


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..data.images import case_name, read_image, write_image
    from ..inference.predict import predict_volume
    from ..model.checkpoint import load_model_with_extra
    from ..planning.extent import model_training_extent
    from ..runtime.devices import describe_device, resolve_device
    from ..runtime.precision import describe_precision

    images = [Path(p) for p in args.images]
    if args.sample:
        images.append(SAMPLE_IMAGE)
    if not images:
        raise DTCError("no IMAGE given; name one or more scans, or use --sample for the bundled case")
    out_dir = Path(args.output)
    _check_output_dir(out_dir)
    names = [case_name(p) for p in images]
    if len(set(names)) != len(names):
        raise DTCError("two inputs have the same case name; their results would overwrite each other")

    device = resolve_device(args.device)
    model, config, extra = load_model_with_extra(args.model, device)
    model_mm = model_training_extent(extra["path"], extra)
    roi = parse_roi(getattr(args, "roi", None))
    if not args.overwrite:
        existing = [p for n in names
                    for p in output_paths(out_dir, n, args.format, config.network.num_classes).values() if p.exists()]
        if existing:
            raise DTCError(f"{existing[0]} already exists; add --overwrite or choose another -o folder")
    config.override({
        "infer.overlap": args.overlap,
        "infer.stride": tuple(args.stride) if args.stride is not None else None,
        "infer.batch_windows": args.batch_windows,
        "infer.largest_component": getattr(args, "largest_component", None),
        "infer.whole_volume": True if args.whole_volume else None,
        "infer.tta": getattr(args, "tta", None),  # the config key keeps its old name (config.InferConfig)
        "infer.precision": getattr(args, "precision", None),
    })
    config.validate()
    source = args.model or "the bundled default model"
    precision = describe_precision(config.infer.precision, device)
    print(f"model: {source}; {describe_plan(config)}; device: {describe_device(device)}; precision: {precision}",
          file=sys.stderr)
    jsonl, cancelled = getattr(args, "jsonl", False), events.cancel_check(getattr(args, "cancel_file", None))
    if jsonl:
        from ..data.labels import read_table

        # the label table goes with the results: a driver names the segments without a dtc info of its own
        table = read_table(extra["path"], extra, config.network.num_classes)
        events.emit(Event.START, device=describe_device(device), precision=precision, total=len(images),
                    num_classes=config.network.num_classes, labels=table, threads=torch.get_num_threads())

    for path, case in zip(images, names):
        t0 = time.perf_counter()
        image, geometry = read_image(path)
        _warn_if_oversize(case, image.shape, geometry.spacing, roi, model_mm, jsonl)
        with tqdm(desc=case, unit="window", leave=False, dynamic_ncols=True, file=sys.stderr, disable=jsonl) as bar:
            def progress(done: int, total: int) -> None:
                events.raise_if_cancelled(cancelled, "segment")
                if jsonl:
                    events.emit(Event.PROGRESS, case=case, done=done, total=total)
                bar.total = total
                bar.update(done - bar.n)

            pred = predict_volume(model, image, config, device, roi=roi, progress=progress, log=bar.write,
                                  spacing=geometry.spacing)
        arrays = result_arrays(pred)
        targets = output_paths(out_dir, case, args.format, config.network.num_classes)
        _write_all(out_dir, arrays, targets, geometry, write_image)
        if args.preview:
            from ..evaluation.preview import save_preview

            lsf = pred.levelset if pred.levelset.ndim == 3 else pred.levelset[0]
            save_preview(out_dir / f"{case}_preview.png", image, pred.label, lsf, geometry.spacing, title=case)
        if jsonl:
            events.emit(Event.CASE_DONE, case=case, files={k: str(v) for k, v in targets.items()},
                        seconds=round(time.perf_counter() - t0, 2))
        voxels = int(np.count_nonzero(pred.label))
        ml = voxels * float(np.prod(geometry.spacing)) / 1000.0
        print(f"{case}: {voxels} voxels ({ml:.1f} ml) segmented in {time.perf_counter() - t0:.1f} s -> "
              f"{targets['seg']}", file=sys.stderr)
    return 0


def parse_roi(values: list[int] | None) -> tuple[slice, slice, slice] | None:
    """``--roi X0 Y0 Z0 X1 Y1 Z1`` -> three (x, y, z) slices (None without the option)."""
    if values is None:
        return None
    low, high = values[:3], values[3:]
    if any(v < 0 for v in values) or any(b <= a for a, b in zip(low, high)):
        raise DTCError(f"--roi {' '.join(map(str, values))}: give X0 Y0 Z0 X1 Y1 Z1 voxel indices with "
                       "0 <= X0 < X1 (the same for Y and Z)")
    return tuple(slice(a, b) for a, b in zip(low, high))  # type: ignore[return-value]


def _warn_if_oversize(case: str, shape, spacing, roi, model_mm, jsonl: bool) -> None:
    """One line (and an ``extent-warning`` event) when the segmented box is much larger than the model's
    training scans (:mod:`DTCCore.planning.extent`)."""
    from ..planning.extent import oversize_warning, physical_extent

    size = [len(range(*s.indices(n))) for s, n in zip(roi, shape)] if roi is not None else list(shape)
    scan_mm = physical_extent(size, spacing)
    text = oversize_warning(scan_mm, model_mm, ROI_HINT)
    if text is None:
        return
    events.log(f"warning: {case}: {text}")
    if jsonl:
        events.emit(Event.EXTENT_WARNING, case=case, text=text, scan_mm=[round(v, 1) for v in scan_mm],
                    model_mm=list(model_mm))


def describe_plan(config) -> str:
    """One line on the grid and window a model works on, e.g. ``grid 1.5x1.5x1.5 mm, whole volume``."""
    spacing = config.plan.spacing
    flat = int(config.network.dims) == 2
    if spacing is None:
        grid = "each scan's own grid"
    elif flat:  # a 2-D model resamples the plane only (dims.model_grid)
        grid = "grid " + "x".join(f"{v:g}" for v in spacing[:2]) + " mm in-plane, the scan's own slices"
    else:
        grid = "grid " + "x".join(f"{v:g}" for v in spacing) + " mm"
    window = ("whole volume in one pass" if config.infer.whole_volume
              else "windows " + "x".join(str(p) for p in config.train.patch))
    return (("2-D model, slice by slice; " if flat else "") + f"{grid}, {window}" + _describe_tta(config)
            + (", largest component kept" if config.infer.largest_component else ""))


def _describe_tta(config) -> str:
    """``", test-time augmentation (flips)"`` or ``(turns)``: what ``infer.tta`` averages over for this
    model (inference/tta.py); ``""`` when it is off or the model has nothing to average over (``--augment none``)."""
    if not config.infer.tta:
        return ""
    from ..inference.tta import tta_flip_axes, tta_turns

    augment = config.train.augment
    kinds = (["flips"] if tta_flip_axes(augment) else []) + (
        ["turns"] if tta_turns(augment, config.train.patch, config.network.pools) != (0,) else [])
    return f", test-time augmentation ({' and '.join(kinds)})" if kinds else ""


def _check_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DTCError(f"output {out_dir} is a file; -o needs a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".dtc-write-test-"):
            pass
    except OSError as exc:
        raise DTCError(f"cannot write to output folder {out_dir} ({exc.strerror}); choose a writable folder") from None


def _write_all(out_dir: Path, arrays: dict, targets: dict[str, Path], geometry, write_image) -> None:
    """Write every result of a case into a staging folder, then move them all into place.

    A failure (disk full, ...) leaves no result file of that case, not some of them.
    """
    staging = Path(tempfile.mkdtemp(prefix=".dtc-staging-", dir=out_dir))
    try:
        for kind, target in targets.items():
            write_image(staging / target.name, arrays[kind], geometry)
        for kind, target in targets.items():
            (staging / target.name).replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
