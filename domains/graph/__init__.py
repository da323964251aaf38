"""Graph generation (DiGress-style discrete diffusion) on torch-geometric.

* :class:`GraphDiffusionModule`: the LightningModule (marginal categorical diffusion of node and edge categories).
* :class:`GraphTransformer`: the permutation-equivariant denoiser; :mod:`.features`: structural features of noisy graphs.
* :mod:`.metrics`: MMD of degree / clustering / spectrum / orbit statistics, V.U.N.
* :mod:`.io`: GraphML and PNG outputs.
"""

from polydiff.domains.graph.api import dense_to_nx
from polydiff.domains.graph.module import GraphDiffusionModule
from polydiff.domains.graph.transformer import GraphTransformer

__all__ = ["GraphDiffusionModule", "GraphTransformer", "dense_to_nx"]
