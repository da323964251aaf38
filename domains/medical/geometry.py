"""Voxel-grid arithmetic on affines: the grid of a block-downsampled or upsampled volume.

A voxel index ``i`` of a grid sits at ``affine @ [i, 1]`` (its centre). Block-averaging by ``f`` makes coarse voxel
``j`` the mean of fine voxels ``f j .. f j + f - 1``, whose centre is fine index ``f j + (f - 1) / 2``; upsampling by
``f`` is the inverse map, fine index ``i = (j - (f - 1) / 2) / f`` in coarse units. So the finer grid has the spacing
divided by ``f`` and its first voxel centre moved by ``-(f - 1) / (2 f)`` coarse voxels (half a fine voxel for f = 2):
the convention of nibabel's ``rescale_affine`` and of every resampler that keeps the field of view.
"""

from typing import Sequence

import numpy as np


def _scale(factors: Sequence[float], offsets: Sequence[float]) -> np.ndarray:
    m = np.eye(4)
    m[: len(factors), : len(factors)] = np.diag(factors)
    m[: len(offsets), 3] = offsets
    return m


def downsampled_affine(affine: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Affine of the grid made by averaging blocks of ``factors`` voxels (one factor per axis; 1 keeps an axis)."""
    f = np.asarray(factors, dtype=np.float64)
    return np.asarray(affine, dtype=np.float64) @ _scale(f, (f - 1) / 2)


def upsampled_affine(affine: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Affine of the grid ``factors`` times finer covering the same field of view (inverse of
    :func:`downsampled_affine`)."""
    f = np.asarray(factors, dtype=np.float64)
    return np.asarray(affine, dtype=np.float64) @ _scale(1 / f, -(f - 1) / (2 * f))
