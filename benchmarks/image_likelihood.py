"""Bits per dimension of the digits recipe's models on held-out digits, with a Gaussian control.

    .venv/bin/python benchmarks/image_likelihood.py --ckpt "vp_cosine v=runs/image/digits/.../last.ckpt"

For each checkpoint (``label=path``, repeatable): the continuous-time ELBO (an upper bound on the NLL) on ``--images``
held-out test digits and the probability-flow ODE NLL (Hutchinson's trace, RK4) on ``--ode_images`` of them, both in
bits per dimension of continuous pixels in [-1, 1] (the digits are upsampled 8x8 scans, not 8-bit pixels: there is no
dequantisation offset), each with its standard error over images. The control beside them is a Gaussian with the
training split's mean and covariance (ridge chosen on the validation split). Writes docs/benchmarks/likelihood.md and
prints the command that reproduces it.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _doc import command_line, provenance, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def gaussian_control(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor) -> tuple[float, float, float]:
    """Bits/dim (mean, standard error) on ``test`` of a full-covariance Gaussian fitted to ``train``; the ridge added
    to the covariance is the one (of a log grid) that maximises the validation likelihood."""
    x = train.flatten(1).double()
    mu = x.mean(0)
    cov = torch.cov(x.T)
    d = x.shape[1]

    def nll(data: torch.Tensor, ridge: float) -> torch.Tensor:
        c = cov + ridge * torch.eye(d, dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=c)
        return -dist.log_prob(data.flatten(1).double())

    ridges = [10.0**k for k in range(-6, 1)]
    best = min(ridges, key=lambda r: float(nll(val, r).mean()))
    bpd = nll(test, best) / (d * math.log(2))
    return float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd))), best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", action="append", required=True, help="LABEL=PATH of a digits checkpoint (repeatable)")
    p.add_argument("--images", type=int, default=128, help="held-out images for the ELBO")
    p.add_argument("--times", type=int, default=16, help="log-SNR samples per image of the ELBO")
    p.add_argument("--ode_images", type=int, default=16, help="held-out images for the PF-ODE NLL")
    p.add_argument("--ode_steps", type=int, default=24, help="RK4 steps of the PF-ODE")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "likelihood.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    from polydiff.core import load
    from polydiff.core.likelihood import bits_per_dim, ode_nll
    from polydiff.datasets.digits import DigitsDataModule

    dm = DigitsDataModule()
    train, _ = dm.split_tensors("train")
    val, _ = dm.split_tensors("val")
    test, test_y = dm.split_tensors("test")
    rows = []
    control = gaussian_control(train, val, test)
    rows.append(f"| control: Gaussian fitted to the training digits (ridge {control[2]:g}) | {control[0]:.3f} ± "
                f"{control[1]:.3f} (all {len(test)} test digits) | — | — |")
    for spec in args.ckpt:
        label, path = spec.split("=", 1)
        model = load(path)
        t0 = time.time()
        elbo = model.bits_per_dim(test[:args.images], test_y[:args.images])
        t_elbo = time.time() - t0
        x = test[:args.ode_images]
        cond = test_y[:args.ode_images].long() if model.num_classes else None
        t0 = time.time()
        nll = ode_nll(model.denoiser, x, cond, steps=args.ode_steps, divergence="hutchinson",
                      generator=torch.Generator().manual_seed(0))
        ode = bits_per_dim(nll, x[0].numel())
        t_ode = time.time() - t0
        rows.append(f"| {label} (`{path}`, {model.diffusion_config.process}, {model.diffusion_config.prediction}) | "
                    f"{elbo['bits_per_dim_elbo']:.3f} ± {elbo['bits_per_dim_elbo_se']:.3f} ({args.images} digits, "
                    f"{t_elbo:.0f} s) | {float(ode.mean()):.3f} ± {float(ode.std() / math.sqrt(len(ode))):.3f} "
                    f"({args.ode_images} digits, {t_ode:.0f} s) | {model.sampler_config.guidance} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "## Likelihood: bits per dimension of held-out digits", "", provenance(), "",
        "Continuous pixels in [-1, 1] (the digits are bilinearly upsampled 8x8 scans, so they lie near a 64-dimensional "
        "subspace of the 256 pixels and their density is high: bits per dimension are negative). Lower is better. The "
        "ELBO is an upper bound on the NLL; the PF-ODE NLL uses Hutchinson's trace estimate with one Rademacher probe "
        "per image and RK4 in log sigma. Class-conditional models are scored with each digit's own class (no "
        "guidance: the column shows the sampling guidance, which the likelihood does not use).", "",
        "| model | ELBO bits/dim ± s.e. | PF-ODE bits/dim ± s.e. | sampling guidance |", "|---|---|---|---|", *rows,
        "", f"Reproduce: `{command_line()}`"])
    write_section(args.out, "likelihood", text, title="# Likelihood")
    print(f"wrote {args.out}\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()
