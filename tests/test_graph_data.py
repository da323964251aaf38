"""Graph data: generated benchmarks, the user's files (edge lists, GraphML, saved torch-geometric Data) and their errors."""

import networkx as nx
import pytest
import torch
from torch_geometric.data import Data

from polydiff.core.utils import PolydiffError
from polydiff.datasets.graphs import (
    GraphDataModule,
    category_marginals,
    data_to_nx,
    generate_community_small,
    generate_planar,
    generate_sbm,
    nx_to_data,
    read_graphs,
)
from polydiff.domains.graph.controls import erdos_renyi_control

torch.set_num_threads(1)


def test_generators_match_their_definitions():
    cs = generate_community_small(30, seed=0)
    assert all(12 <= g.number_of_nodes() <= 20 for g in cs)
    assert all(nx.number_of_selfloops(g) == 0 for g in cs)
    # the same seed gives the same graphs; another seed other graphs
    again = generate_community_small(30, seed=0)
    assert all(nx.utils.graphs_equal(a, b) for a, b in zip(cs, again))
    assert not all(nx.utils.graphs_equal(a, b) for a, b in zip(cs, generate_community_small(30, seed=1)))
    planar = generate_planar(10, seed=0, num_nodes=24)
    for g in planar:
        assert g.number_of_nodes() == 24 and nx.is_connected(g) and nx.check_planarity(g)[0]
        # a triangulation of n points with h on the hull has 3n - 3 - h edges (Euler)
        assert 2 * 24 - 3 <= g.number_of_edges() <= 3 * 24 - 6
    sbm = generate_sbm(10, seed=0, block_sizes=(5, 8))
    assert all(nx.is_connected(g) and 10 <= g.number_of_nodes() <= 32 for g in sbm)


def test_data_round_trip_and_marginals():
    g = nx.Graph([(0, 1), (1, 2), (2, 0), (2, 3)])
    d = nx_to_data(g)
    assert d.edge_index.shape == (2, 8) and int(d.num_nodes) == 4
    assert nx.utils.graphs_equal(nx.Graph(data_to_nx(d).edges()), nx.Graph(g.edges()))
    node, edge = category_marginals([d], num_node_types=1, num_edge_types=2)
    # 4 edges among 6 unordered pairs
    assert torch.allclose(edge, torch.tensor([2 / 6, 4 / 6], dtype=torch.float64))
    assert torch.allclose(node, torch.tensor([1.0], dtype=torch.float64))


def test_erdos_renyi_control_is_density_matched():
    ref = generate_community_small(60, seed=0)
    er = erdos_renyi_control(ref, [16] * 300, seed=0)
    p_ref = sum(nx.density(g) for g in ref) / len(ref)
    p_er = sum(nx.density(g) for g in er) / len(er)
    assert abs(p_er - p_ref) < 0.02


def _write_edge_lists(folder, graphs):
    folder.mkdir(parents=True, exist_ok=True)
    for i, g in enumerate(graphs):
        (folder / f"g{i}.txt").write_text("# an edge list\n" + "\n".join(f"{u} {v}" for u, v in g.edges()) + "\n")


def test_user_folder_of_edge_lists_and_graphml(tmp_path):
    graphs = generate_community_small(6, seed=3)
    _write_edge_lists(tmp_path / "mine", graphs[:4])
    for i, g in enumerate(graphs[4:]):
        nx.write_graphml(g, tmp_path / "mine" / f"h{i}.graphml")
    dm = GraphDataModule(path=str(tmp_path / "mine"), max_nodes=20, test_fraction=0.2, val_fraction=0.2)
    dm.setup()
    read = dm.graphs
    assert len(read) == 6
    assert sorted(d.edge_index.shape[1] // 2 for d in read) == sorted(g.number_of_edges() for g in graphs)
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == len(dm.train_set)


def test_user_torch_geometric_file(tmp_path):
    graphs = [nx_to_data(g) for g in generate_planar(5, seed=0, num_nodes=10)]
    torch.save(graphs, tmp_path / "graphs.pt")
    read = read_graphs(tmp_path / "graphs.pt")
    assert len(read) == 5 and all(torch.equal(a.edge_index, b.edge_index) for a, b in zip(read, graphs))
    # a single Data without node / edge features is accepted too
    torch.save(Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3), tmp_path / "one.pt")
    (one,) = read_graphs(tmp_path / "one.pt")
    assert one.x.tolist() == [0, 0, 0] and one.edge_attr.tolist() == [1, 1]


def test_clear_errors_for_bad_input(tmp_path):
    # self-loop in an edge list
    bad = tmp_path / "loops"
    bad.mkdir()
    (bad / "a.txt").write_text("0 1\n1 1\n")
    with pytest.raises(PolydiffError, match="self-loop"):
        read_graphs(bad)
    # directed GraphML
    d = tmp_path / "directed"
    d.mkdir()
    nx.write_graphml(nx.DiGraph([(0, 1), (1, 2)]), d / "a.graphml")
    with pytest.raises(PolydiffError, match="directed"):
        read_graphs(d)
    # directed torch-geometric Data (an edge without its reverse)
    torch.save(Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3), tmp_path / "dir.pt")
    with pytest.raises(PolydiffError, match="directed"):
        read_graphs(tmp_path / "dir.pt")
    torch.save(Data(edge_index=torch.tensor([[0, 0], [0, 1]]), num_nodes=2), tmp_path / "loop.pt")
    with pytest.raises(PolydiffError, match="self-loop"):
        read_graphs(tmp_path / "loop.pt")
    # graphs beyond the configured maximum size
    big = tmp_path / "big"
    _write_edge_lists(big, [nx.path_graph(30)])
    (big / "b.txt").write_text("0 1\n")
    (big / "c.txt").write_text("0 1\n1 2\n")
    with pytest.raises(PolydiffError, match="max_nodes"):
        GraphDataModule(path=str(big), max_nodes=20).setup()
    # empty folder, missing path
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolydiffError, match="no graph files"):
        read_graphs(tmp_path / "empty")
    with pytest.raises(PolydiffError, match="does not exist"):
        read_graphs(tmp_path / "nowhere")
