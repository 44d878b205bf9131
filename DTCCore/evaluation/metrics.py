"""Segmentation metrics of the paper's table: Dice, Jaccard, average surface distance, 95% Hausdorff.

Computed with MedPy (``medpy.metric.binary.dc, jc, asd, hd95``), as the paper and its reference code
did. Distances are given twice: in voxels (``voxelspacing=None``, the paper's unit) and in mm (the
volume's spacing). Arrays are (X, Y, Z) and the spacing (sx, sy, sz) in mm, in the same axis order.

Empty masks, which MedPy cannot handle, are defined here:

- prediction and truth both empty: dice 1, jaccard 1, distances 0 (a perfect "nothing there");
- exactly one of them empty: dice 0, jaccard 0, distances NaN (undefined: there is no surface to
  measure from). :func:`summarize` averages with ``nanmean`` and counts these cases.
"""

from __future__ import annotations

import warnings

import numpy as np
from medpy.metric import binary

METRICS = ("dice", "jaccard", "asd_vox", "hd95_vox", "asd_mm", "hd95_mm")
DISTANCES = ("asd_vox", "hd95_vox", "asd_mm", "hd95_mm")


def evaluate_case(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """Metrics of a binary prediction against the truth (both (X, Y, Z), nonzero = foreground).

    Returns ``{"dice", "jaccard", "asd_vox", "hd95_vox", "asd_mm", "hd95_mm"}`` (floats; distances in
    voxels and mm). Empty masks: see the module docstring.
    """
    pred = np.asarray(pred) != 0
    truth = np.asarray(truth) != 0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return {"dice": 1.0, "jaccard": 1.0, **{k: 0.0 for k in DISTANCES}}
    if not (has_pred and has_truth):
        return {"dice": 0.0, "jaccard": 0.0, **{k: float("nan") for k in DISTANCES}}
    spacing = tuple(float(s) for s in spacing)
    return {
        "dice": float(binary.dc(pred, truth)),
        "jaccard": float(binary.jc(pred, truth)),
        "asd_vox": float(binary.asd(pred, truth)),
        "hd95_vox": float(binary.hd95(pred, truth)),
        "asd_mm": float(binary.asd(pred, truth, voxelspacing=spacing)),
        "hd95_mm": float(binary.hd95(pred, truth, voxelspacing=spacing)),
    }


def evaluate_multiclass(pred: np.ndarray, truth: np.ndarray, num_classes: int,
                        spacing=(1.0, 1.0, 1.0)) -> dict[int, dict[str, float]]:
    """Per-class metrics of label maps (X, Y, Z) with values 0..num_classes: ``{class: evaluate_case}``."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    return {c: evaluate_case(pred == c, truth == c, spacing) for c in range(1, int(num_classes) + 1)}


def summarize(rows: list[dict]) -> dict:
    """Mean (``nanmean``) and standard deviation (``nanstd``, population) of each metric over cases.

    ``rows`` are :func:`evaluate_case` dicts (other keys, e.g. "case", are ignored). Returns
    ``{"mean": {metric: m}, "std": {metric: s}, "cases": n, "undefined_distance": k}`` where k counts the
    cases whose distances are NaN (exactly one of prediction/truth empty). No rows: NaN means, 0 cases.
    """
    mean: dict[str, float] = {}
    std: dict[str, float] = {}
    for key in METRICS:
        values = np.array([float(r[key]) for r in rows], dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN, said by the count
            mean[key] = float(np.nanmean(values)) if values.size else float("nan")
            std[key] = float(np.nanstd(values)) if values.size else float("nan")
    undefined = sum(1 for r in rows if any(np.isnan(float(r[k])) for k in DISTANCES))
    return {"mean": mean, "std": std, "cases": len(rows), "undefined_distance": undefined}


def label_classes(*label_maps: np.ndarray) -> list[int]:
    """The foreground classes of integer label maps: every nonzero value found in any of them, sorted.

    ``dtc evaluate`` takes the classes from the reference labels and the predictions this way when no
    class count is given (1..C for the usual maps; a 0/255 mask gives [255], a single class).
    """
    found: set[int] = set()
    for m in label_maps:
        found.update(int(v) for v in np.unique(np.asarray(m)) if v != 0)
    return sorted(found)


def summarize_by_class(rows: list[dict]) -> dict[int, dict]:
    """:func:`summarize` of the rows of each class: ``{class: summary}`` for rows with a "class" key
    (per-class rows of several cases, e.g. ``dtc evaluate`` on multi-class labels); ``{}`` if none has one."""
    classes = sorted({int(r["class"]) for r in rows if "class" in r})
    return {c: summarize([r for r in rows if r.get("class") == c]) for c in classes}
