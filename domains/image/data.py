"""What the image model needs from its DataModule, as a structural type.

Any DataModule with these members fits (``polydiff.datasets.digits.DigitsDataModule`` and
``polydiff.datasets.image_folder.ImageFolderDataModule`` do); the model checks it in ``connect_data`` and nowhere else
reaches into the data.
"""

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class ImageData(Protocol):
    """Images of one size in [-1, 1] with integer labels (-1: unlabelled), split into train / val / test."""

    #: side length of the square images
    image_size: int
    #: 1 (grayscale) or 3 (RGB)
    channels: int
    #: number of classes (0: unlabelled); known after ``setup``
    num_classes: int

    def split_tensors(self, split: str) -> tuple[Tensor, Tensor]:
        """``(images [N, C, H, W] in [-1, 1], labels [N])`` of ``train``, ``val`` or ``test``."""
        ...


@runtime_checkable
class CaptionedData(Protocol):
    """Captioned images (a text-conditioned model's data): :class:`ImageData` plus the captions of each split."""

    image_size: int
    channels: int

    def split_captions(self, split: str) -> tuple[Tensor, list[str], Tensor]:
        """``(images [N, C, H, W] in [-1, 1], captions, digits [N, 2])`` of a split (digits -1 where unknown)."""
        ...
