"""Where the VNet halves each axis: the pooling plan of ``NetworkConfig.pools`` (no torch here).

``pools = (px, py, pz)`` says how many of the network's four downsamplings halve axis x, y, z. An axis with
``p < 4`` is halved only in the *last* ``p`` stages (stride and kernel 1 along it before), so a thick-slice
axis keeps its few slices at full resolution until the in-plane axes have coarsened to its spacing.
``(4, 4, 4)`` is the reference VNet (github.com/HiLab-git/DTC): 2x2x2 stride 2 everywhere.

:func:`auto_pools` is nnU-Net's rule for anisotropic plans (Isensee et al., Nature Methods 2021,
``get_pool_and_conv_props``, without its feature-map-size limits): at each stage, pool every axis whose
current spacing is less than ``ANISOTROPY`` times the finest current spacing; pooling doubles that
axis's spacing.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DTCError

STAGES = 4  # reference VNet: four downsamplings (block_one_dw .. block_four_dw) and four upsamplings
SIZE_MULTIPLE = 2**STAGES  # the reference network's size multiple on every axis
REFERENCE_POOLS = (STAGES, STAGES, STAGES)
ANISOTROPY = 2.0  # nnU-Net: an axis 2x (or more) coarser than the finest is not pooled at that stage


def check_pools(pools: Sequence[int]) -> None:
    """DTCError unless ``pools`` is 3 whole numbers in 0..4 (downsamplings of axis x, y, z)."""
    if len(pools) != 3 or any(isinstance(p, bool) or int(p) != p or not 0 <= int(p) <= STAGES for p in pools):
        raise DTCError(f"network pools {tuple(pools)} must be 3 whole numbers in 0..{STAGES} "
                       "(how many of the 4 downsamplings halve axis x, y, z)")


def stage_strides(pools: Sequence[int] = REFERENCE_POOLS) -> list[tuple[int, int, int]]:
    """Stride (= kernel) per axis of each of the 4 down/up-sampling stages: an axis with ``p`` pools is
    halved in the last ``p`` stages. ``(4, 4, 2)`` -> [(2,2,1), (2,2,1), (2,2,2), (2,2,2)]."""
    check_pools(pools)
    return [tuple(2 if stage >= STAGES - int(p) else 1 for p in pools) for stage in range(STAGES)]  # type: ignore[misc]


def size_multiples(pools: Sequence[int] = REFERENCE_POOLS) -> tuple[int, int, int]:
    """Every network input size must be a multiple of this, per axis: ``2**p`` (16 for the reference)."""
    check_pools(pools)
    return tuple(2 ** int(p) for p in pools)  # type: ignore[return-value]


def describe_multiples(multiples: Sequence[int]) -> str:
    """"16" when every axis has the same size multiple, else "16 x 16 x 8" (x, y, z): for error messages."""
    if len(set(int(m) for m in multiples)) == 1:
        return str(int(multiples[0]))
    return " x ".join(str(int(m)) for m in multiples) + " (x, y, z)"


def check_patch(patch: Sequence[int], pools: Sequence[int], where: str = "network.pools") -> None:
    """DTCError unless ``patch`` (X, Y, Z voxels) is 3 sizes, each a positive multiple of ``2**p`` of its axis.
    The message names the network's pooling (``where`` it comes from) and, per wrong axis, the nearest sizes
    that fit: "patch (100, 112, 80) must be ... x 100: use 96 or 112"."""
    multiples = size_multiples(pools)
    sizes = tuple(int(v) for v in patch)
    if len(sizes) == 3 and all(v >= m and v % m == 0 for v, m in zip(sizes, multiples)):
        return
    fixes = []
    if len(sizes) == 3:
        for axis, v, m in zip("xyz", sizes, multiples):
            if v < m or v % m:
                lower = (v // m) * m
                fixes.append(f"{axis} {v}: use " + (f"{lower} or {lower + m}" if lower >= m else str(m)))
    raise DTCError(f"patch {sizes} must be 3 sizes, each a multiple of {describe_multiples(multiples)} "
                   f"(the VNet halves axis x, y, z {', '.join(str(int(p)) for p in pools)} times; {where})"
                   + ("; " + ", ".join(fixes) if fixes else ""))


def fit_patch(patch: Sequence[int], pools: Sequence[int], largest: Sequence[int]) -> tuple[int, int, int]:
    """``patch`` (X, Y, Z voxels) with each axis cut to the ``largest`` scan's size on that axis rounded up
    to the axis's size multiple: a 112 x 112 x 80 patch over 10-slice scans under pools (4, 4, 2) becomes
    112 x 112 x 12 instead of padding every crop 8-fold. Axes already small enough are kept."""
    return tuple(min(int(p), max(m, -(-int(n) // m) * m))  # type: ignore[return-value]
                 for p, m, n in zip(patch, size_multiples(pools), largest))


def auto_pools(spacing: Sequence[float]) -> tuple[int, int, int]:
    """nnU-Net's anisotropic rule (module doc) for a model grid of ``spacing`` (sx, sy, sz) mm.
    (1, 1, 1) -> (4, 4, 4); (1.5, 1.5, 10) -> (4, 4, 2); (2, 2, 5) -> (4, 4, 3)."""
    current = [float(s) for s in spacing]
    if len(current) != 3 or not all(s > 0 for s in current):
        raise DTCError(f"spacing {tuple(spacing)} must be 3 positive sizes in mm")
    pools = [0, 0, 0]
    for _ in range(STAGES):
        finest = min(current)
        for axis in range(3):
            if current[axis] / finest < ANISOTROPY:
                pools[axis] += 1
                current[axis] *= 2.0
    return tuple(pools)  # type: ignore[return-value]
