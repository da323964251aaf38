"""Your own images: a folder of PNG / JPEG files, optionally one sub-folder per class."""

from pathlib import Path
from typing import Literal, Optional

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor
from torch.utils.data import Dataset

from polydiff.core.utils import PolydiffError
from polydiff.datasets.image_tensors import ImageTensorDataModule, RandomShiftCrop
from polydiff.datasets.readers import image as io


class ImageFolderDataModule(ImageTensorDataModule):
    """Images from ``root``, resized (shorter side) and cropped to ``image_size``, scaled to [-1, 1], held in memory.

    Layouts: ``root/*.png`` (unlabelled), or with ``class_folders: true`` ``root/<class name>/*.png`` (labels follow the
    sorted sub-folder names; the model then needs ``--model.num_classes`` equal to the number of sub-folders).

    Args:
        root: folder with the images (PNG or JPEG).
        image_size: side length of the square images the model sees.
        channels: 1 (grayscale) or 3 (RGB); images are converted.
        class_folders: read one class per sub-folder of ``root`` (torchvision's ImageFolder layout); None (default)
            decides from the folder: sub-folders of images and none directly in ``root`` mean classes.
        crop: ``centre`` crop, or ``random`` crops of a version resized to ``image_size * random_crop_scale`` (training
            only; validation and test use the centre).
        random_crop_scale: how much larger the stored images are than the crop when ``crop`` is random.
        hflip: random horizontal flips during training (turn off for text, digits, anything with a handedness).
        batch_size: images per batch.
        val_fraction: share of the images held out for validation.
        test_fraction: share held out for testing (the reference set of ``polydiff test``).
        seed: seed of the fixed split.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        root: Optional[str] = None,
        image_size: int = 32,
        channels: Literal[1, 3] = 3,
        class_folders: Optional[bool] = None,
        crop: Literal["centre", "random"] = "centre",
        random_crop_scale: float = 1.125,
        hflip: bool = False,
        batch_size: PositiveInt = 32,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, val_fraction, test_fraction, seed, num_workers, image_size, channels)
        self.save_hyperparameters()
        self.root = root
        self.class_folders = class_folders
        self.crop = crop
        self.random_crop_scale = random_crop_scale
        self.hflip = hflip
        self.num_classes = 0
        self.class_names = []

    def describe(self) -> str:
        return f"folder {self.root}"

    def files(self) -> list[tuple[Path, int]]:
        """``(path, label)`` of every image (label -1 without class folders); errors name the folder and the fix."""
        if not self.root:
            raise PolydiffError("ImageFolderDataModule needs a folder of images: pass --data.root DIR")
        root = Path(self.root).expanduser()
        if root.exists() and not root.is_dir():
            raise PolydiffError(f"--data.root {root} is a file, not a folder; pass the folder that holds the images")
        if not root.is_dir():
            raise PolydiffError(f"image folder {root} does not exist; pass an existing folder of PNG/JPEG files as "
                                "--data.root")
        by_class = self.class_folders
        if by_class is None:  # read the layout from the folder
            subfolders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
            by_class = not io.list_images(root) and any(io.list_images(d) for d in subfolders)
        if by_class:
            classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            found = [(f, label) for label, d in enumerate(classes) for f in io.list_images(d)]
            self.class_names = [d.name for d in classes]
            self.num_classes = len(classes)
            empty = [d.name for d in classes if not io.list_images(d)]
            if classes and empty:
                raise PolydiffError(f"class folder(s) {', '.join(empty)} in {root} hold no PNG/JPEG images; add images "
                                    "or remove the folder")
        else:
            found = [(f, -1) for f in io.list_images(root)]
        if not found:
            others = [p for p in root.rglob("*") if p.is_file()]
            hint = (" (the images are in sub-folders but --data.class_folders is false: drop it or set it true)"
                    if not by_class and any(p.suffix.lower() in io.IMAGE_SUFFIXES for p in others) else
                    f" (found only {io.describe_suffixes(others)} files)" if others else "")
            layout = "root/<class>/*.png" if by_class else "root/*.png"
            raise PolydiffError(f"image folder {root} holds no PNG/JPEG images{hint}; put images there as {layout}")
        return found

    def load(self) -> tuple[Tensor, Tensor]:
        size = self.image_size
        stored = round(size * self.random_crop_scale) if self.crop == "random" else size
        images, labels = [], []
        for path, label in self.files():
            images.append(io.read_image(path, size, self.channels, resize_to=stored))
            labels.append(label)
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)

    def train_transform_dataset(self, images: Tensor, labels: Tensor) -> Dataset:
        return RandomShiftCrop(images, labels, self.image_size, self.hflip)
