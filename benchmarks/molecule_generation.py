"""Molecule generation benchmark: the trained 2D (DiGress-style) and 3D (EDM-style) QM9 models beside their controls.

For each recipe with a checkpoint, runs ``polydiff test`` (which samples molecules with the recipe's sampler and
evaluates them, the recipe's control and the held-out QM9 molecules), prints the table with the command that reproduces
it and writes it as a section of ``docs/benchmarks/molecule.md``.

    .venv/bin/python benchmarks/molecule_generation.py \\
        --qm9_2d runs/molecule/qm9_2d/lightning_logs/version_0/checkpoints/last.ckpt \\
        --qm9_3d runs/molecule/qm9_3d/lightning_logs/version_0/checkpoints/last.ckpt

Train the checkpoints first with ``polydiff fit --config recipes/molecule/<recipe>.yaml`` (30 minutes each here).
Add ``--num_samples N`` / ``--steps S`` to change what ``polydiff test`` samples.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _doc import provenance, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks" / "molecule.md"

ROWS_2D = [("valid", "valid (whole molecule)"), ("valid_largest_fragment", "valid (largest fragment, EDM's figure)"),
           ("connected", "connected"), ("valid_connected", "valid and connected"),
           ("unique", "unique (among valid)"), ("novel", "novel (among unique valid)")]
ROWS_3D = [("atom_stable", "atom stability"), ("mol_stable", "molecule stability"),
           ("distance_js", "pairwise-distance JS (lower is better)")] + ROWS_2D


def recipe_sampler_args(recipe: str) -> list[str]:
    """The recipe's sampler as command-line overrides: ``polydiff test`` otherwise takes the sampler stored in the
    checkpoint's hyper-parameters (the one it was trained with), and the benchmark measures the recipe's."""
    sampler = yaml.safe_load((ROOT / "recipes" / "molecule" / f"{recipe}.yaml").read_text())["model"]["init_args"]["sampler"]
    return [a for k, v in sampler.items() for a in (f"--model.sampler.{k}", "null" if v is None else str(v))]


def run_test(recipe: str, ckpt: str, out: Path, extra: list[str]) -> dict:
    from polydiff.core.cli import main

    out.mkdir(parents=True, exist_ok=True)
    main(["test", "--config", str(ROOT / "recipes" / "molecule" / f"{recipe}.yaml"), "--ckpt_path", ckpt,
          "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false",
          *recipe_sampler_args(recipe), *extra])
    found = sorted(out.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"polydiff test wrote no metrics.json under {out}")
    return json.loads(found[-1].read_text())["metrics"]


def checkpoint_info(ckpt: str) -> str:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    params = sum(v.numel() for k, v in state["state_dict"].items() if k.startswith("network."))
    return (f"{state.get('global_step', '?')} optimiser steps ({state.get('epoch', '?')} epochs), "
            f"{params / 1e3:.0f} K network parameters")


def table(rows: list[tuple[str, str]], m: dict, control: str, control_name: str) -> list[str]:
    lines = [f"| metric | model | {control_name} | held-out QM9 molecules |", "|---|---|---|---|"]
    for key, label in rows:
        if key in m:
            lines.append(f"| {label} | {m[key]:.4f} | {m.get(f'{control}_{key}', float('nan')):.4f} | "
                         f"{m.get(f'data_{key}', float('nan')):.4f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qm9_2d", help="checkpoint of recipes/molecule/qm9_2d.yaml")
    parser.add_argument("--qm9_3d", help="checkpoint of recipes/molecule/qm9_3d.yaml")
    parser.add_argument("--num_samples", type=int, default=0, help="molecules sampled (0: the recipe's)")
    parser.add_argument("--steps", type=int, default=0, help="sampler steps (0: the recipe's)")
    parser.add_argument("--out", default="runs/molecule/benchmark", help="where polydiff test writes its runs")
    args = parser.parse_args()
    if not (args.qm9_2d or args.qm9_3d):
        parser.error("give --qm9_2d and/or --qm9_3d checkpoints")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    extra = (["--model.num_eval_samples", str(args.num_samples)] if args.num_samples else []) + \
        (["--model.sampler.steps", str(args.steps)] if args.steps else [])
    for recipe, ckpt, rows, control, control_name in (
            ("qm9_2d", args.qm9_2d, ROWS_2D, "iid", "i.i.d. marginal atoms and bonds (control)"),
            ("qm9_3d", args.qm9_3d, ROWS_3D, "gauss", "Gaussian coordinates, true atom types (control)")):
        if not ckpt:
            continue
        start = time.time()
        m = run_test(recipe, ckpt, Path(args.out) / recipe, extra)
        minutes = (time.time() - start) / 60
        head = (f"### `recipes/molecule/{recipe}.yaml`\n\n{provenance()} Checkpoint: {checkpoint_info(ckpt)}; "
                f"{int(m.get('num_generated', 0))} sampled molecules; `polydiff test` took {minutes:.1f} min.\n")
        text = head + "\n" + "\n".join(table(rows, m, control, control_name)) + "\n"
        print(text)
        write_section(DOC, f"molecule_{recipe}", text, title="# Molecule benchmarks")
    print(f"written to {DOC}")


if __name__ == "__main__":
    main()
