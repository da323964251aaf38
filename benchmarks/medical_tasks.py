"""Measure the medical recipes from their checkpoints: each figure next to its controls, written to
docs/benchmarks/medical.md (one section per task).

    python benchmarks/medical_tasks.py \
        --synthesis2d runs/medical/synthesis2d/lightning_logs/version_0/checkpoints/last.ckpt \
        --sr2d <ckpt> --sr3d <ckpt> --synthesis3d <ckpt> --inpaint2d <synthesis2d or inpaint2d ckpt>

Every checkpoint's DataModule is rebuilt from the ``config.yaml`` that ``polydiff fit`` wrote next to it, so the held-out
items are those of the run. Synthesis: MMD² (RBF, one median bandwidth per table) of ``--num_samples`` samples to the
held-out items, for ``--seeds`` seeds, next to the PCA-Gaussian and pixelwise-Gaussian controls (same seeds) and the
training items (the floor). Super-resolution: PSNR / SSIM on all held-out items against linear (bi-/trilinear),
bicubic (2D) and linear projected onto the measurement. Inpainting: error inside the central box against a harmonic
fill and the mean fill. Each section ends with the command that reproduces it; run with one thread
(``OMP_NUM_THREADS=1``) as measured here.
"""

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _doc import provenance, write_section  # noqa: E402

DOC = ROOT / "docs" / "benchmarks" / "medical.md"


def load(ckpt: str, task: str | None = None):
    """The model (EMA weights) and its run's DataModule, set up."""
    from polydiff.domains.medical import MedicalDiffusion

    model = MedicalDiffusion.load_from_checkpoint(ckpt, map_location="cpu")
    model.eval()
    if task is not None:
        model.task = task
    config = Path(ckpt).parents[1] / "config.yaml"
    data = yaml.safe_load(config.read_text())["data"]
    module, name = data["class_path"].rsplit(".", 1)
    dm = getattr(importlib.import_module(module), name)(**data.get("init_args", {}))
    dm.setup("test")
    return model, dm


def training_time(ckpt: str) -> str:
    """Wall time from the run's start (its hparams.yaml) to the checkpoint, and the step count."""
    run = Path(ckpt).parents[1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    seconds = Path(ckpt).stat().st_mtime - (run / "hparams.yaml").stat().st_mtime
    return f"{state.get('global_step', '?')} steps, {seconds / 60:.1f} min of wall time"


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def mmd_rows(model, real: torch.Tensor, train: torch.Tensor, num_samples: int, seeds: int) -> tuple[dict, float, float]:
    """MMD² rows (model, controls, training items) against ``real`` under one bandwidth; seconds of sampling per seed."""
    from polydiff.domains.medical import controls, metrics

    g = torch.Generator().manual_seed(0)
    subset = train[torch.randperm(len(train), generator=g)[:num_samples]]
    h = metrics.median_bandwidth(subset, real)
    rows = {"model": [], "PCA-Gaussian (10 components)": [], "pixelwise Gaussian": []}
    t0 = time.time()
    for seed in range(seeds):
        rows["model"].append(metrics.mmd2(model.sample_items(num_samples, seed=1000 * seed), real, h))
        rows["PCA-Gaussian (10 components)"].append(
            metrics.mmd2(controls.pca_gaussian(train, num_samples, model.pca_components, seed), real, h))
        rows["pixelwise Gaussian"].append(metrics.mmd2(controls.pixelwise_gaussian(train, num_samples, seed), real, h))
    rows[f"training items ({len(subset)}, the floor)"] = [metrics.mmd2(subset, real, h)]
    return rows, h, (time.time() - t0) / seeds


def mmd_table(rows: dict, reference: str) -> list[str]:
    lines = [f"| samples | MMD² to {reference} (mean ± sd over seeds) |", "|---|---|"]
    lines += [f"| {name} | {spread(v)} |" for name, v in rows.items()]
    model_mean = statistics.mean(rows["model"])
    for name in ("PCA-Gaussian (10 components)", "pixelwise Gaussian"):
        control = statistics.mean(rows[name])
        lines += ["", f"Model vs {name}: {model_mean:.4f} vs {control:.4f} -> "
                  f"{'model better' if model_mean < control else 'MODEL NOT BETTER'}."]
    return lines


def synthesis(label: str, ckpt: str, num_samples: int, seeds: int, command: str) -> str:
    model, dm = load(ckpt)
    real, train = dm.split_tensor("test"), dm.split_tensor("train")
    num_samples = num_samples or model.eval_num_samples
    rows, h, sampling = mmd_rows(model, real, train, num_samples, seeds)
    cfg = model.sampler_config
    lines = [f"## {label}", "", provenance(), "",
             f"Checkpoint `{ckpt}` ({training_time(ckpt)}); {len(train)} training and {len(real)} held-out items of "
             f"{tuple(real.shape[2:])} voxels; {num_samples} samples per seed, {seeds} seeds, {cfg.name} with "
             f"{cfg.steps} steps ({sampling:.0f} s per seed); RBF bandwidth h = {h:.2f} (2 h² = median squared distance "
             "of training and held-out items), MMD² as the V-statistic (as the issue's reference figures).", ""]
    lines += mmd_table(rows, "held-out items")
    if hasattr(dm, "random_crops"):
        fresh = dm.random_crops(128, seed=12345)
        rows, h, _ = mmd_rows(model, fresh, train, num_samples, seeds)
        lines += ["", f"The held-out slab is anatomy no training crop saw: the training items themselves are far from it "
                  f"(floor row). Against {len(fresh)} fresh random crops of the training region (the training "
                  f"distribution; they overlap training voxels, as the 2D held-out slices neighbour training slices), "
                  f"h = {h:.2f}:", ""]
        lines += mmd_table(rows, "fresh training-region crops")
    return "\n".join(lines + ["", f"Reproduce: `{command}`"])


def super_resolution(label: str, ckpt: str, command: str) -> str:
    from polydiff.domains.medical import evaluation

    model, dm = load(ckpt)
    real = dm.split_tensor("test")
    t0 = time.time()
    table = evaluation.super_resolution_table(model, real)
    seconds = time.time() - t0
    cfg = model.sampler_config
    lines = [f"## {label}", "", provenance(), "",
             f"Checkpoint `{ckpt}` ({training_time(ckpt)}); all {len(real)} held-out items of {tuple(real.shape[2:])} "
             f"voxels, block-averaged x{model.sr_factor} per axis and super-resolved once ({cfg.name}, {cfg.steps} "
             f"steps, {seconds:.0f} s); PSNR / SSIM on intensities scaled to [0, 1].", "",
             "| method | PSNR (dB) | SSIM |", "|---|---|---|",
             f"| diffusion (SR3, residual, projected) | {table['psnr']:.2f} | {table['ssim']:.4f} |",
             f"| {'bilinear' if real.ndim == 4 else 'trilinear'} | {table['psnr_linear']:.2f} | "
             f"{table['ssim_linear']:.4f} |",
             f"| linear projected onto the input | {table['psnr_linear_consistent']:.2f} | "
             f"{table['ssim_linear_consistent']:.4f} |"]
    if "psnr_bicubic" in table:
        lines.append(f"| bicubic | {table['psnr_bicubic']:.2f} | {table['ssim_bicubic']:.4f} |")
    better = table["psnr"] > table["psnr_linear"] and table["ssim"] > table["ssim_linear"]
    lines += ["", f"Diffusion vs linear interpolation: PSNR {table['psnr']:.2f} vs {table['psnr_linear']:.2f}, SSIM "
              f"{table['ssim']:.4f} vs {table['ssim_linear']:.4f} -> {'both better' if better else 'NOT BOTH BETTER'}."]
    return "\n".join(lines + ["", f"Reproduce: `{command}`"])


def inpainting(label: str, ckpt: str, command: str) -> str:
    from polydiff.domains.medical import evaluation

    model, dm = load(ckpt, task="inpainting")
    real = dm.split_tensor("test")
    t0 = time.time()
    table = evaluation.inpainting_table(model, real)
    seconds = time.time() - t0
    lines = [f"## {label}", "", provenance(), "",
             f"Checkpoint `{ckpt}` ({training_time(ckpt)}); all {len(real)} held-out items, a central box of "
             f"{model.inpaint_fraction:.0%} of each side filled by RePaint ({model.inpaint_steps} steps x "
             f"{model.inpaint_resample} resampling rounds, {seconds:.0f} s); errors inside the box, in [-1, 1] units.", "",
             "| fill | MAE | RMSE |", "|---|---|---|"]
    for key, name in (("repaint", "RePaint (diffusion)"), ("harmonic_fill", "harmonic (smoothing) fill"),
                      ("mean_fill", "mean of the known voxels")):
        lines.append(f"| {name} | {table[f'mae_{key}']:.4f} | {table[f'rmse_{key}']:.4f} |")
    return "\n".join(lines + ["", f"Reproduce: `{command}`"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthesis2d", help="checkpoint of recipes/medical/synthesis2d.yaml")
    ap.add_argument("--synthesis3d", help="checkpoint of recipes/medical/synthesis3d.yaml")
    ap.add_argument("--sr2d", help="checkpoint of recipes/medical/sr2d.yaml")
    ap.add_argument("--sr3d", help="checkpoint of recipes/medical/sr3d.yaml")
    ap.add_argument("--inpaint2d", help="checkpoint of recipes/medical/inpaint2d.yaml or synthesis2d.yaml")
    ap.add_argument("--num_samples", type=int, default=None,
                    help="synthesis: samples per seed (default: the model's eval_num_samples)")
    ap.add_argument("--seeds", type=int, default=3, help="synthesis: seeds of the samples and controls")
    ap.add_argument("--variant", default="", help="a name for a second section of the same task (e.g. another split)")
    ap.add_argument("--doc", default=str(DOC))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [("synthesis2d", "2D synthesis (axial MNI T1 slices, 4 mm, 48 x 56)", synthesis),
            ("synthesis3d", "3D synthesis (16^3 crops of MNI T1 at 3 mm)", synthesis),
            ("sr2d", "2D super-resolution x2 (axial slices, 8 mm -> 4 mm in-plane)", super_resolution),
            ("sr3d", "3D super-resolution x2 (16^3 crops, 4 mm -> 2 mm)", super_resolution),
            ("inpaint2d", "2D inpainting (RePaint, central box of held-out slices)", inpainting)]
    for key, label, fn in jobs:
        ckpt = getattr(args, key)
        if not ckpt:
            continue
        if args.variant:
            label = f"{label}, {args.variant}"
        command = (f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/medical_tasks.py --{key} {ckpt}"
                   + (f" --variant '{args.variant}'" if args.variant else "")
                   + (f" --seeds {args.seeds}" if fn is synthesis else "")
                   + (f" --num_samples {args.num_samples}" if fn is synthesis and args.num_samples else ""))
        text = fn(label, ckpt, args.num_samples, args.seeds, command) if fn is synthesis else fn(label, ckpt, command)
        section = f"medical-{key}" + ("-" + "".join(c if c.isalnum() else "-" for c in args.variant) if args.variant else "")
        write_section(args.doc, section, text, title="# Medical benchmarks")
        print(text, "\n", flush=True)


if __name__ == "__main__":
    main()
