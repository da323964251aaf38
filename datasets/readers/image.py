"""Reading image files (Pillow): one image as a tensor, with errors that name the file and the fix."""

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from polydiff.core.utils import PolydiffError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def open_image(path: Path | str, channels: int) -> Image.Image:
    """Open an image file as grayscale (``channels=1``) or RGB (``channels=3``), naming the file on failure."""
    path = Path(path)
    if channels not in (1, 3):
        raise PolydiffError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}; set --data.channels")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("L" if channels == 1 else "RGB")
    except FileNotFoundError:
        raise PolydiffError(f"image {path} does not exist; pass the path of a PNG or JPEG file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise PolydiffError(f"image {path} cannot be read ({type(exc).__name__}: {exc}); re-save it as PNG or JPEG, "
                            "or remove it from the folder") from None


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side is ``size`` (bicubic for downscaling quality, keeps the aspect ratio)."""
    w, h = img.size
    s = size / min(w, h)
    return img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)


def pil_to_tensor(img: Image.Image) -> Tensor:
    """PIL image to ``[C, H, W]`` float in [-1, 1]."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr).permute(2, 0, 1) * 2 - 1


def centre_crop(x: Tensor, size: int) -> Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def read_image(path: Path | str, size: int, channels: int, resize_to: int | None = None) -> Tensor:
    """Read one image as ``[C, size', size']`` in [-1, 1]: shorter side resized to ``resize_to`` (default ``size``),
    then centre-cropped to ``resize_to``."""
    target = resize_to or size
    return centre_crop(pil_to_tensor(resize_shorter(open_image(path, channels), target)), target)


def list_images(folder: Path) -> list[Path]:
    """Image files (PNG / JPEG, any case) directly inside ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def describe_suffixes(paths: Sequence[Path]) -> str:
    return ", ".join(sorted({p.suffix or "<none>" for p in paths})[:5])
