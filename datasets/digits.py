"""scikit-learn's handwritten digits (1797 real 8x8 scans of 10 classes, UCI optdigits test set), embedded: no download.

Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits" (UCI, 1998); shipped as ``sklearn.datasets.load_digits``.
"""

import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveInt
from torch import Tensor

from polydiff.datasets.image_tensors import ImageTensorDataModule


class DigitsDataModule(ImageTensorDataModule):
    """The 1797 real handwritten digits, upsampled bilinearly to ``image_size``, scaled to [-1, 1], with labels 0-9.

    Args:
        batch_size: images per batch.
        image_size: side length after bilinear upsampling from 8x8 (16 by default).
        val_fraction: share of the images held out for validation.
        test_fraction: share of the images held out for testing (the evaluation's reference set).
        seed: seed of the fixed train / val / test split.
        num_workers: DataLoader worker processes.
    """

    num_classes = 10
    class_names = [str(i) for i in range(10)]

    def __init__(self, batch_size: PositiveInt = 64, image_size: int = 16, val_fraction: float = 0.05,
                 test_fraction: float = 0.2, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(batch_size, val_fraction, test_fraction, seed, num_workers, image_size, channels=1)
        self.save_hyperparameters()

    def load(self) -> tuple[Tensor, Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # pixel values are 0..16
        if self.image_size != 8:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return (x.clamp(0, 1) * 2 - 1), torch.tensor(digits.target, dtype=torch.long)

    def describe(self) -> str:
        return "sklearn load_digits"
