"""The tables ``polydiff test`` prints for each medical task: the model's figure and its controls side by side.

Each function takes the model (anything with ``sample_items`` / ``super_resolve`` / ``inpaint`` and the settings of
:class:`~polydiff.domains.medical.module.MedicalDiffusion`) and the held-out items ``[N, 1, *size]`` in [-1, 1].
"""

from typing import Any

import torch
from torch import Tensor

from polydiff.domains.medical import controls, metrics
from polydiff.domains.medical.regions import box_mask


def synthesis_table(model: Any, real: Tensor, train: Tensor) -> dict[str, float]:
    """MMD² of ``eval_num_samples`` samples to the held-out items, next to the pixelwise- and PCA-Gaussian controls and
    training items (the floor), all under one RBF bandwidth (the median heuristic on training and held-out items) and
    with sets of one size where the training set allows it (the V-statistic's bias falls as 1 / n)."""
    n = model.eval_num_samples
    generator = torch.Generator().manual_seed(0)
    train_subset = train[torch.randperm(len(train), generator=generator)[:n]]
    h = metrics.median_bandwidth(train_subset, real)
    samples = model.sample_items(n, seed=0)
    return {
        "mmd2": metrics.mmd2(samples, real, h),
        "mmd2_pca_gaussian": metrics.mmd2(controls.pca_gaussian(train, n, model.pca_components), real, h),
        "mmd2_pixelwise_gaussian": metrics.mmd2(controls.pixelwise_gaussian(train, n), real, h),
        "mmd2_train_items": metrics.mmd2(train_subset, real, h),
        "bandwidth": h,
        "num_samples": float(n),
    }


def super_resolution_table(model: Any, real: Tensor) -> dict[str, float]:
    """PSNR / SSIM of super-resolved held-out items (block-averaged by ``sr_factor`` first) against linear and, in 2D,
    cubic interpolation, and against linear interpolation projected onto the measurement (a consistent control)."""
    lowres = controls.block_downsample(real, model.sr_factor)
    pred = model.super_resolve(lowres, seed=0)
    linear = controls.interpolate_up(lowres, model.sr_factor)
    table = {"psnr": metrics.psnr(pred, real), "ssim": metrics.ssim(pred, real),
             "psnr_linear": metrics.psnr(linear, real), "ssim_linear": metrics.ssim(linear, real)}
    consistent = model.project(linear, lowres)
    table.update(psnr_linear_consistent=metrics.psnr(consistent, real),
                 ssim_linear_consistent=metrics.ssim(consistent, real))
    if real.ndim == 4:
        cubic = controls.interpolate_up(lowres, model.sr_factor, "cubic")
        table.update(psnr_bicubic=metrics.psnr(cubic, real), ssim_bicubic=metrics.ssim(cubic, real))
    return table


def inpainting_table(model: Any, real: Tensor) -> dict[str, float]:
    """Error inside the central box after RePaint, against the harmonic (smoothing) fill and the mean fill."""
    known = box_mask(tuple(real.shape[2:]), model.inpaint_fraction)
    filled = model.inpaint(real, known, seed=0)
    table = {}
    for name, pred in (("repaint", filled), ("harmonic_fill", controls.harmonic_fill(real, known)),
                       ("mean_fill", controls.mean_fill(real, known))):
        errors = metrics.masked_errors(pred, real, known)
        table[f"mae_{name}"], table[f"rmse_{name}"] = errors["mae"], errors["rmse"]
    return table
