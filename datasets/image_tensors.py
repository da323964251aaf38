"""What the image DataModules share: an in-memory set of images in [-1, 1] with class labels, split by seed.

Both :class:`~polydiff.datasets.digits.DigitsDataModule` and :class:`~polydiff.datasets.image_folder.ImageFolderDataModule`
load their images once into a ``[N, C, H, W]`` float tensor and a ``[N]`` label tensor, then subclass this.
Batches are ``(images, labels)``; labels are -1 for unlabelled images. The image model's evaluation reads the train and
test splits through :meth:`ImageTensorDataModule.split_tensors`, and ``polydiff sample --input IMAGE`` reads the image
through :meth:`ImageTensorDataModule.read_input` (the image model's ``ImageData`` protocol).
"""

from typing import Optional

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from polydiff.core.utils import PolydiffError, training_seed
from polydiff.datasets.readers.image import read_image
from polydiff.datasets.splits import ResumableTraining, SplitLoaders


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, Tensor]:
    """A fixed random split of ``range(n)`` into train / val / test by ``seed`` (val and test get at least one item)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise PolydiffError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and sum "
                            "to less than 1; set --data.val_fraction / --data.test_fraction")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
    n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
    return {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}


class RandomShiftCrop(Dataset):
    """Random ``size`` x ``size`` crops (and optional horizontal flips) of larger stored images."""

    def __init__(self, images: Tensor, labels: Tensor, size: int, hflip: bool) -> None:
        self.images, self.labels, self.size, self.hflip = images, labels, size, hflip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img = self.images[i]
        h, w = img.shape[-2:]
        top = int(torch.randint(0, h - self.size + 1, (1,)))
        left = int(torch.randint(0, w - self.size + 1, (1,)))
        img = img[:, top:top + self.size, left:left + self.size]
        if self.hflip and bool(torch.rand(()) < 0.5):
            img = img.flip(-1)
        return img, self.labels[i]


class ImageTensorDataModule(ResumableTraining, SplitLoaders, L.LightningDataModule):
    """Base of the image DataModules: subclasses implement :meth:`load` (all images and labels, once)."""

    #: number of classes (0: unlabelled); set by :meth:`setup`
    num_classes: int = 0
    #: class names in label order
    class_names: list[str] = []

    def __init__(self, batch_size: int, val_fraction: float, test_fraction: float, seed: int, num_workers: int,
                 image_size: int, channels: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.image_size = image_size
        self.channels = channels
        self._splits: Optional[dict[str, tuple[Tensor, Tensor]]] = None

    def load(self) -> tuple[Tensor, Tensor]:
        """All images ``[N, C, H', W']`` in [-1, 1] (``H', W' >= image_size``) and labels ``[N]`` (-1 when unlabelled)."""
        raise NotImplementedError

    def train_transform_dataset(self, images: Tensor, labels: Tensor) -> Dataset:
        """The training dataset; the default serves the stored images as they are."""
        return TensorDataset(images, labels)

    def crop_eval(self, images: Tensor) -> Tensor:
        """Centre crop to ``image_size`` (for stored images larger than the model's input)."""
        h, w = images.shape[-2:]
        top, left = (h - self.image_size) // 2, (w - self.image_size) // 2
        return images[..., top:top + self.image_size, left:left + self.image_size]

    def setup(self, stage: Optional[str] = None) -> None:
        if self._splits is not None:
            return
        images, labels = self.load()
        idx = split_indices(len(images), self.val_fraction, self.test_fraction, self.seed)
        self._splits = {k: (images[v], labels[v]) for k, v in idx.items()}

    def split_tensors(self, split: str) -> tuple[Tensor, Tensor]:
        """``(images, labels)`` of ``split`` (train, val or test) at the model's size, images in [-1, 1]."""
        self.setup()
        images, labels = self._splits[split]
        return self.crop_eval(images), labels

    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        images, labels = self._splits[split]
        if len(images) == 0:
            raise PolydiffError(f"the {split} split is empty ({self.describe()}); add images or lower "
                                f"--data.val_fraction / --data.test_fraction")
        ds = self.train_transform_dataset(images, labels) if train else TensorDataset(self.crop_eval(images), labels)
        sampler = self.train_sampler(len(ds), training_seed()) if train else None
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler,
                          drop_last=train and len(images) > self.batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def read_input(self, input: str, image_size: Optional[int] = None, channels: Optional[int] = None) -> Tensor:
        """``polydiff sample --input IMAGE``: the image as ``[C, size, size]`` in [-1, 1], at the model's ``image_size``
        and ``channels`` (default: the data's)."""
        return read_image(input, image_size or self.image_size, channels or self.channels)

    def describe(self) -> str:
        return type(self).__name__
