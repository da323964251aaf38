"""What :class:`~polydiff.domains.medical.module.MedicalDiffusion` expects of its DataModule, as a structural type.

The domain never imports ``polydiff.datasets``: any DataModule with these members fits (``polydiff.datasets.medical``'s
do). Geometry is plain data: a dict with ``affine`` (4x4 numpy array of the RAS+ grid of the data), ``header`` (bytes of
the source NIfTI header, or None), ``axcodes`` (source orientation, or None), ``intensity_range`` ((low, high) raw
intensities that -1 and 1 stand for, or None) and ``source`` (the file it came from).
"""

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class MedicalData(Protocol):
    #: 2 for slices, 3 for volumes
    spatial_dims: int
    #: spatial size of one item (slice or crop), in voxels
    item_size: tuple[int, ...]

    def split_tensor(self, split: str) -> Tensor:
        """All items of ``split`` (train, val or test) as ``[N, 1, *item_size]`` in [-1, 1]."""
        ...

    def reference_geometry(self) -> dict[str, Any]:
        """The geometry given to generated items (an item's grid in the data's space)."""
        ...

    def read_input(self, path: str) -> dict[str, Any]:
        """A user's file for ``polydiff sample --input``: ``{"volume": [X, Y, Z] tensor in [-1, 1], "geometry": ...}``."""
        ...
