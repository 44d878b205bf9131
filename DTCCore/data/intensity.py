"""Intensity normalisation of a scan before the network sees it (training and inference alike).

The model plan names the scheme (``plan.normalization``); "zscore" is the only one so far.
"""

from __future__ import annotations

import numpy as np


def normalize(image: np.ndarray) -> np.ndarray:
    """Z-score a whole volume: ``(image - mean) / std`` over all voxels, float32, same shape.

    The reference LA data was normalised this way (per volume) before training. A constant volume
    (std == 0) gives zeros: there is no contrast to keep, and 0 is the "mean" value used for padding.
    """
    image = np.asarray(image)
    mean = float(image.mean(dtype=np.float64))
    std = float(image.std(dtype=np.float64))
    if not std > 0:
        return np.zeros(image.shape, np.float32)
    out = image.astype(np.float32)
    out -= np.float32(mean)
    out *= np.float32(1.0 / std)
    return out
