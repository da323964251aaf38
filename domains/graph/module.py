"""DiGress-style graph generation (Vignac et al. 2023) on the core's categorical diffusion.

Two categorical variables are diffused with the *marginal* transition ``Q_t = a_t I + (1 - a_t) 1 m^T`` of
:mod:`polydiff.core.discrete` (DiGress Sec. 4.1): node categories ``[B, n]`` and edge categories ``[B, n, n]``
(0 = no edge), each towards its training frequencies ``m``. Edges of undirected graphs are noised on the upper triangle
and mirrored (:meth:`GraphDiffusionModule.constrain`), so every noisy and every sampled graph is symmetric without
self-loops. The loss weighs edges by ``edge_weight`` (DiGress: 5). The denoiser is a permutation-equivariant graph
transformer with structural features of the noisy graph (:mod:`.transformer`, :mod:`.features`). The number of nodes of
a sample is drawn from the training graphs' node-count histogram (a buffer, so checkpoints carry it, as the marginals).

``polydiff test`` reports the bound (bits per node / pair) and, from graphs sampled with the model's sampler, the MMDs of
degree, clustering, Laplacian spectrum and 4-node orbit distributions against the test graphs and V.U.N.; beside them the
same metrics of density-matched Erdős–Rényi graphs (``er_*``, a control the model must beat) and of the training graphs
(``train_*``, the floor).
"""

from pathlib import Path
from typing import Any, Literal, Optional

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.utils import to_dense_adj, to_dense_batch

from polydiff.core.base import TrainingConfig, require_data
from polydiff.core.discrete import CategoricalBatch, CategoricalConfig, CategoricalSamplerConfig, DiscreteDiffusionModule
from polydiff.core.utils import PolydiffError
from polydiff.domains.graph.api import GraphSamplingAPI
from polydiff.domains.graph.controls import erdos_renyi_control
from polydiff.domains.graph.data import GraphData
from polydiff.domains.graph.io import draw_grid, write_graphml
from polydiff.domains.graph.metrics import evaluate
from polydiff.domains.graph.transformer import GraphTransformer

#: the DataModules that fit this model (named in the error when another is given)
USE_DATA = "polydiff.datasets.graphs.GraphDataModule"


class GraphDiffusionModule(GraphSamplingAPI, DiscreteDiffusionModule):
    """Discrete (DiGress-style) diffusion over node and edge categories of undirected graphs.

    Args:
        max_nodes: largest graph the model generates (the node-count histogram has max_nodes + 1 bins).
        num_node_types: node categories (1 for plain graphs).
        num_edge_types: edge categories including "no edge" (2 for plain graphs).
        hidden_nodes: node width of the graph transformer (divisible by heads).
        hidden_edges: edge width of the graph transformer.
        hidden_graph: graph-feature width of the graph transformer.
        heads: attention heads.
        layers: transformer layers.
        k_eigenvalues: first non-zero Laplacian eigenvalues of the noisy graph given to the network.
        dropout: dropout inside the transformer layers.
        edge_weight: weight of the edge terms in the loss (DiGress: 5).
        validity: what a valid generated graph is: planar (connected and planar, for planar data), sbm (SPECTRE's
            block-model test, for the SBM data), connected, or none.
        mmd_kernel: histogram kernel of the degree / clustering MMDs: emd (GraphRNN, GDSS) or tv (SPECTRE, DiGress).
        orbits: also report the 4-node orbit MMD (O(n^4) per graph, fine up to ~64 nodes).
        num_eval_samples: graphs sampled by ``polydiff test`` (0: as many as there are test graphs).
        eval_batch_size: graphs sampled at once.
        diffusion: the categorical process (marginal transition, schedule, steps T) and the loss.
        sampler: default sampler (ancestral, steps <= T) for ``polydiff test`` and ``polydiff sample``.
        training: optimiser settings.
    """

    domain = "graph"

    def __init__(
        self,
        max_nodes: int = 64,
        num_node_types: int = 1,
        num_edge_types: int = 2,
        hidden_nodes: int = 64,
        hidden_edges: int = 32,
        hidden_graph: int = 64,
        heads: int = 4,
        layers: int = 4,
        k_eigenvalues: int = 5,
        dropout: float = 0.0,
        edge_weight: float = 5.0,
        validity: Literal["planar", "sbm", "connected", "none"] = "none",
        mmd_kernel: Literal["emd", "tv"] = "emd",
        orbits: bool = True,
        num_eval_samples: int = 0,
        eval_batch_size: int = 64,
        diffusion: CategoricalConfig = CategoricalConfig(transition="marginal", schedule="cosine", steps=500,
                                                         ce_weight=1.0, bound_times=20),
        sampler: CategoricalSamplerConfig = CategoricalSamplerConfig(name="ancestral", steps=500),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        super().__init__(diffusion, sampler, training)
        if diffusion.transition == "absorbing":
            raise PolydiffError("--model.diffusion.transition absorbing is not supported for graphs (it needs a [MASK] "
                                "category for nodes and edges); use marginal (DiGress) or uniform")
        if num_edge_types < 2:
            raise PolydiffError(f"--model.num_edge_types must be >= 2 ('no edge' and at least one edge type), got "
                                f"{num_edge_types}")
        if num_node_types < 1:
            raise PolydiffError(f"--model.num_node_types must be >= 1, got {num_node_types}")
        self.max_nodes = max_nodes
        self.num_node_types = num_node_types
        self.num_edge_types = num_edge_types
        self.edge_weight = edge_weight
        self.validity = validity
        self.mmd_kernel = mmd_kernel
        self.orbits = orbits
        self.num_eval_samples = num_eval_samples
        self.eval_batch_size = eval_batch_size
        # node categories of plain graphs: one category; the core's processes need >= 2, so a spare one is kept
        self.node_categories = max(2, num_node_types)
        self.network = GraphTransformer(self.node_categories, num_edge_types, max_nodes, hidden_nodes, hidden_edges,
                                        hidden_graph, heads, layers, k_eigenvalues, dropout)
        self.set_variables([self.node_categories, num_edge_types], marginals=self._placeholder_marginals(),
                           weights=[1.0, edge_weight])
        counts = torch.zeros(max_nodes + 1)
        counts[max_nodes] = 1.0
        self.register_buffer("node_counts", counts)
        self.save_hyperparameters()

    def _placeholder_marginals(self) -> list[Tensor]:
        node = torch.zeros(self.node_categories, dtype=torch.float64)
        node[: self.num_node_types] = 1.0 / self.num_node_types
        edge = torch.full((self.num_edge_types,), 1.0 / self.num_edge_types, dtype=torch.float64)
        return [node, edge]

    # ------------------------------------------------------------------ data statistics
    def set_data_statistics(self, node_counts: Tensor, node_marginal: Tensor, edge_marginal: Tensor) -> None:
        """Store the node-count histogram and category frequencies of the training graphs (prior of the sampler)."""
        if node_counts.numel() > self.max_nodes + 1 and node_counts[self.max_nodes + 1:].sum() > 0:
            raise PolydiffError(f"training graphs have up to {int(node_counts.nonzero().max())} nodes but "
                                f"--model.max_nodes={self.max_nodes}; raise --model.max_nodes")
        counts = torch.zeros(self.max_nodes + 1)
        k = min(node_counts.numel(), self.max_nodes + 1)
        counts[:k] = node_counts[:k].float()
        if counts.sum() <= 0:
            raise PolydiffError("no training graphs: the node-count histogram is empty")
        self.node_counts.data = counts.to(self.node_counts.device)
        node = torch.zeros(self.node_categories, dtype=torch.float64)
        node[: node_marginal.numel()] = node_marginal.double()
        # a category the data never takes would make the prior degenerate only for that category; that is fine
        self.set_variables([self.node_categories, self.num_edge_types], marginals=[node, edge_marginal.double()],
                           weights=[1.0, self.edge_weight])

    def connect_data(self, datamodule: Any) -> None:
        """Check the data's sizes and types against the model's; at fit, store the training graphs' statistics."""
        dm = require_data(datamodule, GraphData, "graph", USE_DATA)
        if dm.max_nodes > self.max_nodes:
            raise PolydiffError(f"--data.max_nodes={dm.max_nodes} exceeds --model.max_nodes={self.max_nodes}; set them "
                                "equal")
        if dm.num_node_types > self.num_node_types or dm.num_edge_types != self.num_edge_types:
            raise PolydiffError(f"data has {dm.num_node_types} node / {dm.num_edge_types} edge types but the model "
                                f"{self.num_node_types} / {self.num_edge_types}; set --model.num_node_types / "
                                "--model.num_edge_types like --data.*")
        if self.trainer.state.fn == "fit":
            node_m, edge_m = dm.marginals()
            self.set_data_statistics(dm.node_count_histogram(), node_m, edge_m)

    # ------------------------------------------------------------------ hooks of the categorical core
    def encode(self, batch: Any) -> CategoricalBatch:
        """torch-geometric ``Batch`` -> dense node categories ``[B, n]``, edge categories ``[B, n, n]`` and masks (edges
        count once per unordered pair: the upper triangle)."""
        if batch.num_nodes == 0:
            raise PolydiffError("empty batch of graphs")
        nodes, node_mask = to_dense_batch(batch.x, batch.batch)
        n = nodes.shape[1]
        if n > self.max_nodes:
            raise PolydiffError(f"a graph has {n} nodes, more than --model.max_nodes={self.max_nodes}")
        edges = to_dense_adj(batch.edge_index, batch.batch, batch.edge_attr, max_num_nodes=n).long()
        pair = node_mask.unsqueeze(1) & node_mask.unsqueeze(2)
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=nodes.device), 1)
        return CategoricalBatch(x0=(nodes.long(), edges), mask=(node_mask.float(), (pair & upper).float()),
                                cond=node_mask.float())

    def x0_logits(self, xs: tuple[Tensor, ...], time: Tensor, cond: Any) -> tuple[Tensor, ...]:
        nodes, edges = xs
        x_logits, e_logits = self.network(nodes, edges, time, cond)
        if self.node_categories > self.num_node_types:  # the spare category of plain graphs is never data
            x_logits = x_logits.clone()
            x_logits[..., self.num_node_types:] = -1e4
        return x_logits, e_logits

    def constrain(self, xs: tuple[Tensor, ...], mask: tuple[Optional[Tensor], ...]) -> tuple[Tensor, ...]:
        """Symmetric edges (upper triangle mirrored), no self-loops, padding nodes and their pairs reset to category 0."""
        nodes, edges = xs
        upper = torch.triu(edges, 1)
        edges = upper + upper.transpose(1, 2)
        node_mask = mask[0] if mask is not None and len(mask) > 0 else None
        if node_mask is not None:
            nm = node_mask.to(nodes.device).long()
            nodes = nodes * nm
            edges = edges * nm.unsqueeze(1) * nm.unsqueeze(2)
        return nodes, edges

    def select_condition(self, cond: Any, index: Tensor) -> Any:
        return cond[index.to(cond.device)]

    # ------------------------------------------------------------------ sampling (the Python API is api.py)

    def predict_step(self, batch: Any, batch_idx: int) -> list[nx.Graph]:
        """``polydiff predict``: one unconditional sample (networkx) per graph of the batch (the graphs only set the
        count); the seed differs per batch and per process."""
        return self.sample_graphs(int(batch.num_graphs), seed=batch_idx * self.trainer.world_size + self.global_rank)

    def write_predictions(self, prediction: list[nx.Graph], batch: Any, out_dir: Path, prefix: str) -> list[Path]:
        """``polydiff predict``: one GraphML file per generated graph, ``<prefix>_0003.graphml``."""
        return write_graphml(prediction, out_dir, prefix)

    def write_samples(self, out_dir: Path, num_samples: int, sampler: CategoricalSamplerConfig, seed: int,
                      input: Optional[str] = None) -> list[Path]:
        """One GraphML file per generated graph and ``graphs.png`` (a grid of the first 36)."""
        if input is not None:
            raise PolydiffError("graph generation takes no --input; drop it")
        graphs = self.sample_graphs(num_samples, sampler, seed, progress=True)
        paths = write_graphml(graphs, out_dir)
        paths.append(draw_grid(graphs, out_dir / "graphs.png", title=f"{len(graphs)} generated graphs"))
        return paths

    # ------------------------------------------------------------------ evaluation
    def evaluation_sets(self) -> tuple[list[nx.Graph], list[nx.Graph]]:
        dm = require_data(self.trainer.datamodule, GraphData, "graph", USE_DATA)
        return dm.split_graphs("test"), dm.split_graphs("train")

    def test_metrics(self) -> dict[str, float]:
        """MMDs and V.U.N. of sampled graphs, the Erdős–Rényi control (``er_*``) and the training graphs (``train_*``)."""
        test, train = self.evaluation_sets()
        num = self.num_eval_samples or len(test)
        gen = self.sample_graphs(num, self.sampler_config, seed=0)
        sizes = self.sample_node_counts(num, torch.Generator().manual_seed(1)).tolist()
        er = erdos_renyi_control(train, sizes, seed=1)
        kw = dict(validity=self.validity, kernel=self.mmd_kernel, orbits=self.orbits)
        out = dict(evaluate(gen, test, train, **kw))
        out.update({f"er_{k}": v for k, v in evaluate(er, test, train, **kw).items()})
        out.update({f"train_{k}": v for k, v in evaluate(train, test, train, **kw).items()})
        # log_dir is a broadcast under DDP: every rank asks, rank 0 writes
        run_dir = self.run_dir() if self._trainer is not None else None
        if run_dir is not None and self.trainer.is_global_zero:
            picture = draw_grid(gen, run_dir / "test_samples.png", title=f"{len(gen)} sampled graphs")
            self.log_media("test/samples", image=png_tensor(picture))
            write_graphml(gen, run_dir / "test_samples")
        out["num_generated"] = float(len(gen))
        out["mean_nodes"] = float(np.mean([g.number_of_nodes() for g in gen]))
        out["mean_edges"] = float(np.mean([g.number_of_edges() for g in gen]))
        out["test_mean_edges"] = float(np.mean([g.number_of_edges() for g in test]))
        return out


def png_tensor(path: Path) -> Tensor:
    """A PNG as ``[3, H, W]`` in [0, 1] (for loggers that show images)."""
    from PIL import Image

    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
