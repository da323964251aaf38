"""Closed-form checks of the categorical processes, posteriors, bound terms and samplers (polydiff.core.discrete)."""

import math

import pytest
import torch
import torch.nn.functional as F

from polydiff.core.discrete import (
    CategoricalProcess,
    CategoricalSamplerConfig,
    absorbing_fast_sample,
    ancestral_sample,
    mdlm_term,
    prior_term,
    sample_categorical_diffusion,
    time_grid,
    vb_term,
)
from polydiff.core.utils import PolydiffError

torch.set_num_threads(1)
K = 5


def processes():
    return [
        CategoricalProcess.uniform(K, "cosine"),
        CategoricalProcess.absorbing(K, "linear"),
        CategoricalProcess.marginal(torch.tensor([5.0, 1.0, 2.0, 0.5, 1.5]), "cosine"),
    ]


@pytest.mark.parametrize("proc", processes(), ids=lambda p: p.kind)
def test_rows_sum_to_one(proc):
    for t in [0.0, 0.1, 0.5, 0.9, 1.0]:
        Q = proc.cumulative_matrix(t)
        assert torch.allclose(Q.sum(1), torch.ones(K, dtype=torch.float64), atol=1e-12)
        assert (Q >= 0).all()
    assert torch.allclose(proc.step_matrix(0.5, 0.4).sum(1), torch.ones(K, dtype=torch.float64))
    # the prior end is the limit distribution from every starting category
    assert torch.allclose(proc.cumulative_matrix(1.0), proc.limit.expand(K, K))


def textbook_step(proc, T, k):
    """One D3PM step built from its textbook beta_k (Austin et al. 2021, sec. 3 and A.2), independently of the code."""
    if proc.kind == "absorbing":
        beta = 1.0 / (T - k + 1)  # D3PM's absorbing schedule
    else:  # cosine schedule: beta_k = 1 - abar_k / abar_{k-1}
        def f(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        beta = 1.0 if k == T else 1 - f(k / T) / f((k - 1) / T)
    e = torch.eye(K, dtype=torch.float64)
    return (1 - beta) * e + beta * torch.ones(K, 1, dtype=torch.float64) * proc.limit[None, :]


@pytest.mark.parametrize("proc", processes(), ids=lambda p: p.kind)
def test_cumulative_matches_repeated_steps(proc):
    T = 12
    prod = torch.eye(K, dtype=torch.float64)
    for k in range(1, T + 1):
        prod = prod @ textbook_step(proc, T, k)
        assert torch.allclose(prod, proc.cumulative_matrix(k / T), atol=1e-10), k


@pytest.mark.parametrize("proc", processes(), ids=lambda p: p.kind)
def test_sampled_marginal_matches_cumulative_matrix(proc):
    gen = torch.Generator().manual_seed(0)
    n = 40000
    x0 = torch.full((n,), 1, dtype=torch.long)
    t = torch.full((n,), 0.6, dtype=torch.float64)
    xt = proc.sample_marginal(x0, t, gen)
    freq = torch.bincount(xt, minlength=K).double() / n
    assert torch.allclose(freq, proc.cumulative_matrix(0.6)[1], atol=0.01)


def bayes_posterior(proc, x0, xt, t, s):
    """q(x_s | x_t, x_0) from the K x K matrices by Bayes' rule."""
    Qts, Qs, Qt = proc.step_matrix(t, s), proc.cumulative_matrix(s), proc.cumulative_matrix(t)
    return Qts[:, xt] * Qs[x0, :] / Qt[x0, xt]


@pytest.mark.parametrize("proc", processes(), ids=lambda p: p.kind)
def test_posterior_matches_bayes_rule(proc):
    t, s = 0.55, 0.3
    gen = torch.Generator().manual_seed(1)
    for x0 in range(K):
        for xt in range(K):
            if proc.cumulative_matrix(t)[x0, xt] == 0:
                continue  # x_t impossible from this x_0
            want = bayes_posterior(proc, x0, xt, t, s)
            got = proc.posterior_probs(torch.tensor([xt]), F.one_hot(torch.tensor([x0]), K).double(),
                                       torch.tensor([t], dtype=torch.float64), torch.tensor([s], dtype=torch.float64))
            assert torch.allclose(got[0], want, atol=1e-12)
    # the model step with a predicted x0 distribution is the x0-average of Bayes' posterior
    for xt in range(K):
        p = torch.softmax(torch.randn(K, generator=gen, dtype=torch.float64), 0)
        if proc.absorbing_index is not None:
            p[proc.absorbing_index] = 0
            p = p / p.sum()
        possible = [i for i in range(K) if proc.cumulative_matrix(t)[i, xt] > 0 and p[i] > 0]
        want = sum(p[i] * bayes_posterior(proc, i, xt, t, s) for i in possible) / sum(p[i] for i in possible)
        got = proc.posterior_probs(torch.tensor([xt]), p[None], torch.tensor([t], dtype=torch.float64),
                                   torch.tensor([s], dtype=torch.float64))
        assert torch.allclose(got[0], want, atol=1e-12)


def test_posterior_any_shape_and_logits():
    proc = CategoricalProcess.uniform(3, "cosine")
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, 3, (2, 4, 4), generator=gen)
    t = torch.tensor([0.7, 0.2], dtype=torch.float64)
    xt = proc.sample_marginal(x0, t, gen)
    logits = torch.randn(2, 4, 4, 3, generator=gen)
    logp = proc.posterior_logits(xt, logits, t, t - 0.1)
    assert logp.shape == (2, 4, 4, 3)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 4, 4), atol=1e-5)
    # item 1 of the batch equals its own computation at its own time
    one = proc.posterior_logits(xt[1:], logits[1:], t[1:], t[1:] - 0.1)
    assert torch.allclose(one, logp[1:], atol=1e-6)


@pytest.mark.parametrize("proc", processes(), ids=lambda p: p.kind)
def test_bound_of_exact_model_is_the_entropy(proc):
    """For i.i.d. positions with law pi, the model predicting the exact posterior q(x0 | x_t) makes every reverse step
    exact, so the bound (sum of all T step terms plus the prior term, expectation over x_t in closed form) equals
    the entropy H(pi). This checks the posterior, the schedule and the bound terms together."""
    T = 8
    pi = torch.tensor([0.4, 0.3, 0.15, 0.15, 0.0], dtype=torch.float64)
    if proc.absorbing_index is None:
        pi = torch.tensor([0.4, 0.3, 0.1, 0.1, 0.1], dtype=torch.float64)
    H = float(-(pi[pi > 0] * pi[pi > 0].log()).sum())
    total = 0.0
    x0s = torch.arange(K)
    for k in range(1, T + 1):
        t, s = k / T, (k - 1) / T
        Qt = proc.cumulative_matrix(t)
        for xt in range(K):
            post = Qt[:, xt] * pi  # exact q(x0 | x_t) for independent positions
            if post.sum() == 0:
                continue
            post = post / post.sum()
            logits = post.clamp_min(1e-300).log().expand(K, K).float()
            xt_vec = torch.full((K,), xt)
            tv, sv = torch.full((K,), t, dtype=torch.float64), torch.full((K,), s, dtype=torch.float64)
            terms = vb_term(proc, x0s, xt_vec, logits, tv, sv).double()
            total += float((pi * Qt[:, xt] * terms).sum())
    total += float((pi * prior_term(proc, x0s).double()).sum())
    assert abs(total - H) < 1e-4, (total, H)


def test_mdlm_term_is_the_continuous_bound():
    """E_t[mdlm term] over t ~ U(0, 1] with a model that knows nothing (uniform over the K-1 data categories) is
    log(K-1) per position: each position is revealed once, at a cost of log(K-1) nats."""
    proc = CategoricalProcess.absorbing(K, "linear")
    gen = torch.Generator().manual_seed(3)
    n = 200000
    x0 = torch.randint(0, K - 1, (n,), generator=gen)
    t = torch.rand(n, generator=gen, dtype=torch.float64).clamp_min(1e-6)
    xt = proc.sample_marginal(x0, t, gen)
    logits = torch.zeros(n, K)
    est = mdlm_term(proc, x0[:, None], xt[:, None], logits[:, None], t).mean()
    assert abs(float(est) - math.log(K - 1)) < 0.03


def test_time_grid_and_step_limit():
    g = time_grid(1000, 7)
    assert g[0] == 1 and g[-1] == 0 and (g[:-1] > g[1:]).all()
    assert torch.allclose(g * 1000, (g * 1000).round())
    with pytest.raises(PolydiffError, match="exceed"):
        time_grid(10, 11)


def _oracle_model(proc, target):
    """x0 logits that put nearly all mass on ``target`` (a fixed sequence) whatever the input."""

    def fn(xs, time, index):
        return (F.one_hot(target[index], proc.num_categories).float() * 20.0,)

    return fn


@pytest.mark.parametrize("name", ["ancestral", "absorbing_fast"])
def test_samplers_reach_the_data_and_keep_fixed_tokens(name):
    proc = CategoricalProcess.absorbing(K, "linear")
    gen = torch.Generator().manual_seed(4)
    target = torch.randint(0, K - 1, (6, 20), generator=gen)
    fixed = torch.rand(6, 20, generator=gen) < 0.3
    values = torch.randint(0, K - 1, (6, 20), generator=gen)  # different from target at many fixed positions
    cfg = CategoricalSamplerConfig(name=name, steps=50)
    (x,) = sample_categorical_diffusion(_oracle_model(proc, target), [proc], [(6, 20)], cfg, 100, gen,
                                        fixed=[fixed], values=[values])
    assert (x[fixed] == values[fixed]).all()
    assert (x[~fixed] == target[~fixed]).all()


def test_fast_sampler_matches_ancestral_in_distribution_and_saves_calls():
    """Both samplers draw from the same reverse process: compare the marginal law of the first position under a model
    whose prediction depends on the number of masked positions."""
    proc = CategoricalProcess.absorbing(3, "linear")

    def model(xs, time, index):
        masked = (xs[0] == 2).float().mean(1, keepdim=True)
        logit0 = 3.0 * masked - 1.5  # prefers category 0 while much is still masked
        lg = torch.stack([logit0.expand(-1, xs[0].shape[1]), torch.zeros_like(xs[0], dtype=torch.float)], -1)
        return (torch.cat([lg, torch.zeros_like(lg[..., :1])], -1),)

    n, L, steps = 4000, 4, 20
    grid = time_grid(20, steps)
    x_init = (torch.full((n, L), 2),)
    a = ancestral_sample(model, [proc], x_init, grid, torch.Generator().manual_seed(5))[0]
    stats = {}
    b = absorbing_fast_sample(model, [proc], x_init, grid, torch.Generator().manual_seed(6), stats=stats)[0]
    pa, pb = (a == 0).double().mean(), (b == 0).double().mean()
    assert abs(float(pa - pb)) < 0.025, (pa, pb)
    assert (a != 2).all() and (b != 2).all()
    assert stats["network_calls"] < n * steps * 0.6
