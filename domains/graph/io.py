"""Writing generated graphs: one GraphML file per graph and a PNG grid of drawings."""

from pathlib import Path
from typing import Sequence

import networkx as nx


def write_graphml(graphs: Sequence[nx.Graph], out_dir: Path, prefix: str = "graph") -> list[Path]:
    """``out_dir/<prefix>_0000.graphml`` ... (node and edge attribute ``type``: the generated categories)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, g in enumerate(graphs):
        p = out_dir / f"{prefix}_{i:04d}.graphml"
        nx.write_graphml(g, p)
        paths.append(p)
    return paths


def draw_grid(graphs: Sequence[nx.Graph], path: Path, columns: int = 6, title: str | None = None) -> Path:
    """Draw up to 36 graphs in a grid (spring layout, fixed seed) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graphs = list(graphs)[:36]
    cols = max(1, min(columns, len(graphs)))
    rows = max(1, (len(graphs) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, g in zip(axes.flat, graphs):
        pos = nx.spring_layout(g, seed=0)
        types = [int(d.get("type", 0)) for _, d in g.nodes(data=True)]
        nx.draw_networkx(g, pos, ax=ax, node_size=18, with_labels=False, width=0.6, node_color=types,
                         cmap="tab10", vmin=0, vmax=9)
        ax.set_title(f"n={g.number_of_nodes()} m={g.number_of_edges()}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
