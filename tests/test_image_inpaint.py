"""RePaint inpainting (core/inpaint.py): exact on the known region, and the right conditional on a Gaussian target."""

import math

import pytest
import torch

from polydiff.core.inpaint import forward_transition, inpaint
from polydiff.core.processes import process_by_name


class GaussianDenoiser:
    """Exact E[x0 | x_t] for x0 ~ N(0, S): ``alpha S (alpha^2 S + sigma^2 I)^{-1} x_t``."""

    def __init__(self, cov: torch.Tensor, process: str = "vp_cosine"):
        self.cov = cov.double()
        self.process = process_by_name(process)
        self.sigma_data = 0.0

    def __call__(self, x, logsnr, cond=None):
        a, s = self.process.alpha_sigma(logsnr[0])
        if torch.isinf(logsnr[0]):
            return x.double()
        eye = torch.eye(self.cov.shape[0], dtype=torch.float64)
        gain = a * self.cov @ torch.linalg.inv(a**2 * self.cov + s**2 * eye)
        return x.double() @ gain.T


@pytest.mark.parametrize("process", ["vp_cosine", "edm"])
def test_inpainting_samples_the_gaussian_conditional_and_keeps_known_values(process):
    rho, a = 0.8, 1.5
    model = GaussianDenoiser(torch.tensor([[1.0, rho], [rho, 1.0]]), process)
    n = 4000
    known = torch.zeros(n, 2)
    known[:, 0] = a
    known[:, 1] = 123.0  # ignored: under the mask
    mask = torch.tensor([[1.0, 0.0]])
    x = inpaint(model, known, mask, steps=100, resample=10, generator=torch.Generator().manual_seed(0))
    # the known entries come back exactly, not approximately
    assert torch.equal(x[:, 0], torch.full((n,), a, dtype=torch.float64))
    # x2 | x1 = a ~ N(rho a, 1 - rho^2) = N(1.2, 0.6^2). RePaint is an approximation that approaches it as steps and
    # resampling grow (measured: mean 0.64 without resampling, 1.16 here; std 0.58)
    assert x[:, 1].mean().item() == pytest.approx(rho * a, abs=0.06)
    assert x[:, 1].std().item() == pytest.approx(math.sqrt(1 - rho**2), abs=0.05)


def test_resampling_harmonises_better_than_plain_replacement():
    # the known value is far in the tail: without resampling the unknown part lags behind it (Lugmayr et al. 2022)
    rho, a = 0.95, 2.5
    model = GaussianDenoiser(torch.tensor([[1.0, rho], [rho, 1.0]]))
    known, mask = torch.full((3000, 2), a), torch.tensor([[1.0, 0.0]])
    err = {u: abs(inpaint(model, known, mask, steps=10, resample=u, generator=torch.Generator().manual_seed(1))[:, 1]
                  .mean().item() - rho * a) for u in (1, 10)}
    assert err[10] < err[1]


def test_forward_transition_matches_the_marginal():
    proc = process_by_name("vp_cosine")
    ls, lt = torch.tensor(2.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    a_s, s_s = proc.alpha_sigma(ls)
    a_t, s_t = proc.alpha_sigma(lt)
    gen = torch.Generator().manual_seed(0)
    x_s = a_s * x0 + s_s * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    x_t = forward_transition(proc, x_s, ls, lt, gen)
    assert x_t.mean().item() == pytest.approx(float(a_t) * 0.7, abs=0.02)
    assert x_t.std().item() == pytest.approx(float(s_t), abs=0.02)


def test_image_model_inpainting_keeps_the_known_region_exactly():
    torch.set_num_threads(1)
    from polydiff.domains.image import ImageDiffusion
    from polydiff.domains.image.io import region_mask

    torch.manual_seed(0)
    model = ImageDiffusion(image_size=8, channels=1, num_classes=3, model_channels=16, channel_mult=(1, 2),
                           attention_resolutions=(), num_heads=2)
    with torch.no_grad():  # a non-trivial (random) network
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.rand(2, 1, 8, 8)
    for region in ("centre", "right_half"):
        mask = region_mask(region, 8)
        out = model.inpaint(images, mask, steps=4, resample=2, seed=0)
        assert out.shape == images.shape
        known = mask.expand_as(images).bool()
        # [0, 1] -> [-1, 1] -> [0, 1] round trip: equal up to float rounding
        assert torch.allclose(out[known], images[known], atol=1e-6)
        assert (out[~known] - images[~known]).abs().max() > 1e-3
    assert int(mask.sum()) == 32 and int(region_mask("centre", 8).sum()) == 64 - 16


def test_start_noise_is_the_marginal_of_the_first_level_for_data_of_std_sigma_data():
    """A schedule that ends short of pure noise (DiffWave's, alpha^2 = 0.29 at the end) starts RePaint from
    N(0, alpha^2 sd^2 + sigma^2), the marginal of x_t, as the samplers do; sd = 0 gives sigma alone."""
    sd = 2.0
    proc = process_by_name("vp_linear", beta_min=0.005, beta_max=2.5)

    class Recorder:
        process = proc
        sigma_data = 0.0
        first = None

        def __call__(self, x, logsnr, cond=None):
            if Recorder.first is None:
                Recorder.first = x.clone()
            return torch.zeros_like(x, dtype=torch.float64)

    known, mask = torch.zeros(20000, 1), torch.zeros(1, 1)
    for sigma_data in (sd, 0.0):
        Recorder.first, Recorder.sigma_data = None, sigma_data
        inpaint(Recorder(), known, mask, steps=2, resample=1, generator=torch.Generator().manual_seed(0), sigma_max=None)
        lam0 = proc.logsnr_range()[0]
        a, s = proc.alpha_sigma(torch.tensor(lam0, dtype=torch.float64))
        expected = math.sqrt(float(a**2 * sigma_data**2 + s**2))
        assert float(Recorder.first.std()) == pytest.approx(expected, rel=0.02)
