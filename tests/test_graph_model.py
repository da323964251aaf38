"""The graph denoiser and module: permutation equivariance, symmetric noise and samples, oracle denoisers."""

import networkx as nx
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from polydiff.core.discrete import CategoricalSamplerConfig
from polydiff.datasets.graphs import category_marginals, node_count_histogram, nx_to_data
from polydiff.domains.graph import GraphDiffusionModule, GraphTransformer

torch.set_num_threads(1)


def random_graph_batch(b: int, n: int, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    e = (torch.rand(b, n, n, generator=g) < p).long().triu(1)
    return torch.zeros(b, n, dtype=torch.long), e + e.transpose(1, 2)


def test_graph_transformer_is_permutation_equivariant_with_padding():
    torch.manual_seed(0)
    net = GraphTransformer(3, 3, max_nodes=12, hidden_nodes=16, hidden_edges=8, hidden_graph=16, heads=2, layers=2)
    b, n = 3, 10
    gen = torch.Generator().manual_seed(1)
    nodes = torch.randint(0, 3, (b, n), generator=gen)
    edges = torch.randint(0, 3, (b, n, n), generator=gen).triu(1)
    edges = edges + edges.transpose(1, 2)
    mask = torch.ones(b, n)
    mask[0, 7:] = 0  # a padded graph: its padding must not influence the real nodes
    nodes[0, 7:], edges[0, 7:], edges[0, :, 7:] = 0, 0, 0
    t = torch.tensor([0.1, 0.5, 0.9])
    x, e = net(nodes, edges, t, mask)
    # permute the real nodes of every graph (graph 0 keeps its padding at the end)
    perm = torch.stack([torch.cat([torch.randperm(7, generator=gen), torch.arange(7, 10)])]
                       + [torch.randperm(n, generator=gen) for _ in range(b - 1)])
    idx, idx3 = torch.arange(b)[:, None], torch.arange(b)[:, None, None]
    xp, ep = net(nodes[idx, perm], edges[idx3, perm[:, :, None], perm[:, None, :]], t, mask[idx, perm])
    assert torch.allclose(xp, x[idx, perm], atol=1e-4)
    assert torch.allclose(ep, e[idx3, perm[:, :, None], perm[:, None, :]], atol=1e-4)
    assert torch.equal(e, e.transpose(1, 2))  # undirected: symmetric edge logits
    # not a constant function: the output depends on the input graph
    x2, e2 = net(nodes, torch.zeros_like(edges), t, mask)
    assert (e2 - e).abs().max() > 1e-3


def make_module(graphs: list[nx.Graph], max_nodes: int, steps: int = 50) -> GraphDiffusionModule:
    from polydiff.core.discrete import CategoricalConfig

    m = GraphDiffusionModule(max_nodes=max_nodes, hidden_nodes=16, hidden_edges=8, hidden_graph=16, heads=2, layers=1,
                             diffusion=CategoricalConfig(transition="marginal", schedule="cosine", steps=steps),
                             sampler=CategoricalSamplerConfig(steps=10), eval_batch_size=8)
    data = [nx_to_data(g) for g in graphs]
    node_m, edge_m = category_marginals(data, 1, 2)
    m.set_data_statistics(node_count_histogram(data, max_nodes), node_m, edge_m)
    return m


def test_noisy_training_inputs_are_symmetric_without_self_loops():
    graphs = [nx.cycle_graph(5), nx.complete_graph(7), nx.path_graph(6)]
    m = make_module(graphs, max_nodes=8)
    b = m.encode(Batch.from_data_list([nx_to_data(g) for g in graphs]))
    nodes, edges = b.x0
    assert edges.shape == (3, 7, 7) and torch.equal(edges, edges.transpose(1, 2))
    t = torch.full((3,), 0.7, dtype=torch.float64)
    xt = tuple(p.sample_marginal(x0, t, torch.Generator().manual_seed(0)) for p, x0 in zip(m.processes, b.x0))
    _, et = m.constrain(xt, b.masks())
    assert torch.equal(et, et.transpose(1, 2))
    assert et.diagonal(dim1=1, dim2=2).abs().sum() == 0
    assert et[0, 5:].abs().sum() == 0 and et[2, 6:].abs().sum() == 0  # padding of the 5- and 6-node graphs
    # the model's marginals are the data's (5 + 21 + 5 edges among 10 + 21 + 15 pairs)
    assert m.processes[1].limit[1].item() == pytest.approx(31 / 46)


def test_sampled_graphs_are_symmetric_without_self_loops_and_sized_like_training():
    torch.manual_seed(0)
    graphs = [nx.cycle_graph(6), nx.cycle_graph(9), nx.star_graph(7)]  # 6, 9 and 8 nodes
    m = make_module(graphs, max_nodes=10)
    node_mask = torch.ones(6, 9)
    node_mask[:3, 6:] = 0
    nodes, edges = m.generate([(6, 9), (6, 9, 9)], cond=node_mask, seed=0, mask=(node_mask, None))
    assert torch.equal(edges, edges.transpose(1, 2))
    assert edges.diagonal(dim1=1, dim2=2).abs().sum() == 0
    assert edges[:3, 6:].abs().sum() == 0 and edges[:3, :, 6:].abs().sum() == 0
    assert set(edges.unique().tolist()) <= {0, 1}
    sampled = m.sample_graphs(24, seed=3)
    assert {g.number_of_nodes() for g in sampled} <= {6, 8, 9}
    assert all(nx.number_of_selfloops(g) == 0 for g in sampled)


class Oracle(nn.Module):
    """A 'network' that ignores its input and predicts fixed x0 logits."""

    def __init__(self, node_logits: torch.Tensor, edge_logits: torch.Tensor) -> None:
        super().__init__()
        self.node_logits, self.edge_logits = node_logits, edge_logits

    def forward(self, nodes, edges, time, mask):
        b, n = nodes.shape
        return (self.node_logits[:n].expand(b, n, -1).clone(),
                self.edge_logits[:n, :n].expand(b, n, n, -1).clone())


def test_a_perfect_denoiser_reproduces_its_graph_exactly():
    target = nx.petersen_graph()  # 10 nodes, 15 edges
    m = make_module([target], max_nodes=10)
    adj = torch.tensor(nx.to_numpy_array(target, nodelist=range(10)), dtype=torch.long)
    edge_logits = torch.nn.functional.one_hot(adj, 2).float() * 40 - 20
    node_logits = torch.tensor([20.0, -20.0]).expand(10, 2)
    m.network = Oracle(node_logits, edge_logits)
    for g in m.sample_graphs(4, seed=0):
        assert nx.utils.graphs_equal(nx.Graph(g.edges()), nx.Graph(target.edges()))


def test_an_uninformative_denoiser_samples_the_marginal_density():
    # x0 predicted as the marginal itself: every reverse step keeps the marginal, so edges appear with probability m_1
    graphs = [nx.gnp_random_graph(12, 0.3, seed=s) for s in range(5)]
    m = make_module(graphs, max_nodes=12)
    m1 = m.processes[1].limit[1].item()
    logm = torch.log(m.processes[1].limit.float())
    m.network = Oracle(torch.tensor([20.0, -20.0]).expand(12, 2), logm.expand(12, 12, 2))
    sampled = m.sample_graphs(64, seed=0)
    density = sum(g.number_of_edges() for g in sampled) / sum(66 for _ in sampled)
    # 64 * 66 pairs: standard error ~ 0.007
    assert density == pytest.approx(m1, abs=0.03)
