"""Graph generation benchmark: the trained DiGress-style models against the Erdős–Rényi control and the training floor.

For each recipe with a checkpoint, runs ``polydiff test`` (which samples graphs with the recipe's sampler and evaluates
them, density-matched Erdős–Rényi graphs and the training graphs against the held-out test graphs), then writes the
markdown section ``docs/benchmarks/graph.md`` and prints the command that reproduces it.

    python benchmarks/graph_generation.py \\
        --community_small runs/graph/community_small/lightning_logs/version_0/checkpoints/last.ckpt \\
        --planar runs/graph/planar/lightning_logs/version_0/checkpoints/last.ckpt

Train the checkpoints first with ``polydiff fit --config recipes/graph/<recipe>.yaml`` (times in the recipes' headers).
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
MMDS = [("degree_mmd", "degree"), ("clustering_mmd", "clustering"), ("spectrum_mmd", "spectrum"), ("orbit_mmd", "orbits")]


def recipe_model_args(recipe: str) -> dict:
    return yaml.safe_load((ROOT / "recipes" / "graph" / f"{recipe}.yaml").read_text())["model"]["init_args"]


def recipe_sampler(recipe: str) -> dict:
    """The recipe's sampler settings (a checkpoint stores the sampler it was trained with; the benchmark uses the
    recipe's)."""
    return recipe_model_args(recipe)["sampler"]


def run_test(recipe: str, ckpt: str, out: Path) -> dict:
    from polydiff.core.cli import main

    out.mkdir(parents=True, exist_ok=True)
    sampler = recipe_sampler(recipe)
    # the recipe's sampler and validity test, not the ones stored in the checkpoint
    main(["test", "--config", str(ROOT / "recipes" / "graph" / f"{recipe}.yaml"), "--ckpt_path", ckpt,
          "--model.sampler.name", str(sampler["name"]), "--model.sampler.steps", str(sampler["steps"]),
          "--model.validity", str(recipe_model_args(recipe).get("validity", "none")),
          "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false"])
    found = sorted(out.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"polydiff test wrote no metrics.json under {out}")
    return json.loads(found[-1].read_text())["metrics"]


def checkpoint_info(ckpt: str, sampler: dict) -> str:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp = state.get("hyper_parameters", {})
    params = sum(v.numel() for k, v in state["state_dict"].items() if k.startswith("network."))
    width = "/".join(str(hp.get(k, "?")) for k in ("hidden_nodes", "hidden_edges", "hidden_graph"))
    return (f"{state.get('global_step', '?')} optimiser steps ({state.get('epoch', '?')} epochs) of a "
            f"{params / 1e3:.0f} K-parameter graph transformer ({hp.get('layers', '?')} layers, widths {width}), "
            f"sampled with the {sampler.get('name', '?')} sampler in {sampler.get('steps', '?')} steps")


def fmt(v: float) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else str(v)


def section(name: str, recipe: str, m: dict, info: str, seconds: float) -> str:
    lines = [f"### {name}", "", f"Measured {datetime.date.today().isoformat()}. Checkpoint: {info}; `polydiff test` took "
             f"{seconds / 60:.1f} min "
             f"({int(m.get('num_generated', 0))} sampled graphs, {m.get('mean_nodes', float('nan')):.1f} nodes and "
             f"{m.get('mean_edges', float('nan')):.1f} edges on average; test graphs: "
             f"{m.get('test_mean_edges', float('nan')):.1f} edges).", "",
             "| MMD² (lower is better) | model | Erdős–Rényi control | training graphs (floor) | model < control |",
             "|---|---|---|---|---|"]
    for key, label in MMDS:
        if key in m:
            lines.append(f"| {label} | {fmt(m[key])} | {fmt(m['er_' + key])} | {fmt(m['train_' + key])} | "
                         f"{'yes' if m[key] < m['er_' + key] else '**no**'} |")
    lines += ["", "| fraction | model | Erdős–Rényi control | training graphs |", "|---|---|---|---|"]
    for key in ("valid", "unique", "novel", "vun"):
        lines.append(f"| {key if key != 'vun' else 'V.U.N.'} | {fmt(m[key])} | {fmt(m['er_' + key])} | "
                     f"{fmt(m['train_' + key])} |")
    lines += ["", f"Bound on the test graphs: {m.get('bound_bits_per_position', float('nan')):.4f} bits per node / "
              "node pair.", ""]
    return "\n".join(lines)


def _commands(header: str) -> list[str]:
    """The lines of the first fenced block of ``header`` (the reproduce commands)."""
    parts = header.split("```")
    return [line for line in parts[1].strip("\n").splitlines() if line.strip()] if len(parts) >= 3 else []


def merge(old: str, header: str, parts: list[str], command: str) -> tuple[str, list[str]]:
    """The new header (today's date) with the old document's reproduce commands kept before ``command``, and the old
    document's ``### `` sections with those of ``parts`` replaced (same title) or added before any hand-written notes."""
    chunks = old.split("\n### ")
    old_parts = ["### " + c for c in chunks[1:]]
    title = lambda part: part.split("\n", 1)[0]  # noqa: E731
    new = {title(p): p for p in parts}
    kept = [new.pop(title(p), p) for p in old_parts]
    notes = [p for p in kept if title(p).startswith("### Notes")]
    merged = [p for p in kept if p not in notes] + list(new.values()) + notes
    commands = [c for c in _commands(chunks[0]) if c != command] + [command]
    fences = header.split("```")
    if len(fences) >= 3:
        fences[1] = "\n" + "\n".join(commands) + "\n"
        header = "```".join(fences)
    return header, [p.rstrip("\n") + "\n" for p in merged]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--community_small", help="checkpoint of recipes/graph/community_small.yaml")
    parser.add_argument("--planar", help="checkpoint of recipes/graph/planar.yaml")
    parser.add_argument("--sbm", help="checkpoint of recipes/graph/sbm.yaml")
    parser.add_argument("--out", default="benchmarks/out/graph", help="folder for the test runs")
    parser.add_argument("--doc", default="docs/benchmarks/graph.md", help="markdown file to write")
    parser.add_argument("--merge", action="store_true",
                        help="keep the doc's other sections (and its reproduce commands); replace or add only the "
                             "sections of the checkpoints given")
    args = parser.parse_args()
    torch.set_num_threads(1)
    command = "python benchmarks/graph_generation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    names = {"community_small": "Community-small (12-20 nodes, 100 graphs; GraphRNN kernels: EMD for degree and "
                                "clustering)",
             "planar": "Planar (Delaunay, 32 nodes, 200 graphs; SPECTRE / DiGress kernels: TV); validity = connected "
                       "and planar",
             "sbm": "Stochastic block model (2-4 blocks of 8-16 nodes, 200 graphs; TV kernels); validity = SPECTRE's "
                    "block-model test (Louvain blocks)"}
    parts = []
    for recipe in ("community_small", "planar", "sbm"):
        ckpt = getattr(args, recipe)
        if not ckpt:
            continue
        start = time.time()
        m = run_test(recipe, ckpt, Path(args.out) / recipe)
        parts.append(section(names[recipe], recipe, m, checkpoint_info(ckpt, recipe_sampler(recipe)),
                             time.time() - start))
    if not parts:
        parser.error("give at least one checkpoint")
    header = f"""## Graph generation (DiGress-style discrete diffusion)

Last updated {datetime.date.today().isoformat()} (each section gives its own date) on {platform.machine()} CPU
({os.cpu_count()} cores shared with other jobs, no GPU), polydiff's graph domain: marginal categorical diffusion of
node and edge types (T = 500, cosine), a graph transformer with cycle and spectral features of the noisy graph
(sizes and sampler below, per recipe). MMD² is the biased estimate of GraphRNN's evaluation between the sampled
graphs and the held-out test
graphs (orbit counts: ORCA's 15 orbits on up to 4 nodes, Gaussian kernel, sigma 30). The Erdős–Rényi control draws
G(n, p) with the training graphs' mean density and node counts from the training histogram; the floor compares the
training graphs themselves with the test graphs (their novelty is 0 by definition). Trained with
`polydiff fit --config recipes/graph/<recipe>.yaml` (budgets in the recipes' headers).

Reproduce (after training):

```
{command}
```
"""
    doc = Path(args.doc)
    if args.merge and doc.is_file():
        header, parts = merge(doc.read_text(), header, parts, command)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(header + "\n" + "\n".join(parts))
    print(f"wrote {args.doc}\nreproduce with:\n  {command}")


if __name__ == "__main__":
    main()
