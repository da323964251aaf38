"""Controls that the medical metrics are read against, computed in the same ``polydiff test`` table.

Synthesis: a pixelwise Gaussian (independent voxels with the training mean and variance) and a PCA-Gaussian (a Gaussian
on the top principal components of the training items, i.e. probabilistic PCA without the isotropic residual): a model
that does not beat them has not learned more than first and second moments. Super-resolution: linear (bilinear /
trilinear) and, in 2D, bicubic interpolation of the low-resolution input. Inpainting: a smoothing fill (the harmonic
interpolant of the known voxels, by Jacobi iterations of the Laplace equation) and the mean of the known voxels.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def pixelwise_gaussian(train: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` draws of independent voxels with the per-voxel mean and standard deviation of ``train``, clipped to [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    mean, std = train.mean(0), train.std(0)
    return (mean + std * torch.randn((n, *train.shape[1:]), generator=g)).clamp(-1, 1)


def pca_gaussian(train: Tensor, n: int, components: int = 10, seed: int = 0) -> Tensor:
    """``n`` draws of a Gaussian on the top ``components`` principal directions of ``train``, clipped to [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    flat = train.reshape(len(train), -1).double()
    mean = flat.mean(0)
    _, s, vh = torch.linalg.svd(flat - mean, full_matrices=False)
    k = min(components, len(s))
    scale = s[:k] / max(1, len(flat) - 1) ** 0.5  # standard deviation along each component
    z = torch.randn((n, k), generator=g, dtype=torch.float64)
    return (mean + (z * scale) @ vh[:k]).reshape(n, *train.shape[1:]).float().clamp(-1, 1)


def block_downsample(x: Tensor, factor: int) -> Tensor:
    """Average blocks of ``factor`` voxels along every spatial axis of ``[B, C, *spatial]`` (the degradation model)."""
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[x.ndim - 2]
    return pool(x, factor)


def interpolate_up(x: Tensor, factor: int, mode: str = "linear") -> Tensor:
    """Upsample ``[B, C, *spatial]`` by ``factor`` with linear (bi-/trilinear) or ``cubic`` (bicubic, 2D) interpolation,
    cell-centred (``align_corners=False``, the grid of :func:`polydiff.domains.medical.geometry.upsampled_affine`)."""
    dims = x.ndim - 2
    name = {("linear", 1): "linear", ("linear", 2): "bilinear", ("linear", 3): "trilinear", ("cubic", 2): "bicubic"}
    out = F.interpolate(x, scale_factor=float(factor), mode=name[(mode, dims)], align_corners=False)
    return out.clamp(-1, 1)


def harmonic_fill(x: Tensor, known: Tensor, iterations: int = 500) -> Tensor:
    """Fill the entries with ``known == 0`` by the discrete harmonic interpolant of the known ones (Jacobi iterations
    of the Laplace equation, replicate borders), starting from the mean of the known entries."""
    known = known.expand_as(x).to(x.dtype)
    mean = (x * known).sum(dim=tuple(range(1, x.ndim)), keepdim=True) / known.sum(dim=tuple(range(1, x.ndim)),
                                                                                  keepdim=True).clamp_min(1)
    y = x * known + mean * (1 - known)
    dims = x.ndim - 2
    kernel = torch.zeros((1, 1) + (3,) * dims, dtype=x.dtype)
    for axis in range(dims):
        for side in (0, 2):
            idx = [0, 0] + [1] * dims
            idx[2 + axis] = side
            kernel[tuple(idx)] = 1.0 / (2 * dims)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    for _ in range(iterations):
        avg = conv(F.pad(y, (1, 1) * dims, mode="replicate"), kernel.expand(x.shape[1], 1, *kernel.shape[2:]),
                   groups=x.shape[1])
        y = x * known + avg * (1 - known)
    return y


def mean_fill(x: Tensor, known: Tensor) -> Tensor:
    """Fill the unknown entries with the mean of the known entries of each item."""
    known = known.expand_as(x).to(x.dtype)
    dims = tuple(range(1, x.ndim))
    mean = (x * known).sum(dim=dims, keepdim=True) / known.sum(dim=dims, keepdim=True).clamp_min(1)
    return x * known + mean * (1 - known)
