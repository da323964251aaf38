"""What the graph model needs from its DataModule, as a structural type (``polydiff.datasets.graphs.GraphDataModule``
fits); the model checks it in ``connect_data`` and nowhere else reaches into the data."""

from typing import Protocol, runtime_checkable

import networkx as nx
from torch import Tensor


@runtime_checkable
class GraphData(Protocol):
    """Graphs with categorical node and edge types, split into train / val / test."""

    #: largest graph of the data
    max_nodes: int
    #: node categories the data uses (at most the model's)
    num_node_types: int
    #: edge categories including "no edge"
    num_edge_types: int

    def node_count_histogram(self) -> Tensor:
        """Counts of training-graph sizes ``0..max_nodes``."""
        ...

    def marginals(self) -> tuple[Tensor, Tensor]:
        """Node-type and edge-type frequencies of the training graphs."""
        ...

    def split_graphs(self, split: str) -> list[nx.Graph]:
        """The graphs of ``train``, ``val`` or ``test`` as networkx graphs."""
        ...
