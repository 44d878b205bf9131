"""``dtc evaluate PRED LABEL``: the paper's metrics for one pair of files or two folders of cases."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import atomic_write_text
from ..errors import DTCError

if TYPE_CHECKING:
    from ..data.images import Geometry  # imported where used at run time: io loads SimpleITK

HELP = """\
Compare predicted label maps with reference labels: Dice and Jaccard (%), average surface distance
(ASD) and 95%% Hausdorff distance (95HD) in voxels (as the paper reports them, MedPy's dc/jc/asd/hd95)
and in mm. PRED and LABEL are two files, or two folders whose files are matched by case name
(<case>_seg.nrrd matches <case>.nrrd, <case>_label.nrrd or <case>/label.nrrd).
A distance is undefined (nan) when exactly one of the two masks is empty.
Multi-class label maps need no option: the classes are the nonzero values found in the labels and
predictions, each is scored per case, and the summary gives each class's mean beside the overall one.
"""

IMAGE_SUFFIXES = (".nii.gz", ".nrrd", ".nii", ".mha", ".mhd")
CASE_SUFFIX = re.compile(r"_(seg|label|labels|gt|mask|segmentation)$")
COLUMNS = ("dice", "jaccard", "asd_vox", "hd95_vox", "asd_mm", "hd95_mm")
LABEL_MAX = 255  # label maps are read as uint8 class indices (io.read_label)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Dice, Jaccard, ASD, 95HD of predictions", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred", metavar="PRED", help="predicted label file or folder")
    p.add_argument("label", metavar="LABEL", help="reference label file or folder")
    p.add_argument("--csv", metavar="FILE", help="also write one row per case as CSV")
    p.add_argument("--json", metavar="FILE", help="also write cases and summary as JSON")
    p.add_argument("--num-classes", type=int, default=None, metavar="C",
                   help="foreground classes 1..C (default: the nonzero values found in the labels and predictions)")
    p.set_defaults(run=run, uses_torch=False)  # NumPy/SciPy only: --threads sets SimpleITK's threads


def _key(path: Path) -> str:
    from ..data.images import case_name

    return CASE_SUFFIX.sub("", case_name(path))


def _images_in(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and not p.name.startswith("."):
            if p.name.startswith("image.") or "_levelset." in p.name or "_disagreement." in p.name:
                continue
            found.setdefault(_key(p), p)
    return found


def match_pairs(pred: Path, label: Path) -> list[tuple[str, Path, Path]]:
    """``(case, pred_file, label_file)`` for a file pair or two folders matched by case name."""
    for p in (pred, label):
        if not p.exists():
            raise DTCError(f"{p} does not exist")
    if pred.is_file() and label.is_file():
        return [(_key(pred), pred, label)]
    if pred.is_dir() != label.is_dir():
        raise DTCError("PRED and LABEL must both be files or both be folders")
    preds, labels = _images_in(pred), _images_in(label)
    common = sorted(set(preds) & set(labels))
    if not common:
        raise DTCError(f"no case names match between {pred} ({len(preds)} files) and {label} ({len(labels)} files)")
    return [(c, preds[c], labels[c]) for c in common]


def read_label_map(
    path: Path, geometry: Geometry | None = None, shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, Geometry]:
    """A label map as uint8 (X, Y, Z) class indices and its geometry; DTCError unless its values are
    integers in 0..255 and (when ``geometry`` / ``shape`` are given) it lies on that grid."""
    from ..data.images import read_image

    values, own = read_image(path)
    if geometry is not None and not geometry.same_grid(own, shape, values.shape):
        raise DTCError(f"{path} is not on the grid of its reference label: {own.describe(values.shape)} vs "
                       f"{geometry.describe(shape)}; resample it to the reference (nearest neighbour)")
    if values.min() < 0 or values.max() > LABEL_MAX or not np.array_equal(values, np.round(values)):
        found = ", ".join(f"{v:g}" for v in np.unique(values)[:10])
        raise DTCError(f"{path} has values {{{found}, ...}}; a label map holds integer classes 0..{LABEL_MAX}")
    return values.astype(np.uint8), own


def _pair(pred_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray, Geometry]:
    truth, geometry = read_label_map(label_path)
    pred, _ = read_label_map(pred_path, geometry, truth.shape)
    return pred, truth, geometry


def run(args: argparse.Namespace) -> int:
    from ..evaluation.metrics import evaluate_case, label_classes, summarize, summarize_by_class

    pairs = match_pairs(Path(args.pred), Path(args.label))
    if args.num_classes is not None:
        if args.num_classes < 1:
            raise DTCError("--num-classes must be at least 1")
        classes = list(range(1, args.num_classes + 1))
    else:  # first pass: the classes present in any reference or prediction
        found: set[int] = set()
        for _, pred_path, label_path in pairs:
            pred, truth, _ = _pair(pred_path, label_path)
            found.update(label_classes(pred, truth))
        classes = sorted(found) or [1]
    rows = []
    for case, pred_path, label_path in pairs:
        pred, truth, geometry = _pair(pred_path, label_path)
        if args.num_classes is not None and max(int(pred.max()), int(truth.max())) > args.num_classes:
            worst = label_path if truth.max() > args.num_classes else pred_path
            raise DTCError(f"{worst} holds classes above --num-classes {args.num_classes}; raise it or leave it out")
        if len(classes) == 1:
            c = classes[0]
            rows.append({"case": case, **evaluate_case(pred == c, truth == c, geometry.spacing)})
        else:
            for c in classes:
                rows.append({"case": case, "class": c, **evaluate_case(pred == c, truth == c, geometry.spacing)})
    summary = summarize(rows)
    by_class = summarize_by_class(rows)
    if by_class:
        summary["classes"] = by_class
    print(format_table(rows, summary))
    if args.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(Path(args.csv), buf.getvalue())
    if args.json:
        clean = json.loads(json.dumps({"cases": rows, "summary": summary}, default=float).replace("NaN", "null"))
        atomic_write_text(Path(args.json), json.dumps(clean, indent=2) + "\n")
    return 0


def _fmt(v: float, pct: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{100 * v:.2f}" if pct else f"{v:.2f}"


def format_table(rows: list[dict], summary: dict) -> str:
    head = f"{'case':<28}{'Dice%':>8}{'Jacc%':>8}{'ASD vx':>8}{'95HD vx':>9}{'ASD mm':>8}{'95HD mm':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r["case"] + (f"[{r['class']}]" if "class" in r else "")
        vals = [_fmt(r[c], c in ("dice", "jaccard")) for c in COLUMNS]
        lines.append(f"{name[:27]:<28}{vals[0]:>8}{vals[1]:>8}{vals[2]:>8}{vals[3]:>9}{vals[4]:>8}{vals[5]:>9}")
    if len(rows) > 1:
        mean = summary["mean"]
        vals = [_fmt(mean[c], c in ("dice", "jaccard")) for c in COLUMNS]
        lines.append("-" * len(head))
        lines.append(f"{'mean of ' + str(len(rows)):<28}"
                     f"{vals[0]:>8}{vals[1]:>8}{vals[2]:>8}{vals[3]:>9}{vals[4]:>8}{vals[5]:>9}")
    for c, per_class in summary.get("classes", {}).items():
        vals = [_fmt(per_class["mean"][k], k in ("dice", "jaccard")) for k in COLUMNS]
        name = f"mean class {c} ({per_class['cases']})"
        lines.append(f"{name:<28}{vals[0]:>8}{vals[1]:>8}{vals[2]:>8}{vals[3]:>9}{vals[4]:>8}{vals[5]:>9}")
    return "\n".join(lines)
