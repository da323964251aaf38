"""The 2D toy of reflow (Liu et al. 2022, Fig. 2): noise N(0, I) to a mixture of two Gaussians, 1- and 2-rectified flow.

Both flows are small MLPs trained with the core's own pieces: the rectified-flow process with velocity prediction
(``NetworkDenoiser``), ``denoising_loss`` on independent (data, noise) draws for 1-RF and on the 1-RF ODE's
(end point, noise) pairs for 2-RF (what :class:`polydiff.core.fewstep.Reflow` does for a domain model), and
:func:`polydiff.core.fewstep.straightness`. Used by ``benchmarks/fewstep_digits.py`` and ``tests/test_fewstep.py``.
"""

import math

import torch
from torch import Tensor, nn

from polydiff.core.denoiser import NetworkDenoiser
from polydiff.core.fewstep import straightness
from polydiff.core.objective import denoising_loss, sample_logsnr
from polydiff.core.processes import process_by_name
from polydiff.core.sampling import SamplerConfig, sample

MODES = torch.tensor([[-2.0, 2.0], [2.0, -2.0]], dtype=torch.float64)
MODE_STD = 0.25


def toy_data(n: int, gen: torch.Generator) -> Tensor:
    k = torch.randint(0, len(MODES), (n,), generator=gen)
    return MODES[k] + MODE_STD * torch.randn(n, 2, generator=gen, dtype=torch.float64)


class ToyMLP(nn.Module):
    """``network(x_in [B, 2], c_noise [B], cond) -> [B, 2]``: an MLP on the input and a Fourier embedding of c_noise."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, 9, dtype=torch.float32) * math.pi)
        self.net = nn.Sequential(nn.Linear(2 + 16, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x: Tensor, c_noise: Tensor, cond=None) -> Tensor:
        e = c_noise.float()[:, None] * self.freqs[None]
        return self.net(torch.cat([x.float(), e.sin(), e.cos()], 1))


def _train(denoiser: NetworkDenoiser, draw, steps: int, batch: int, gen: torch.Generator, lr: float) -> None:
    opt = torch.optim.Adam(denoiser.network.parameters(), lr=lr)
    for _ in range(steps):
        x0, noise = draw(batch)
        lam = sample_logsnr(denoiser.process, batch, "uniform", 0.0, 1.0, gen)
        loss = denoising_loss(denoiser, x0, noise, lam).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def run_toy(steps: int = 2000, batch: int = 512, num_pairs: int = 8192, eval_points: int = 2000,
            seed: int = 0) -> dict[str, dict[str, float]]:
    """Train 1-RF, generate pairs with its ODE, train 2-RF (from 1-RF's weights); for each: straightness, and the
    1-step error ``E|x_1step - x_ODE|^2`` of one Euler step against the model's own ODE end point, and the 1-step
    samples' mean squared distance to the nearest mode (the data's own is ``2 MODE_STD^2``)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    process = process_by_name("flow")
    one = NetworkDenoiser(ToyMLP(), process, "velocity")
    _train(one, lambda n: (toy_data(n, gen), torch.randn(n, 2, generator=gen, dtype=torch.float64)), steps, batch,
           gen, 2e-3)
    ode = SamplerConfig(name="dpmpp_2m", steps=32, sigma_max=None)
    with torch.no_grad():
        z = torch.randn(num_pairs, 2, generator=gen, dtype=torch.float64)
        x1 = sample(one, (num_pairs, 2), ode, x_init=z)
    two = NetworkDenoiser(ToyMLP(), process, "velocity")
    two.network.load_state_dict(one.network.state_dict())

    def pairs(n: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, num_pairs, (n,), generator=gen)
        return x1[idx], z[idx]

    _train(two, pairs, steps, batch, gen, 1e-3)
    out = {}
    noise = torch.randn(eval_points, 2, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    for name, model in (("1-rectified flow", one), ("2-rectified flow", two)):
        s, end = straightness(model, noise, steps=64, sigma_max=None)
        with torch.no_grad():
            one_step = sample(model, (eval_points, 2), SamplerConfig(name="ddim", steps=1, sigma_max=None),
                              x_init=noise)
        mode_dist = torch.cdist(one_step, MODES).min(1).values.square().mean()
        out[name] = {"straightness": s, "one_step_error": float((one_step - end).square().sum(1).mean()),
                     "one_step_mode_distance": float(mode_dist)}
    return out
