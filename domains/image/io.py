"""Reading and writing images: PNG files and sample grids (Pillow), with errors that name the file and the fix."""

import math
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from polydiff.core.utils import PolydiffError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def to_uint8(images: Tensor) -> np.ndarray:
    """``[..., C, H, W]`` in [0, 1] to ``[..., H, W, C]`` uint8."""
    arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return np.moveaxis(arr, -3, -1)


def save_png(image: Tensor, path: Path | str, scale: int = 1) -> Path:
    """Write one ``[C, H, W]`` image in [0, 1] (C = 1 or 3) as PNG, optionally enlarged ``scale`` times (nearest)."""
    arr = to_uint8(image)
    pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    path = Path(path)
    pil.save(path)
    return path


def make_grid(images: Tensor, nrow: int | None = None, pad: int = 1, pad_value: float = 1.0) -> Tensor:
    """Tile ``[N, C, H, W]`` images into one ``[C, H', W']`` image with ``nrow`` images per row."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value, dtype=images.dtype)
    for i, img in enumerate(images.cpu()):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = img
    return grid


def save_grid(images: Tensor, path: Path | str, nrow: int | None = None, min_cell: int = 48) -> Path:
    """Write ``[N, C, H, W]`` images in [0, 1] as one PNG grid; small images are enlarged to about ``min_cell`` pixels."""
    scale = max(1, min_cell // images.shape[-1])
    return save_png(make_grid(images, nrow), path, scale=scale)


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


InpaintRegion = Literal["centre", "right_half", "left_half", "top_half", "bottom_half"]


def region_mask(region: str, size: int) -> Tensor:
    """``[1, 1, size, size]`` mask that is 1 on the *known* pixels and 0 on the region to inpaint.

    ``centre``: the central square of half the side; ``right_half`` / ``left_half`` / ``top_half`` / ``bottom_half``: that half.
    """
    m = torch.ones(1, 1, size, size)
    q, h = size // 4, size // 2
    if region == "centre":
        m[..., q:q + h, q:q + h] = 0
    elif region == "right_half":
        m[..., :, h:] = 0
    elif region == "left_half":
        m[..., :, :h] = 0
    elif region == "top_half":
        m[..., :h, :] = 0
    elif region == "bottom_half":
        m[..., h:, :] = 0
    else:
        raise PolydiffError(f"unknown inpainting region {region!r}; choose centre, right_half, left_half, top_half or "
                            "bottom_half (--model.inpaint_region)")
    return m


def list_images(folder: Path) -> list[Path]:
    """Image files (PNG / JPEG, any case) directly inside ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def describe_suffixes(paths: Sequence[Path]) -> str:
    return ", ".join(sorted({p.suffix or "<none>" for p in paths})[:5])
