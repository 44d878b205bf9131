"""2-D or 3-D: ``dtc train --dims 2|3|auto`` and what a 2-D model can segment (no torch here).

A 3-D model (``NetworkConfig.dims == 3``, the paper's VNet) convolves in all three directions. A 2-D model
has the same dual-task network with in-plane convolutions only (3x3 kernels, 2x2 pooling in x and y): it
is trained on the slices (x, y) of the scans' third axis (z) and segments a scan slice by slice, many
slices a batch; its outputs are on the scan's exact grid like a 3-D model's. nnU-Net plans such a ``2d``
configuration for thick-slice data (Isensee et al., Nature Methods 2021), and the semi-supervised
literature on short-axis cardiac MRI (ACDC) trains 2-D networks.

``auto`` (:func:`auto_dims`) is nnU-Net's anisotropy rule: 2-D when the slice spacing (z) is more than
``SLICE_ANISOTROPY`` times the in-plane spacing (the larger of x and y), else 3-D. A scan whose coarse
axis is x or y stays 3-D under ``auto`` (its thick slices are not the model's slices); a 2-D model refuses
such a scan (:func:`check_slice_axis`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DTCError

DIMS = (2, 3)
DIMS_CHOICES = ("2", "3", "auto")
# nnU-Net's anisotropy threshold (nnunet/configuration.py, RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD = 3): an
# axis more than 3x coarser than the others is a thick-slice axis (the rule for --dims auto).
SLICE_ANISOTROPY = 3.0
# Slices a 2-D model crops from each scan unless told otherwise (dtc train --dims without --patch, the panel's
# plan from scratch): 4 crops a step (2 labeled + 2 unlabeled) x 4 slices = 16 slices a batch, the order of
# nnU-Net's 2-D batch sizes (a dozen or more slices). Our choice.
SLICES_PER_CROP_2D = 4


def _spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(s > 0 for s in values):
        raise DTCError(f"spacing {tuple(spacing)} must be 3 positive sizes in mm (x, y, z)")
    return values  # type: ignore[return-value]


def check_dims(dims: object) -> int:
    """``dims`` as 2 or 3; DTCError naming the choices otherwise."""
    if isinstance(dims, bool) or dims not in DIMS:
        raise DTCError(f"network dims {dims!r}: use 2 (slice by slice, in-plane convolutions) or 3 (the paper's VNet)")
    return int(dims)  # type: ignore[call-overload]


def auto_dims(spacing: Sequence[float]) -> int:
    """2 when the slice spacing sz is more than ``SLICE_ANISOTROPY`` x max(sx, sy), else 3.
    (1, 1, 1) -> 3; (1.5, 1.5, 4.5) -> 3 (exactly 3x); (1.5, 1.5, 10) -> 2; (10, 1.5, 1.5) -> 3."""
    sx, sy, sz = _spacing(spacing)
    return 2 if sz > SLICE_ANISOTROPY * max(sx, sy) else 3


def parse_dims(word: str) -> int | str:
    """``--dims`` word -> 2, 3 or "auto"; DTCError on anything else."""
    text = str(word).strip().lower()
    if text not in DIMS_CHOICES:
        raise DTCError(f"--dims {word}: use 2, 3 or auto (2-D when the slices are more than "
                       f"{SLICE_ANISOTROPY:g}x farther apart than the pixels)")
    return text if text == "auto" else int(text)


def check_slice_axis(spacing: Sequence[float]) -> None:
    """DTCError when a 2-D model cannot segment a scan of ``spacing`` (sx, sy, sz) mm: its thick axis is x or y
    (more than ``SLICE_ANISOTROPY`` x the finest), so the model's slices (x, y) would cut across its slices."""
    sx, sy, sz = _spacing(spacing)
    for axis, value in (("x (i)", sx), ("y (j)", sy)):
        if value > SLICE_ANISOTROPY * min(sx, sy, sz):
            raise DTCError(
                f"this 2-D model segments a scan slice by slice along its third axis (z, k), but this scan's "
                f"coarse axis is {axis}: {sx:g} x {sy:g} x {sz:g} mm. Reorient (resample) the scan so that its "
                "slices lie along the third axis, or use a 3-D model")


def plane_pools(pools: Sequence[int]) -> tuple[int, int, int]:
    """The pools of a 2-D network planned from (px, py, pz): the plane's, never the slice axis: (px, py, 0)."""
    return (int(pools[0]), int(pools[1]), 0)


def model_grid(plan: Sequence[float] | None, scan: Sequence[float], dims: int) -> tuple[float, float, float] | None:
    """The spacing (mm) a model of plan spacing ``plan`` (None: the scan's own grid) works at on a scan of
    spacing ``scan``. A 2-D model resamples in the plane only and keeps the scan's own slices (its z spacing):
    its slices are independent, and interpolating new slices between thick ones would invent anatomy."""
    if plan is None:
        return None
    px, py, pz = (float(v) for v in plan)
    return (px, py, float(scan[2])) if dims == 2 else (px, py, pz)
