"""Choosing a model's grid: ``dtc train --spacing native|auto|S|SX SY SZ``.

``auto`` follows the idea of nnU-Net's ``3d_lowres`` configuration: start from the training scans' median
spacing and coarsen it step by step until the median scan fits a compute budget. Each step multiplies by
``AUTO_STEP`` the spacing of every axis that is finer than ``AUTO_ANISOTROPY`` times the finest one (so a
thick-slice axis waits until the in-plane axes catch up, as nnU-Net does), and stops once the median
scan, on the new grid, has at most ``AUTO_MAX_VOXELS`` voxels. The spacing never gets finer than the
median.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DTCError

AUTO_STEP = 1.03  # nnU-Net's spacing increase per step when it plans 3d_lowres
AUTO_ANISOTROPY = 2.0  # axes coarser than 2x the finest are left alone (nnU-Net's anisotropy threshold)
# Voxels of the median scan on the model grid. Our measurement (bench/RESULTS.md, "spacing sweep"): in equal
# CPU time a 2.0 mm LA model beat 1.5 and 1.25 mm ones by 10+ validation Dice points; this budget puts the
# median LA scan (about 190 x 145 x 88 voxels at 0.625 mm) at 1.98 mm, where the best reachable Dice is
# still 96.7 %.
AUTO_MAX_VOXELS = 80_000


def auto_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]],
                 max_voxels: int = AUTO_MAX_VOXELS) -> tuple[float, float, float]:
    """The ``auto`` rule above. spacings: one (sx, sy, sz) mm per scan; shapes: (X, Y, Z) voxels per scan."""
    if not spacings or len(spacings) != len(shapes):
        raise DTCError("auto spacing needs the spacing and size of at least one training scan")
    median_spacing = np.median(np.asarray(spacings, dtype=np.float64), axis=0)
    extent = np.median(np.asarray(shapes, dtype=np.float64) * np.asarray(spacings, dtype=np.float64), axis=0)
    spacing = median_spacing.copy()
    while np.prod(np.maximum(np.round(extent / spacing), 1)) > max_voxels:
        finest = spacing.min()
        spacing = np.where(spacing < AUTO_ANISOTROPY * finest, spacing * AUTO_STEP, spacing)
    return tuple(round(float(s), 4) for s in spacing)  # type: ignore[return-value]


def parse_spacing(values: Sequence[str]) -> str | tuple[float, float, float] | None:
    """``--spacing`` words -> None (native), "auto", or (sx, sy, sz) mm. DTCError on anything else."""
    words = [str(v).strip().lower() for v in values]
    if words == ["native"]:
        return None
    if words == ["auto"]:
        return "auto"
    try:
        numbers = [float(w) for w in words]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3 or not all(0 < n < 100 for n in numbers):
        raise DTCError(f"--spacing {' '.join(values)}: use native, auto, one size S or three sizes SX SY SZ in mm")
    return tuple(numbers)  # type: ignore[return-value]


def manifest_geometry(manifest_path) -> tuple[list[tuple[float, ...]], list[tuple[int, ...]]]:
    """(spacing (sx, sy, sz) mm, size (X, Y, Z) voxels) of every scan a manifest names, from the file
    headers (no voxel is read)."""
    import SimpleITK as sitk

    from ..data.manifest import load_manifest

    manifest = load_manifest(manifest_path)
    paths = [pair.image for pair in manifest.labeled] + list(manifest.unlabeled)
    spacings, shapes = [], []
    for path in paths:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise DTCError(f"cannot read {path} as an image; check the manifest") from None
        spacings.append(tuple(reader.GetSpacing()))
        shapes.append(tuple(reader.GetSize()))
    return spacings, shapes


def manifest_auto_spacing(manifest_path, max_voxels: int = AUTO_MAX_VOXELS) -> tuple[float, float, float]:
    """:func:`auto_spacing` of every scan a manifest names, from the file headers."""
    spacings, shapes = manifest_geometry(manifest_path)
    return auto_spacing(spacings, shapes, max_voxels)


def median_spacing(spacings: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """Median (sx, sy, sz) mm of one (sx, sy, sz) per scan: the grid a ``native`` model mostly sees."""
    return tuple(float(v) for v in np.median(np.asarray(spacings, dtype=np.float64), axis=0))  # type: ignore[return-value]


def manifest_median_spacing(manifest_path) -> tuple[float, float, float]:
    """:func:`median_spacing` of the scans a manifest names, from the file headers."""
    return median_spacing(manifest_geometry(manifest_path)[0])
