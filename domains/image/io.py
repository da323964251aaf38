"""Writing images (PNG files and sample grids, with Pillow) and the inpainting regions of ``polydiff sample --input``.

Reading the user's image files is the data's job: :mod:`polydiff.datasets.readers.image`."""

import math
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from polydiff.core.utils import PolydiffError


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


def save_grid(images: Tensor, path: Path | str, nrow: int | None = None, min_cell: int = 48,
              labels: Sequence[str] | None = None) -> Path:
    """Write ``[N, C, H, W]`` images in [0, 1] as one PNG grid; small images are enlarged to about ``min_cell`` pixels
    (nearest neighbour), and ``labels`` (one per image, e.g. the requested class) are written in each tile's corner."""
    scale = max(1, min_cell // images.shape[-1])
    path = save_png(make_grid(images, nrow), path, scale=scale)
    if labels is not None:
        from PIL import ImageDraw

        n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        nrow = nrow or max(1, math.ceil(math.sqrt(n)))
        with Image.open(path) as img:
            img = img.convert("RGB")
        draw = ImageDraw.Draw(img)
        for i, label in enumerate(list(labels)[:n]):
            r, col = divmod(i, nrow)
            x, y = (1 + col * (w + 1)) * scale + 1, (1 + r * (h + 1)) * scale
            draw.text((x + 1, y + 1), str(label), fill=(0, 0, 0))  # a shadow keeps it legible on any image
            draw.text((x, y), str(label), fill=(255, 64, 64))
        img.save(path)
    return path


InpaintRegion = Literal["centre", "right_half", "left_half", "top_half", "bottom_half"]


def region_mask(region: str, size: int) -> Tensor:
    """``[1, 1, size, size]`` mask that is 1 on the *known* pixels and 0 on the region to inpaint.

    ``centre``: the central square of half the side; ``right_half`` / ``left_half`` / ``top_half`` /
    ``bottom_half``: that half.
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
