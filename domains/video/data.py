"""What the video model needs from its DataModule, as a structural type.

Any DataModule with these members fits (``polydiff.datasets.video.MovingDigitsDataModule`` and
``polydiff.datasets.video.VideoFolderDataModule`` do); the model checks it in ``connect_data`` and nowhere else reaches
into the data.
"""

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class VideoData(Protocol):
    """Clips of one size in [-1, 1] with integer labels (-1: unlabelled), split into train / val / test."""

    #: side length of the square frames
    image_size: int
    #: 1 (grayscale) or 3 (RGB)
    channels: int
    #: frames per clip
    frames: int
    #: number of classes (0: unlabelled); known after ``setup``
    num_classes: int

    def split_tensors(self, split: str) -> tuple[Tensor, Tensor]:
        """``(videos [N, C, T, H, W] in [-1, 1], labels [N])`` of ``train``, ``val`` or ``test``."""
        ...
