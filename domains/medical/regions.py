"""Regions of a voxel grid: the box that inpainting fills, and padding to the U-Net's multiple."""

import torch
import torch.nn.functional as F
from torch import Tensor


def box_mask(size: tuple[int, ...], fraction: float) -> Tensor:
    """``[1, 1, *size]``: 0 inside a centred box of ``fraction`` of every side (the region to fill), 1 elsewhere."""
    mask = torch.ones((1, 1, *size))
    sides = [max(1, round(s * fraction)) for s in size]
    mask[(slice(None), slice(None), *(slice((s - b) // 2, (s - b) // 2 + b) for s, b in zip(size, sides)))] = 0
    return mask


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, ...]]:
    """Replicate-pad the spatial axes of ``[B, C, *spatial]`` at their ends to multiples of ``multiple``; also return
    the original sizes (crop back with ``x[..., :s0, :s1, ...]``)."""
    size = tuple(x.shape[2:])
    pad = [p for s in reversed(size) for p in (0, (-s) % multiple)]
    return (F.pad(x, pad, mode="replicate") if any(pad) else x), size
