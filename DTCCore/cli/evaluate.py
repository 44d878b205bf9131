"""``dtc evaluate PRED LABEL``: the paper's metrics for one pair of files or two folders of cases."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
from pathlib import Path

from ..config import atomic_write_text
from ..errors import DTCError

HELP = """\
Compare predicted label maps with reference labels: Dice and Jaccard (%), average surface distance
(ASD) and 95%% Hausdorff distance (95HD) in voxels (as the paper reports them, MedPy's dc/jc/asd/hd95)
and in mm. PRED and LABEL are two files, or two folders whose files are matched by case name
(<case>_seg.nrrd matches <case>.nrrd, <case>_label.nrrd or <case>/label.nrrd).
A distance is undefined (nan) when exactly one of the two masks is empty.
"""

IMAGE_SUFFIXES = (".nii.gz", ".nrrd", ".nii", ".mha", ".mhd")
CASE_SUFFIX = re.compile(r"_(seg|label|labels|gt|mask|segmentation)$")
COLUMNS = ("dice", "jaccard", "asd_vox", "hd95_vox", "asd_mm", "hd95_mm")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Dice, Jaccard, ASD, 95HD of predictions", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred", metavar="PRED", help="predicted label file or folder")
    p.add_argument("label", metavar="LABEL", help="reference label file or folder")
    p.add_argument("--csv", metavar="FILE", help="also write one row per case as CSV")
    p.add_argument("--json", metavar="FILE", help="also write cases and summary as JSON")
    p.add_argument("--num-classes", type=int, default=1, metavar="C", help="foreground classes (default 1)")
    p.set_defaults(run=run)


def _key(path: Path) -> str:
    from ..io import case_name

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


def run(args: argparse.Namespace) -> int:
    from ..io import read_image, read_label
    from ..metrics import evaluate_case, summarize

    pairs = match_pairs(Path(args.pred), Path(args.label))
    rows = []
    for case, pred_path, label_path in pairs:
        label_array, geometry = read_image(label_path)
        shape = label_array.shape
        truth = read_label(label_path, geometry, shape, args.num_classes)
        pred = read_label(pred_path, geometry, shape, args.num_classes)
        if args.num_classes == 1:
            rows.append({"case": case, **evaluate_case(pred > 0, truth > 0, geometry.spacing)})
        else:
            for c in range(1, args.num_classes + 1):
                rows.append({"case": case, "class": c, **evaluate_case(pred == c, truth == c, geometry.spacing)})
    summary = summarize(rows)
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
        lines.append(f"{'mean of ' + str(len(rows)):<28}{vals[0]:>8}{vals[1]:>8}{vals[2]:>8}{vals[3]:>9}{vals[4]:>8}{vals[5]:>9}")
    return "\n".join(lines)
