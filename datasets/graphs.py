"""Graph data: generated benchmarks (community-small, stochastic block models, planar) and the user's own graphs.

Every graph becomes a torch-geometric ``Data`` with

* ``edge_index`` ``[2, 2m]``: each undirected edge in both directions, no self-loops;
* ``x`` ``[n]`` (long): node category (0 when the data has none);
* ``edge_attr`` ``[2m]`` (long): edge category, >= 1 (category 0 is reserved for "no edge");
* ``num_nodes``.

Batches are torch-geometric ``Batch`` objects; the graph domain turns them into dense tensors with node masks.

Generated benchmarks follow the papers that introduced them, with fixed seeds:

* ``community_small`` (GraphRNN, You et al. 2018; GDSS, Jo et al. 2022): two communities of 6 to 10 nodes, each an
  Erdős–Rényi graph with p = 0.7, joined by inter-community edges with p = 0.05 (at least one), 12 to 20 nodes in all.
* ``sbm`` (SPECTRE, Martinkus et al. 2022, scaled down for CPU): 2 to 4 blocks of ``sbm_block_sizes`` nodes each,
  p_in = 0.5, p_out = 0.02, connected (see :func:`generate_sbm`).
* ``planar`` (SPECTRE; DiGress, Vignac et al. 2023): Delaunay triangulation of ``planar_nodes`` uniform points in the unit
  square.

Your own graphs (``--data.path``): a folder of edge lists (``*.txt``, ``*.edges``, ``*.edgelist``: one ``u v`` pair per line,
``#`` comments, read as undirected) and/or GraphML files (``*.graphml``), or one file (``.pt``) holding a torch-geometric
``Data`` or a list of them, saved with ``torch.save``.
"""

import pickle
import re
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import lightning as L
import networkx as nx
import numpy as np
import torch
from jsonargparse.typing import PositiveInt
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from polydiff.core.utils import PolydiffError, training_seed
from polydiff.datasets.splits import ResumableTraining, evaluation_sampler

EDGE_LIST_SUFFIXES = (".txt", ".edges", ".edgelist")
GRAPHML_SUFFIXES = (".graphml",)
TORCH_SUFFIXES = (".pt", ".pth")


# ---------------------------------------------------------------------------------------------------- generators
def generate_community_small(num_graphs: int, seed: int) -> list[nx.Graph]:
    """Community-small as in GraphRNN (You et al. 2018, ``n_community`` with ``p_inter = 0.05``), fixed seed."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(num_graphs):
        sizes = rng.choice([6, 7, 8, 9, 10], size=2)
        g = nx.Graph()
        offset, communities = 0, []
        for c in sizes:
            nodes = list(range(offset, offset + int(c)))
            g.add_nodes_from(nodes)
            for i in range(len(nodes)):
                for j in range(i + 1, len(nodes)):
                    if rng.random() < 0.7:
                        g.add_edge(nodes[i], nodes[j])
            communities.append(nodes)
            offset += int(c)
        a, b = communities
        inter = [(u, v) for u in a for v in b if rng.random() < 0.05]
        if not inter:  # GraphRNN adds one edge when none was drawn
            inter = [(int(rng.choice(a)), int(rng.choice(b)))]
        g.add_edges_from(inter)
        graphs.append(g)
    return graphs


def generate_sbm(num_graphs: int, seed: int, block_sizes: tuple[int, int] = (8, 16), p_in: float = 0.5,
                 p_out: float = 0.02) -> list[nx.Graph]:
    """Stochastic block models with 2 to 4 blocks of ``block_sizes[0]..block_sizes[1]`` nodes each (SPECTRE's recipe,
    Martinkus et al. 2022, uses 2-5 blocks of 20-40 nodes, p_in 0.3, p_out 0.005; scaled down here for CPU), kept connected
    by redrawing."""
    rng = np.random.default_rng(seed)
    graphs: list[nx.Graph] = []
    while len(graphs) < num_graphs:
        k = int(rng.integers(2, 5))
        sizes = [int(s) for s in rng.integers(block_sizes[0], block_sizes[1] + 1, size=k)]
        probs = [[p_in if i == j else p_out for j in range(k)] for i in range(k)]
        g = nx.stochastic_block_model(sizes, probs, seed=int(rng.integers(2**31)))
        if nx.is_connected(g):
            graphs.append(nx.Graph(g))
    return graphs


def generate_planar(num_graphs: int, seed: int, num_nodes: int = 64) -> list[nx.Graph]:
    """Planar graphs as in SPECTRE / DiGress: the Delaunay triangulation of ``num_nodes`` uniform points in [0, 1]^2."""
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(num_graphs):
        pts = rng.random((num_nodes, 2))
        tri = Delaunay(pts)
        g = nx.Graph()
        g.add_nodes_from(range(num_nodes))
        for s in tri.simplices:
            g.add_edges_from([(int(s[0]), int(s[1])), (int(s[1]), int(s[2])), (int(s[0]), int(s[2]))])
        graphs.append(g)
    return graphs


# ---------------------------------------------------------------------------------------------------- conversions
def nx_to_data(g: nx.Graph, source: str = "<graph>") -> Data:
    """An undirected networkx graph -> ``Data`` (nodes relabelled 0..n-1 in iteration order).

    Node attribute ``type`` (int) and edge attribute ``type`` (int >= 1) become categories when present.
    """
    if g.is_directed():
        raise PolydiffError(f"{source}: the graph is directed but the graph model is undirected; give undirected graphs "
                            "(GraphML edgedefault=\"undirected\", or symmetric edge_index)")
    nodes = list(g.nodes())
    index = {v: i for i, v in enumerate(nodes)}
    loops = [u for u, v in g.edges() if u == v]
    if loops:
        raise PolydiffError(f"{source}: self-loop at node {loops[0]!r}; the model generates simple graphs, remove "
                            "self-loops from the input")
    x = torch.tensor([int(g.nodes[v].get("type", 0)) for v in nodes], dtype=torch.long)
    rows, cols, types = [], [], []
    for u, v, d in g.edges(data=True):
        t = int(d.get("type", 1))
        if t < 1:
            raise PolydiffError(f"{source}: edge ({u!r}, {v!r}) has type {t}; edge types start at 1 (0 means no edge)")
        rows += [index[u], index[v]]
        cols += [index[v], index[u]]
        types += [t, t]
    edge_index = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
    return Data(edge_index=edge_index, x=x, edge_attr=torch.tensor(types, dtype=torch.long), num_nodes=len(nodes))


def data_to_nx(data: Data) -> nx.Graph:
    """``Data`` -> undirected networkx graph with integer ``type`` attributes on nodes and edges."""
    g = nx.Graph()
    n = int(data.num_nodes)
    x = data.x if getattr(data, "x", None) is not None else torch.zeros(n, dtype=torch.long)
    for i in range(n):
        g.add_node(i, type=int(x[i]))
    ea = data.edge_attr if getattr(data, "edge_attr", None) is not None else None
    for k, (u, v) in enumerate(data.edge_index.t().tolist()):
        if u < v:
            g.add_edge(u, v, type=int(ea[k]) if ea is not None else 1)
    return g


def check_data(data: Data, source: str) -> Data:
    """Validate a user's ``Data`` (self-loops, direction, categories) and normalise ``x`` / ``edge_attr`` to long vectors."""
    if not isinstance(data, Data):
        raise PolydiffError(f"{source}: expected torch_geometric.data.Data objects, found {type(data).__name__}")
    if data.edge_index is None or data.edge_index.ndim != 2 or data.edge_index.shape[0] != 2:
        raise PolydiffError(f"{source}: edge_index must have shape [2, num_edges]")
    n = int(data.num_nodes or 0)
    if n == 0:
        raise PolydiffError(f"{source}: the graph has no nodes; remove it")
    ei = data.edge_index.long()
    if ei.numel() and (ei.min() < 0 or ei.max() >= n):
        raise PolydiffError(f"{source}: edge_index refers to node {int(ei.max())} but num_nodes is {n}")
    loops = ei[0] == ei[1]
    if loops.any():
        raise PolydiffError(f"{source}: self-loop at node {int(ei[0][loops][0])}; the model generates simple graphs, "
                            "remove self-loops (torch_geometric.utils.remove_self_loops)")
    x = getattr(data, "x", None)
    if x is None:
        x = torch.zeros(n, dtype=torch.long)
    elif x.ndim == 2 and x.shape[1] > 1 and torch.all((x == 0) | (x == 1)) and torch.all(x.sum(1) == 1):
        x = x.argmax(1)  # one-hot node types
    elif x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or x.is_floating_point() and not torch.equal(x, x.round()):
        raise PolydiffError(f"{source}: node features x must be integer categories [num_nodes] (or one-hot); "
                            f"got shape {tuple(x.shape)} {x.dtype}")
    ea = getattr(data, "edge_attr", None)
    if ea is None:
        ea = torch.ones(ei.shape[1], dtype=torch.long)
    elif ea.ndim == 2 and ea.shape[1] == 1:
        ea = ea[:, 0]
    elif ea.ndim == 2 and torch.all((ea == 0) | (ea == 1)) and torch.all(ea.sum(1) == 1):
        ea = ea.argmax(1) + 1  # one-hot bond/edge types without a "no edge" column
    if ea.ndim != 1 or ea.shape[0] != ei.shape[1]:
        raise PolydiffError(f"{source}: edge_attr must be integer edge categories [num_edges]; got {tuple(ea.shape)}")
    ea = ea.long()
    if ea.numel() and ea.min() < 1:
        raise PolydiffError(f"{source}: edge_attr contains {int(ea.min())}; edge categories start at 1 (0 means no edge)")
    # undirected: every (u, v, type) needs its (v, u, type)
    fwd = {(u, v): t for (u, v), t in zip(ei.t().tolist(), ea.tolist())}
    for (u, v), t in fwd.items():
        if fwd.get((v, u)) != t:
            raise PolydiffError(f"{source}: edge ({u}, {v}) has no reverse edge ({v}, {u}) of the same type, so the graph "
                                "is "
                                "directed but the graph model is undirected; symmetrise it "
                                "(torch_geometric.utils.to_undirected) or give undirected graphs")
    return Data(edge_index=ei, x=x.long(), edge_attr=ea, num_nodes=n)


# ---------------------------------------------------------------------------------------------------- reading files
def read_edge_list(path: Path) -> nx.Graph:
    """One undirected graph from a whitespace-separated edge list (``u v`` per line, ``#`` comments)."""
    g = nx.Graph()
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise PolydiffError(f"{path}: not a text edge list (not UTF-8)") from None
    for k, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) < 2:
            raise PolydiffError(f"{path}:{k}: expected 'u v' (two node ids), found {line!r}")
        u, v = parts[0], parts[1]
        if u == v:
            raise PolydiffError(f"{path}:{k}: self-loop at node {u!r}; the model generates simple graphs, remove "
                                "self-loops from the input")
        g.add_edge(u, v)
    if g.number_of_nodes() == 0:
        raise PolydiffError(f"{path}: the edge list has no edges; an edge list cannot hold an edgeless graph")
    return g


def read_graphml(path: Path) -> nx.Graph:
    """One graph from a GraphML file; directed GraphML is refused (the model is undirected)."""
    try:
        g = nx.read_graphml(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same to the user
        raise PolydiffError(f"{path}: cannot be read as GraphML ({type(exc).__name__}: {exc})") from None
    if g.is_directed():
        raise PolydiffError(f"{path}: the GraphML graph is directed but the graph model is undirected; save it with "
                            "edgedefault=\"undirected\" (networkx: nx.write_graphml(G.to_undirected(), ...))")
    if g.is_multigraph():
        raise PolydiffError(f"{path}: the graph has parallel edges; give a simple graph")
    return g


def _safe_graph_types() -> list[Any]:
    """The torch-geometric classes a ``.pt`` file of graphs may hold: loading allows these and nothing else, so a
    crafted file cannot run code (``torch.load(weights_only=True)``)."""
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage

    return [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]


def load_graph_file(path: Path) -> Any:
    """The object in a ``.pt`` file of torch-geometric graphs, unpickled with the safe loader only."""
    try:
        with torch.serialization.safe_globals(_safe_graph_types()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.findall(r"(?:GLOBAL|function|global) ([\w.<>]+)", str(exc))
        what = f" ({found[0]})" if found else ""
        hint = "save batch.to_data_list() instead of a Batch" if "Batch" in str(exc) or "Inheritance" in str(exc) \
            else "save a list of torch-geometric Data with torch.save"
        raise PolydiffError(f"{path}: refused by the safe loader: it holds objects other than torch-geometric Data"
                            f"{what}, and loading them could run code; {hint}") from None
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, ...: the same fix for the user
        raise PolydiffError(f"{path}: cannot be loaded with torch.load ({type(exc).__name__}: {exc}); save a list of "
                            "torch-geometric Data with torch.save") from None


def read_graphs(path: str | Path) -> list[Data]:
    """The user's graphs from a folder of edge lists / GraphML files, or a ``.pt`` file of ``Data`` (or a list of them)."""
    p = Path(path)
    if not p.exists():
        raise PolydiffError(f"--data.path {path} does not exist; give a folder of edge lists / GraphML files or a .pt file "
                            "of torch-geometric Data")
    if p.is_file():
        if p.suffix not in TORCH_SUFFIXES:
            if p.suffix in EDGE_LIST_SUFFIXES + GRAPHML_SUFFIXES:
                raise PolydiffError(f"--data.path {path} is a single graph; put your graphs (one per file) in a folder and "
                                    "pass the folder")
            raise PolydiffError(f"--data.path {path}: unknown file type {p.suffix!r}; give a .pt file of torch-geometric "
                                "Data or a folder of edge lists / GraphML files")
        obj = load_graph_file(p)
        items = [obj] if isinstance(obj, Data) else list(obj) if isinstance(obj, (list, tuple)) else None
        if not items:
            raise PolydiffError(f"{path}: expected a torch_geometric Data or a non-empty list of Data, found "
                                f"{type(obj).__name__}")
        return [check_data(d, f"{path}[{i}]") for i, d in enumerate(items)]
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in EDGE_LIST_SUFFIXES + GRAPHML_SUFFIXES)
    if not files:
        raise PolydiffError(f"--data.path {path} holds no graph files; expected *.txt / *.edges / *.edgelist edge lists or "
                            "*.graphml files (one graph per file)")
    out = []
    for f in files:
        g = read_graphml(f) if f.suffix.lower() in GRAPHML_SUFFIXES else read_edge_list(f)
        out.append(check_data(nx_to_data(g, str(f)), str(f)))
    return out


# ---------------------------------------------------------------------------------------------------- statistics
def node_count_histogram(graphs: Sequence[Data], max_nodes: int) -> torch.Tensor:
    """Counts of graph sizes 0..max_nodes (the node-count prior of DiGress)."""
    hist = torch.zeros(max_nodes + 1)
    for d in graphs:
        hist[int(d.num_nodes)] += 1
    return hist


def category_marginals(graphs: Sequence[Data], num_node_types: int,
                       num_edge_types: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequencies of node categories over nodes and of edge categories (0 = no edge) over unordered node pairs."""
    node = torch.zeros(num_node_types, dtype=torch.float64)
    edge = torch.zeros(num_edge_types, dtype=torch.float64)
    for d in graphs:
        n = int(d.num_nodes)
        node += torch.bincount(d.x, minlength=num_node_types)[:num_node_types].double()
        upper = d.edge_index[0] < d.edge_index[1]
        counts = torch.bincount(d.edge_attr[upper], minlength=num_edge_types)[:num_edge_types].double()
        counts[0] = n * (n - 1) / 2 - counts[1:].sum()
        edge += counts
    return node / node.sum(), edge / edge.sum()


def split_indices(num: int, seed: int, test_fraction: float, val_fraction: float) -> tuple[list[int], list[int], list[int]]:
    """Fixed random split (train, val, test) of ``num`` items; each part keeps at least one item."""
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = max(1, int(round(num * test_fraction)))
    n_val = max(1, int(round(num * val_fraction)))
    if num - n_test - n_val < 1:
        raise PolydiffError(f"only {num} graphs: too few to split into train / val / test; give at least 3")
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


# ---------------------------------------------------------------------------------------------------- DataModule
class GraphDataModule(ResumableTraining, L.LightningDataModule):
    """Graphs for generation: a generated benchmark or your own files, as torch-geometric batches.

    Args:
        dataset: generated benchmark when ``path`` is not given: community_small, sbm or planar.
        path: your own graphs: a folder of edge lists (*.txt, *.edges, *.edgelist) and/or GraphML files, or a .pt file
            of a torch-geometric Data / list of Data (torch.save). Overrides ``dataset``.
        num_graphs: number of generated graphs (ignored with ``path``).
        planar_nodes: nodes per planar graph.
        sbm_block_sizes: smallest and largest SBM block.
        max_nodes: largest graph allowed; larger graphs raise an error (the model's ``max_nodes`` must be at least this).
        num_node_types: node categories the model has (data may use fewer; more is an error).
        num_edge_types: edge categories including "no edge" (2 for plain graphs).
        test_fraction: share of graphs held out for ``polydiff test``.
        val_fraction: share of graphs for validation.
        batch_size: graphs per batch.
        seed: seed of generation and of the split.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        dataset: Literal["community_small", "sbm", "planar"] = "community_small",
        path: Optional[str] = None,
        num_graphs: int = 100,
        planar_nodes: int = 64,
        sbm_block_sizes: tuple[int, int] = (8, 16),
        max_nodes: int = 64,
        num_node_types: int = 1,
        num_edge_types: int = 2,
        test_fraction: float = 0.2,
        val_fraction: float = 0.16,
        batch_size: PositiveInt = 32,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dataset = dataset
        self.path = path
        self.num_graphs = num_graphs
        self.planar_nodes = planar_nodes
        self.sbm_block_sizes = tuple(sbm_block_sizes)
        self.max_nodes = max_nodes
        self.num_node_types = num_node_types
        self.num_edge_types = num_edge_types
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.graphs: list[Data] | None = None
        self.train_set: list[Data] = []
        self.val_set: list[Data] = []
        self.test_set: list[Data] = []

    @property
    def name(self) -> str:
        return Path(self.path).stem if self.path else self.dataset

    def load_graphs(self) -> list[Data]:
        """All graphs (generated or read), checked against the configured sizes and categories."""
        if self.path:
            graphs = read_graphs(self.path)
            sources = [f"{self.path} graph {i}" for i in range(len(graphs))]
        else:
            if self.dataset == "community_small":
                gs = generate_community_small(self.num_graphs, self.seed)
            elif self.dataset == "sbm":
                gs = generate_sbm(self.num_graphs, self.seed, self.sbm_block_sizes)
            elif self.dataset == "planar":
                gs = generate_planar(self.num_graphs, self.seed, self.planar_nodes)
            else:
                raise PolydiffError(f"--data.dataset {self.dataset!r} is unknown; choose community_small, sbm or planar")
            graphs = [nx_to_data(g, self.dataset) for g in gs]
            sources = [f"{self.dataset} graph {i}" for i in range(len(graphs))]
        for d, src in zip(graphs, sources):
            if d.num_nodes > self.max_nodes:
                raise PolydiffError(f"{src} has {d.num_nodes} nodes, more than --data.max_nodes={self.max_nodes}; raise "
                                    "--data.max_nodes and --model.max_nodes (memory grows with its square) or remove "
                                    "the graph")
            if d.x.numel() and int(d.x.max()) >= self.num_node_types:
                raise PolydiffError(f"{src} has node type {int(d.x.max())} but --data.num_node_types="
                                    f"{self.num_node_types}; raise it (and --model.num_node_types)")
            if d.edge_attr.numel() and int(d.edge_attr.max()) >= self.num_edge_types:
                raise PolydiffError(f"{src} has edge type {int(d.edge_attr.max())} but --data.num_edge_types="
                                    f"{self.num_edge_types} (including 'no edge'); raise it (and --model.num_edge_types)")
        return graphs

    def setup(self, stage: Optional[str] = None) -> None:
        if self.graphs is not None:
            return
        self.graphs = self.load_graphs()
        tr, va, te = split_indices(len(self.graphs), self.seed, self.test_fraction, self.val_fraction)
        self.train_set = [self.graphs[i] for i in tr]
        self.val_set = [self.graphs[i] for i in va]
        self.test_set = [self.graphs[i] for i in te]

    # statistics the model stores in its checkpoint
    def node_count_histogram(self) -> torch.Tensor:
        self.setup()
        return node_count_histogram(self.train_set, self.max_nodes)

    def marginals(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.setup()
        return category_marginals(self.train_set, self.num_node_types, self.num_edge_types)

    def split_graphs(self, split: str) -> list[nx.Graph]:
        """The graphs of ``train``, ``val`` or ``test`` as networkx graphs (``type`` attributes on nodes and edges)."""
        self.setup()
        sets = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
        if split not in sets:
            raise PolydiffError(f"unknown split {split!r}; choose one of {list(sets)}")
        return [data_to_nx(d) for d in sets[split]]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.train_set, batch_size=self.batch_size, num_workers=self.num_workers,
                          sampler=self.train_sampler(len(self.train_set), training_seed()),
                          drop_last=len(self.train_set) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        # one batch: the whole test set is compared with one set of generated graphs in on_test_epoch_end (the loader
        # only feeds the variational bound, summed over processes under DDP)
        return DataLoader(self.test_set, batch_size=max(1, len(self.test_set)), num_workers=self.num_workers,
                          sampler=evaluation_sampler(self.test_set))

    def predict_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.test_set, batch_size=max(1, len(self.test_set)), num_workers=self.num_workers)


__all__ = [
    "GraphDataModule",
    "category_marginals",
    "check_data",
    "data_to_nx",
    "generate_community_small",
    "generate_planar",
    "generate_sbm",
    "node_count_histogram",
    "nx_to_data",
    "read_graphs",
]
