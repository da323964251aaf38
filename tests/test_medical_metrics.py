"""Medical metrics and controls against closed forms; the N-d U-Net's contract in 2D and 3D."""

import math

import pytest
import torch

from polydiff.domains.medical import controls, metrics
from polydiff.domains.medical.regions import box_mask, pad_to_multiple
from polydiff.domains.medical.unet import UNetND


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def gaussian_mmd2(m1: float, s1: float, m2: float, s2: float, h: float) -> float:
    """MMD² of N(m1, s1²) and N(m2, s2²) under exp(-(x - y)² / (2 h²)): E k(X, X') = h / sqrt(h² + s² + s'²)
    times exp(-(m - m')² / (2 (h² + s² + s'²)))."""
    def ek(ma, sa, mb, sb):
        v = h * h + sa * sa + sb * sb
        return h / math.sqrt(v) * math.exp(-(ma - mb) ** 2 / (2 * v))
    return ek(m1, s1, m1, s1) + ek(m2, s2, m2, s2) - 2 * ek(m1, s1, m2, s2)


def test_mmd2_matches_the_gaussian_closed_form():
    g = torch.Generator().manual_seed(0)
    n = 2000
    unbiased, biased, null = [], [], []
    for _ in range(6):  # the estimate's spread at n = 2000 is about 0.008: average six
        x = torch.randn(n, 1, generator=g, dtype=torch.float64)
        y = 0.5 + 1.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
        z = torch.randn(n, 1, generator=g, dtype=torch.float64)
        unbiased.append(metrics.mmd2(x, y, bandwidth=1.0, unbiased=True))
        biased.append(metrics.mmd2(x, y, bandwidth=1.0))
        null.append(metrics.mmd2(x, z, bandwidth=1.0, unbiased=True))
    expected = gaussian_mmd2(0.0, 1.0, 0.5, 1.5, 1.0)  # 0.0617
    assert sum(unbiased) / 6 == pytest.approx(expected, abs=0.007)
    assert abs(sum(null) / 6) < 0.002  # one distribution: the U-statistic is centred on zero
    # the V-statistic adds the diagonals: (1 - E k(X, X')) / n + (1 - E k(Y, Y')) / n, exactly, draw by draw
    bias = (1 - 1 / math.sqrt(3)) / n + (1 - 1 / math.sqrt(1 + 2 * 1.5**2)) / n
    diagonal = [b - u for b, u in zip(biased, unbiased)]
    assert sum(diagonal) / 6 == pytest.approx(bias, rel=0.05)


def test_median_bandwidth_is_the_median_squared_distance():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0]])
    # squared distances 1, 9, 4: 2 h^2 = 4
    assert metrics.median_bandwidth(x, y) == pytest.approx(math.sqrt(2.0))
    # one point against itself: k = 1 everywhere, the V-statistic is 0; two points at distance d: 2 - 2 exp(-d^2/2h^2)
    assert metrics.mmd2(x[:1], x[:1], bandwidth=1.0) == pytest.approx(0.0)
    assert metrics.mmd2(x[:1], y, bandwidth=1.5) == pytest.approx(2 - 2 * math.exp(-9 / (2 * 1.5**2)))


def test_psnr_and_ssim_closed_forms():
    target = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    # an offset of 0.1 in [-1, 1] is 0.05 in [0, 1]: PSNR = 20 log10(1 / 0.05)
    assert metrics.psnr(target + 0.1, target) == pytest.approx(20 * math.log10(20), abs=1e-3)
    assert metrics.ssim(target, target) == pytest.approx(1.0, abs=1e-6)
    vol = torch.rand(2, 1, 12, 12, 12) * 2 - 1
    assert metrics.ssim(vol, vol) == pytest.approx(1.0, abs=1e-6)
    assert metrics.ssim(vol, -vol) < 0


def test_masked_errors_only_count_the_hole():
    target = torch.zeros(1, 1, 4, 4)
    known = box_mask((4, 4), 0.5)  # the central 2 x 2 is unknown
    pred = target + 3.0 * (1 - known) + 100.0 * known
    assert metrics.masked_errors(pred, target, known) == {"mae": 3.0, "rmse": 3.0}


def test_controls_reproduce_what_they_model():
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(2, 64, generator=g) * 0.05  # small enough that the [-1, 1] clip never acts
    train = (torch.randn(500, 2, generator=g) @ basis).reshape(500, 1, 8, 8)
    pca = controls.pca_gaussian(train, 2000, components=2)
    flat = pca.reshape(2000, -1) - train.reshape(500, -1).mean(0)
    residual = flat - flat @ torch.linalg.pinv(basis) @ basis  # draws stay in the span of the training data
    assert residual.abs().max() < 1e-4
    assert float(pca.reshape(2000, -1).var(0).sum()) == pytest.approx(float(train.reshape(500, -1).var(0).sum()), rel=0.1)
    pix = controls.pixelwise_gaussian(train, 4000)
    assert torch.allclose(pix.std(0), train.std(0), atol=0.03)


def test_interpolation_and_harmonic_fill_are_exact_on_linear_images():
    ramp = torch.linspace(-0.8, 0.8, 16)
    image = (ramp[:, None] * 0.5 + ramp[None, :] * 0.3)[None, None]
    known = box_mask((16, 16), 0.4)
    assert torch.allclose(controls.harmonic_fill(image, known, iterations=2000), image, atol=1e-4)
    low = controls.block_downsample(image, 2)
    assert low.shape == (1, 1, 8, 8)
    up = controls.interpolate_up(low, 2)
    assert torch.allclose(up[..., 1:-1, 1:-1], image[..., 1:-1, 1:-1], atol=1e-5)  # linear is exact inside
    assert torch.allclose(controls.block_downsample(up, 2)[..., 1:-1, 1:-1], low[..., 1:-1, 1:-1], atol=1e-5)
    vol = torch.ones(1, 1, 4, 4, 4) * 0.25
    assert torch.allclose(controls.interpolate_up(controls.block_downsample(vol, 2), 2), vol)


@pytest.mark.parametrize("dims,size", [(2, (8, 12)), (3, (8, 8, 4))])
def test_unet_nd_keeps_the_shape_and_starts_at_zero(dims, size):
    net = UNetND(dims, 1, 1, model_channels=8, channel_mult=(1, 2), attention_levels=(1,), num_heads=2)
    x = torch.randn(2, 1, *size)
    out = net(x, torch.zeros(2), torch.randn(2, 1, *size))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # zero-initialised output convolution
    with pytest.raises(ValueError, match="condition"):
        net(x, torch.zeros(2), None)
    padded, original = pad_to_multiple(torch.randn(1, 1, *[s - 1 for s in size]), 4)
    assert all(p % 4 == 0 for p in padded.shape[2:]) and original == tuple(s - 1 for s in size)
