"""Metrics of the medical domain: MMD² between sample sets, PSNR and SSIM of reconstructions, masked errors.

MMD² uses the RBF kernel ``k(x, y) = exp(-|x - y|² / (2 h²))`` with the median heuristic (Gretton et al. 2012, JMLR,
sec. 8): ``h`` is the median pairwise distance of the pooled samples; the estimator is the unbiased U-statistic (eq. 3),
so it can be slightly negative when the two sets come from one distribution. PSNR and SSIM are torchmetrics' (SSIM with
an 11-voxel Gaussian window, in 2D or 3D) on data in [0, 1].
"""

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).double()


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """Median pairwise Euclidean distance of the pooled rows of ``x`` and ``y`` (distinct pairs)."""
    z = torch.cat([_flat(x), _flat(y)])
    d = torch.cdist(z, z)
    iu = torch.triu_indices(len(z), len(z), offset=1)
    return float(d[iu[0], iu[1]].median())


def mmd2(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD² of two sample sets ``[N, ...]`` and ``[M, ...]`` (N, M >= 2) under the RBF kernel."""
    x, y = _flat(x), _flat(y)
    h = median_bandwidth(x, y) if bandwidth is None else bandwidth
    k = lambda a, b: torch.exp(-torch.cdist(a, b).square() / (2 * h * h))
    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * k(x, y).mean())


def psnr(pred: Tensor, target: Tensor) -> float:
    """PSNR in dB of ``pred`` against ``target``, both in [-1, 1] (mapped to [0, 1]; data range 1), over all items."""
    return float(peak_signal_noise_ratio((pred.float() + 1) / 2, (target.float() + 1) / 2, data_range=1.0))


def ssim(pred: Tensor, target: Tensor) -> float:
    """Mean SSIM of ``[B, 1, H, W]`` or ``[B, 1, D, H, W]`` in [-1, 1] (mapped to [0, 1])."""
    p, t = (pred.float() + 1) / 2, (target.float() + 1) / 2
    kernel = min(11, *[s if s % 2 else s - 1 for s in t.shape[2:]])
    return float(structural_similarity_index_measure(p, t, data_range=1.0, kernel_size=kernel))


def masked_errors(pred: Tensor, target: Tensor, known: Tensor) -> dict[str, float]:
    """Mean absolute and root-mean-square error (in [-1, 1] units) over the entries where ``known == 0``."""
    hole = (known == 0).expand_as(target)
    diff = (pred.float() - target.float())[hole]
    return {"mae": float(diff.abs().mean()), "rmse": float(diff.square().mean().sqrt())}
