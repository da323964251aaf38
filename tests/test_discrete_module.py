"""DiscreteDiffusionModule with two categorical variables of different sizes, masks and a constraint (the shape of the
graph domain's use): loss, exact bound against a closed form, stratified bound, constrained sampling."""


from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from polydiff.core.discrete import CategoricalBatch, CategoricalConfig, CategoricalSamplerConfig, DiscreteDiffusionModule

torch.set_num_threads(1)
PI_NODES = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
PI_EDGES = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)  # + absorbing [MASK] as a 4th category when absorbing


class ExactPosterior(torch.nn.Module):
    """Predicts q(x0 | x_t) exactly for data whose positions are i.i.d. with the laws above (no parameters to learn
    except a dummy one so that an optimiser can be built)."""

    def __init__(self, module):
        super().__init__()
        self.processes = lambda: module.processes  # not a submodule (that would be a cycle)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, xs, time, cond):
        out = []
        for proc, x, pi in zip(self.processes(), xs, (PI_NODES, PI_EDGES)):
            K = proc.num_categories
            pi_full = torch.zeros(K, dtype=torch.float64)
            pi_full[: len(pi)] = pi
            ab = proc.alpha_bar(time.double()).reshape(-1, *[1] * (x.ndim - 1), 1)
            lik = ab * F.one_hot(x, K).double() + (1 - ab) * proc.limit[x].unsqueeze(-1)  # q(x_t | x0 = i)
            post = lik * pi_full
            out.append((post / post.sum(-1, keepdim=True)).clamp_min(1e-30).log().float() + 0 * self.dummy)
        return tuple(out)


class ToyGraphs(DiscreteDiffusionModule):
    domain = "toy"

    def __init__(self, transition="uniform", steps=8):
        super().__init__(CategoricalConfig(transition=transition, schedule="cosine" if transition != "absorbing"
                                           else "linear", steps=steps), CategoricalSamplerConfig(steps=steps))
        extra = 1 if transition == "absorbing" else 0
        marg = [PI_NODES, PI_EDGES] if transition == "marginal" else None
        self.set_variables([3 + extra, 3 + extra], marginals=marg, weights=[1.0, 5.0])
        self.network = ExactPosterior(self)

    def encode(self, batch):
        nodes, edges, node_mask = batch
        edge_mask = node_mask[:, :, None] * node_mask[:, None, :]
        return CategoricalBatch(x0=(nodes, edges), mask=(node_mask, edge_mask))

    def constrain(self, xs, mask):
        nodes, edges = xs
        upper = torch.triu(edges, diagonal=1)
        return nodes, upper + upper.transpose(1, 2)


def toy_batch(n=64, N=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    nodes = torch.multinomial(PI_NODES.float(), n * N, replacement=True, generator=gen).reshape(n, N)
    edges = torch.multinomial(PI_EDGES.float(), n * N * N, replacement=True, generator=gen).reshape(n, N, N)
    node_mask = (torch.arange(N)[None] < torch.randint(2, N + 1, (n, 1), generator=gen)).long()
    return nodes, edges, node_mask


@pytest.mark.parametrize("transition", ["uniform", "absorbing", "marginal"])
def test_exact_bound_of_exact_model_is_the_entropy(transition):
    """No constraint here (i.i.d. positions): the exact reverse process makes the bound equal -log pi(x0) for every x0
    (in expectation over x_t), so the exact T-step bound over a batch is its empirical -log-likelihood."""
    m = ToyGraphs(transition)
    m.constrain = lambda xs, mask: xs
    nodes, edges, node_mask = toy_batch(n=200)
    b = m.encode((nodes, edges, node_mask))
    nats, count = m.bound_nats(b, num_times=0, generator=torch.Generator().manual_seed(1))
    n_nodes, n_edges = b.mask[0].sum(), b.mask[1].sum()
    nll = (-PI_NODES.log()[nodes] * b.mask[0]).sum() + (-PI_EDGES.log()[edges] * b.mask[1]).sum()
    want = nll / (n_nodes + n_edges)
    got = nats.sum() / count.sum()
    assert count.sum() == n_nodes + n_edges
    assert abs(float(got - want)) < 0.02, (float(got), float(want))
    # the stratified estimate agrees with the exact sum
    est, _ = m.bound_nats(b, num_times=2, generator=torch.Generator().manual_seed(2))
    assert abs(float(est.sum() / count.sum() - got)) < 0.05


def test_loss_ignores_padding_weighs_variables_and_sampling_is_constrained():
    m = ToyGraphs("absorbing", steps=20)
    b = m.encode(toy_batch(n=8))
    loss, bound = m.diffusion_loss(b, torch.Generator().manual_seed(0))
    assert loss.shape == (8,) and torch.isfinite(loss).all() and (bound > 0).all()
    # padding: other categories at every masked-out position leave the loss (same draws) exactly as it was
    padded = [torch.where(mk.bool(), x, (x + 1) % 3) for x, mk in zip(b.x0, b.masks())]
    assert any(not torch.equal(p, x) for p, x in zip(padded, b.x0))
    again, _ = m.diffusion_loss(replace(b, x0=tuple(padded)), torch.Generator().manual_seed(0))
    assert torch.equal(loss, again)
    # weights: the loss is linear in each variable's weight (DiGress weighs edges by 5)
    by_weight = {}
    for w in (1.0, 2.0, 5.0):
        m.variable_weights = (1.0, w)
        by_weight[w], _ = m.diffusion_loss(b, torch.Generator().manual_seed(0))
    torch.testing.assert_close(by_weight[5.0] - by_weight[1.0], 4 * (by_weight[2.0] - by_weight[1.0]))
    assert (by_weight[2.0] > by_weight[1.0]).all()
    m.variable_weights = (1.0, 1.0)
    nodes, edges = m.generate([(6, 5), (6, 5, 5)], seed=3)
    assert torch.equal(edges, edges.transpose(1, 2))
    assert (nodes < 3).all() and (edges < 3).all()  # nothing left masked
    freq = torch.bincount(nodes.flatten(), minlength=3).double() / nodes.numel()
    assert (freq > 0).all()


def test_marginals_travel_with_the_state_dict():
    m = ToyGraphs("marginal")
    state = m.state_dict()
    assert torch.allclose(state["marginals_1"], PI_EDGES)
    other = ToyGraphs("marginal")
    other.set_variables([3, 3])  # placeholder marginals (uniform)
    assert torch.allclose(other.processes[1].limit, torch.full((3,), 1 / 3, dtype=torch.float64))
    other.load_state_dict(state)
    assert torch.allclose(other.processes[1].limit, PI_EDGES)
