"""Time-series domain: metrics against closed forms, the controls, the masks and the network's conditioning contract."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from polydiff.core.utils import PolydiffError
from polydiff.domains.timeseries.controls import linear_impute, locf_impute, mean_impute
from polydiff.domains.timeseries.masks import (
    block_hide,
    evaluation_hide,
    exact_hide,
    fixed_block_hide,
    forecast_hide,
    historical_hide,
    training_hide,
)
from polydiff.domains.timeseries.metrics import QUANTILE_LEVELS, ImputationScore, sample_quantiles
from polydiff.domains.timeseries.network import CSDINetwork

torch.set_num_threads(1)


def test_crps_of_a_point_forecast_is_the_normalised_mae():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(4, 3, 10, generator=g) + 5
    p = y + torch.randn(4, 3, 10, generator=g)
    m = (torch.rand(4, 3, 10, generator=g) < 0.5).float()
    s = ImputationScore()
    s.add(y, m, p, None)
    r = s.result()
    e = ((p - y).abs() * m).sum() / m.sum()
    assert r["mae"] == pytest.approx(float(e), rel=1e-6)
    assert r["rmse"] == pytest.approx(float(torch.sqrt((((p - y) * m) ** 2).sum() / m.sum())), rel=1e-6)
    assert r["crps"] == pytest.approx(float(((p - y).abs() * m).sum() / (y * m).abs().sum()), rel=1e-6)
    assert math.isnan(r["coverage90"])


def test_crps_of_gaussian_samples_matches_the_quantile_form_and_the_analytic_crps():
    g = torch.Generator().manual_seed(1)
    n_pts = 400
    y = torch.randn(n_pts, generator=g, dtype=torch.float64) + 10.0
    samples = 10.0 + torch.randn(4000, n_pts, generator=g, dtype=torch.float64)  # predictive N(10, 1)
    s = ImputationScore()
    s.add(y, torch.ones(n_pts), samples.median(0).values, sample_quantiles(samples))
    r = s.result()
    # the same quantile-loss form with exact normal quantiles
    yy = y.numpy()
    ql = [2 * np.abs((yy - (10 + norm.ppf(a))) * ((yy <= 10 + norm.ppf(a)) - a)).sum() for a in QUANTILE_LEVELS]
    expected = np.mean(ql) / np.abs(yy).sum()
    assert r["crps"] == pytest.approx(expected, rel=0.03)
    # analytic CRPS of N(mu, 1) (Gneiting & Raftery 2007): z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi), z = y - mu;
    # 19 quantile levels approximate the integral over all levels from below, within a few per cent
    z = yy - 10
    analytic = (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi)).sum() / np.abs(yy).sum()
    assert r["crps"] == pytest.approx(analytic, rel=0.1)
    # calibrated predictive distribution: the 90 % interval covers about 90 % (binomial sd 1.5 %)
    assert 0.85 < r["coverage90"] < 0.95
    assert r["mae"] == pytest.approx(np.abs(z).mean(), abs=0.02)


def test_overconfident_samples_cover_less_and_score_worse():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(500, generator=g, dtype=torch.float64)
    good, narrow = ImputationScore(), ImputationScore()
    for sc, scale in ((good, 1.0), (narrow, 0.1)):
        smp = scale * torch.randn(2000, 500, generator=g, dtype=torch.float64)
        sc.add(y + 3, torch.ones(500), smp.median(0).values + 3, sample_quantiles(smp) + 3)
    assert narrow.result()["coverage90"] < 0.3 < 0.85 < good.result()["coverage90"]
    assert good.result()["crps"] < narrow.result()["crps"]


def test_controls_on_known_series():
    t = torch.arange(8, dtype=torch.float64)
    values = torch.stack([2 * t + 1, t**2]).unsqueeze(0)  # [1, 2, 8]
    cond = torch.ones_like(values)
    cond[0, 0, [2, 3, 4, 7]] = 0
    cond[0, 1, [0, 5]] = 0
    lin = linear_impute(values, cond, torch.zeros(2))
    assert torch.allclose(lin[0, 0, :7], values[0, 0, :7])  # exact inside a straight line
    assert lin[0, 0, 7] == values[0, 0, 6]  # constant beyond the last known value
    assert lin[0, 1, 5] == pytest.approx((16 + 36) / 2)
    locf = locf_impute(values, cond, torch.zeros(2))
    assert locf[0, 0, 2] == locf[0, 0, 4] == values[0, 0, 1]
    assert locf[0, 1, 0] == values[0, 1, 1]  # leading gap: next observation carried backward
    mean = mean_impute(values, cond, torch.tensor([-1.0, 7.0], dtype=torch.float64))
    assert mean[0, 0, 3] == -1 and mean[0, 1, 5] == 7 and mean[0, 1, 2] == values[0, 1, 2]
    empty = torch.zeros_like(values)
    assert torch.all(linear_impute(values, empty, torch.tensor([4.0, 5.0]))[0, 1] == 5)


def test_masks_hide_only_observed_values_in_the_documented_shapes():
    g = torch.Generator().manual_seed(3)
    observed = (torch.rand(64, 5, 20, generator=g) < 0.8).float()
    for setting in ("random10", "random50", "random90"):
        hide = evaluation_hide(observed, setting, g)
        assert torch.all(hide <= observed)
        ratio = int(setting[6:]) / 100
        expected = torch.clamp(torch.round(observed.flatten(1).sum(1) * ratio), min=1)
        assert torch.equal(hide.flatten(1).sum(1), expected)
    full = torch.ones(8, 3, 12)
    blk = fixed_block_hide(full, g)
    for row in blk.reshape(-1, 12):  # one contiguous run of ceil(12/4) = 3 steps per feature
        idx = torch.nonzero(row).flatten()
        assert len(idx) == 3 and idx[-1] - idx[0] == 2
    fc = forecast_hide(full, 4)
    assert fc[..., -4:].min() == 1 and fc[..., :-4].max() == 0
    with pytest.raises(PolydiffError, match="forecast horizon"):
        forecast_hide(full, 12)
    bh = block_hide(full, g, blackout_prob=1.0)
    assert torch.all(bh == bh[:, :1])  # a blackout hides the same steps of every feature
    hist_obs = torch.ones(2, 2, 6)
    hist_obs[1, 0, :3] = 0  # window 1 misses three values; window 0 gets that pattern as targets
    hist = historical_hide(hist_obs, g)
    assert torch.equal(hist[0], 1 - hist_obs[1])
    assert torch.all(hist[1] <= hist_obs[1])  # window 1 (pattern of window 0 hides nothing): random fallback
    for strategy in ("random", "historical", "block", "forecast", "mix"):
        h = training_hide(observed, strategy, g)
        assert torch.all(h <= observed) and h.sum() > 0
    with pytest.raises(PolydiffError, match="unknown training mask"):
        training_hide(observed, "bogus", g)
    assert exact_hide(torch.zeros(1, 2, 3), 0.5, g).sum() == 0


def test_network_ignores_noise_at_conditioning_positions_and_values_at_targets():
    torch.manual_seed(0)
    net = CSDINetwork(3, channels=16, layers=2, heads=2, time_embedding_dim=8, feature_embedding_dim=4).eval()
    torch.nn.init.normal_(net.output.weight, std=0.1)  # the zero-initialised head would make every output 0
    x = torch.randn(2, 3, 7)
    cond_mask = (torch.rand(2, 3, 7) < 0.5).float()
    values = torch.randn(2, 3, 7)
    c = torch.tensor([0.3, -1.0])
    out = net(x, c, {"values": values, "cond_mask": cond_mask})
    x2 = x + 5 * cond_mask * torch.randn_like(x)  # change the noisy input only where values are given
    v2 = values + 5 * (1 - cond_mask) * torch.randn_like(values)  # change values only at targets
    out2 = net(x2, c, {"values": v2, "cond_mask": cond_mask})
    assert torch.allclose(out, out2, atol=1e-5)
    out3 = net(x, c, {"values": values + cond_mask, "cond_mask": cond_mask})
    assert not torch.allclose(out, out3, atol=1e-4)  # the observed values do matter
    assert out.shape == x.shape
    one = CSDINetwork(1, channels=8, layers=1, heads=2, time_embedding_dim=8, feature_embedding_dim=4)
    cond = {"values": torch.zeros(2, 1, 5), "cond_mask": torch.zeros(2, 1, 5)}
    assert one(torch.randn(2, 1, 5), c, cond).shape == (2, 1, 5)
