"""Post-processing of a predicted mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 26-connectivity (faces, edges and corners), as the reference's skimage.measure.label on 3D volumes.
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component of a binary mask (X, Y, Z); same dtype, values 0/1.

    An empty mask is returned empty. On a tie the component met first in memory order is kept.
    """
    mask = np.asarray(mask)
    labels, n = ndimage.label(mask != 0, structure=_STRUCTURE_26)
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return (labels == int(np.argmax(sizes))).astype(mask.dtype)


def largest_component_per_class(label: np.ndarray, num_classes: int) -> np.ndarray:
    """A copy of a label map (X, Y, Z) in 0..num_classes where each class keeps only its largest
    26-connected component; the voxels of the other components become background (0)."""
    out = np.array(label, copy=True)
    for c in range(1, int(num_classes) + 1):
        mask = out == c
        if mask.any():
            out[mask & ~np.asarray(largest_component(mask), dtype=bool)] = 0
    return out
