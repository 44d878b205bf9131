"""PNG previews: three orthogonal slices of a segmentation, and training curves.

Rendered with matplotlib's Agg canvas on a private ``Figure`` (no pyplot, so no global backend
change inside Slicer or a headless server); matplotlib is imported only when a PNG is drawn. Files
are written atomically (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..protocol import LOSS_NAMES, OPTIONAL_LOSS_NAMES

SEGMENTATION_COLOR = "#ff3b30"  # our choice: red contour for the label
LEVELSET_COLOR = "#00c8ff"  # our choice: cyan dashed line for the level set's zero crossing
GREY_PERCENTILES = (0.5, 99.5)  # our choice: display window robust to a few extreme voxels


def save_preview(
    path: str | os.PathLike,
    image: np.ndarray,
    label: np.ndarray,
    levelset: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    title: str = "",
) -> Path:
    """Write a PNG with axial, coronal and sagittal slices through the label's centre of mass.

    Args:
        path: output PNG.
        image: (X, Y, Z) intensities, shown in grey.
        label: (X, Y, Z) integer label; its boundary (label > 0) is drawn in one colour. An empty label
            puts the slices through the volume centre.
        levelset: optional (X, Y, Z) level set (negative inside); its zero line is drawn in another colour.
        spacing: voxel size (x, y, z) in mm, for the aspect ratio of each view.
        title: figure title.

    Views (x = patient left for LPS-ordered arrays): axial = (x right, y down) at the centre z; coronal =
    (x right, z up) at the centre y; sagittal = (y right, z up) at the centre x.
    """
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(label) > 0
    if image.ndim != 3 or mask.shape != image.shape:
        raise ValueError(f"image {image.shape} and label {mask.shape} must be the same 3-D shape")
    if levelset is not None:
        levelset = np.asarray(levelset, dtype=np.float32)
        if levelset.shape != image.shape:
            raise ValueError(f"levelset {levelset.shape} must have the image's shape {image.shape}")
    sx, sy, sz = (float(s) for s in spacing)
    if mask.any():
        centre = [int(round(float(c.mean()))) for c in np.nonzero(mask)]
    else:
        centre = [d // 2 for d in image.shape]
    cx, cy, cz = centre

    def views(volume: np.ndarray) -> list[np.ndarray]:
        # Each 2-D array is (rows top -> bottom, columns left -> right) as displayed.
        return [volume[:, :, cz].T, volume[:, cy, ::-1].T, volume[cx, :, ::-1].T]

    names = [f"axial z={cz}", f"coronal y={cy}", f"sagittal x={cx}"]
    aspects = [sy / sx, sz / sx, sz / sy]  # row spacing / column spacing
    finite = image[np.isfinite(image)]
    vmin, vmax = np.percentile(finite, GREY_PERCENTILES) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(13, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    level_views = views(levelset) if levelset is not None else [None] * 3
    for ax, name, aspect, img2d, mask2d, lsf2d in zip(axes, names, aspects, views(image), views(mask), level_views):
        ax.imshow(img2d, cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect, origin="upper", interpolation="nearest")
        cols, rows = np.arange(img2d.shape[1]), np.arange(img2d.shape[0])
        if mask2d.any() and not mask2d.all():
            ax.contour(cols, rows, mask2d.astype(np.float32), levels=[0.5], colors=SEGMENTATION_COLOR, linewidths=1.2)
        if lsf2d is not None and np.nanmin(lsf2d) < 0.0 < np.nanmax(lsf2d):
            ax.contour(cols, rows, lsf2d, levels=[0.0], colors=LEVELSET_COLOR, linewidths=1.0, linestyles="--")
        ax.set_title(name)
        ax.set_axis_off()
    handles = [Line2D([], [], color=SEGMENTATION_COLOR, lw=1.5, label="segmentation")]
    if levelset is not None:
        handles.append(Line2D([], [], color=LEVELSET_COLOR, lw=1.5, ls="--", label="level set = 0"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    return _write_png(fig, Path(path))


def save_curves(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> Path:
    """Write a PNG of training curves from ``log.jsonl`` progress events.

    Args:
        path: output PNG.
        records: dicts; those with ``"iteration"`` and ``"losses"`` (keys ``protocol.LOSS_NAMES``, and
            ``OPTIONAL_LOSS_NAMES`` where the mode has them)
            are plotted: the losses on a log axis, and ``"lambda"`` and ``"lr"`` (log axis) against iteration.
            Other records (start/end events) are ignored; with no progress events the figure says so.
    """
    rows = [r for r in records if isinstance(r, dict) and "iteration" in r and isinstance(r.get("losses"), dict)]
    rows.sort(key=lambda r: r["iteration"])
    iterations = np.array([float(r["iteration"]) for r in rows])

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_sched = fig.subplots(1, 2)
    total = rows[-1].get("total") if rows else None
    if not rows:
        for ax in (ax_loss, ax_sched):
            ax.text(0.5, 0.5, "no progress yet", ha="center", va="center", transform=ax.transAxes)
    else:
        for name in LOSS_NAMES + OPTIONAL_LOSS_NAMES:
            values = np.array([_number(r["losses"].get(name)) for r in rows])
            values[~(values > 0)] = np.nan  # log axis: zero, negative or missing values leave a gap
            if np.isfinite(values).any():
                ax_loss.plot(iterations, values, label=name, lw=1.2)
        ax_loss.set_yscale("log")
        ax_loss.legend(loc="upper right")
        lam = np.array([_number(r.get("lambda")) for r in rows])
        ax_sched.plot(iterations, lam, color="tab:purple", label="lambda (consistency weight)")
        ax_sched.set_ylabel("lambda")
        ax_lr = ax_sched.twinx()
        lr = np.array([_number(r.get("lr")) for r in rows])
        lr[~(lr > 0)] = np.nan
        ax_lr.plot(iterations, lr, color="tab:green", label="learning rate")
        if np.isfinite(lr).any():
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate")
        lines = ax_sched.get_lines() + ax_lr.get_lines()
        ax_sched.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    ax_loss.set_title("losses")
    ax_sched.set_title("schedule")
    for ax in (ax_loss, ax_sched):
        ax.set_xlabel("iteration")
        if total:
            ax.set_xlim(0, float(total))
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_sched.grid(True, alpha=0.3)
    fig.tight_layout()
    return _write_png(fig, Path(path))


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _write_png(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path
