"""CLD on digits: SSCS against Euler-Maruyama at equal network evaluations, beside a VP model of the same network and
training time.

    .venv/bin/python benchmarks/image_cld.py --cld runs/image/digits_cld/.../last.ckpt --vp <VP checkpoint>

For the CLD checkpoint (recipes/image/digits_cld.yaml) it draws ``--num_samples`` class-conditional digits (classes 0-9 in
turn, seed 0, the checkpoint's guidance) with SSCS and with Euler-Maruyama at each of ``--steps`` evaluations per
sample and per grid of ``--grids``; for the VP control (recipes/image/digits.yaml trained for the same time) it runs
DDPM's ancestral sampler (the SDE counterpart of Euler-Maruyama) and DPM-Solver++ 2M (``--vp_runs``). Every set is scored by
the evaluator of ``polydiff test`` (:class:`polydiff.domains.image.metrics.ImageEvaluator`: classifier-feature Fréchet
distance against the test split with its floor, train vs test, and ceiling, noise vs test; class accuracy). Writes the
"cld" section of docs/benchmarks/cld.md and prints the command that reproduces it.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _doc import command_line, provenance, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cld", required=True, help="checkpoint of recipes/image/digits_cld.yaml")
    p.add_argument("--vp", action="append", required=True,
                   help="checkpoint of the VP-cosine digits recipe trained for the same time (repeatable: more controls)")
    p.add_argument("--steps", default="20,50", help="network evaluations per sample (before guidance's factor 2)")
    p.add_argument("--grids", default="uniform_logsnr", help="CLD time grids, comma-separated (uniform_logsnr, uniform_t)")
    p.add_argument("--vp_runs", default="ddpm:20,ddpm:50,dpmpp_2m:20,dpmpp_2m:50",
                   help="sampler:steps pairs of the VP control, comma-separated")
    p.add_argument("--cld_runs", default="",
                   help="explicit sampler:grid:steps triples of the CLD checkpoint, comma-separated (replaces the "
                        "product of --grids and --steps; e.g. a many-step reference run)")
    p.add_argument("--reference", default="",
                   help="sampler:grid:steps of many-step runs of the CLD checkpoint, comma-separated: the first is the "
                        "converged reference every row is also scored against (FD to reference: the sampler's own "
                        "discretisation error, not the model's), the others check that the samplers agree there")
    p.add_argument("--reference_seed", type=int, default=1000)
    p.add_argument("--seeds", default="0", help="noise seeds, comma-separated; with several, FD is their mean +- sd")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--notes", default="", help="markdown under the table (how the checkpoints were trained)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "cld.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    from polydiff.core import load
    from polydiff.core.samplers import network_evaluations
    from polydiff.datasets.digits import DigitsDataModule
    from polydiff.domains.image.metrics import ImageEvaluator, feature_fd, predict

    dm = DigitsDataModule()
    ev = ImageEvaluator(*dm.split_tensors("train"), *dm.split_tensors("test"), 10)
    steps = [int(s) for s in args.steps.split(",")]
    classes = torch.arange(args.num_samples) % 10
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.cld_runs:
        runs = [(args.cld, r.split(":")[0], r.split(":")[1], int(r.split(":")[2])) for r in args.cld_runs.split(",")]
    else:
        runs = [(args.cld, "cld_sscs", grid, n) for grid in args.grids.split(",") for n in steps]
        runs += [(args.cld, "cld_em", grid, n) for grid in args.grids.split(",") for n in steps]
    vp_runs = [(r.split(":")[0], int(r.split(":")[1])) for r in args.vp_runs.split(",")]
    runs += [(vp, name, None, n) for vp in args.vp for name, n in vp_runs]
    models, rows, trained = {}, [], {}

    def model_of(path: str) -> Any:
        if path not in models:
            models[path] = load(path)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            trained[path] = f"{ckpt.get('global_step')} steps ({ckpt.get('epoch')} epochs)"
        return models[path]

    def draw(model: Any, cfg: Any, seed: int) -> torch.Tensor:
        return model.sample_images(args.num_samples, classes, sampler=cfg, seed=seed) * 2 - 1

    def mean_sd(values: list[float]) -> str:
        v = torch.tensor(values, dtype=torch.float64)
        return f"{v.mean():.1f}" + (f" ± {v.std():.1f} ({', '.join(f'{x:.1f}' for x in values)})" if len(v) > 1 else "")

    ref_feats, ref_rows = None, []
    for r in filter(None, args.reference.split(",")):
        name, grid, n = r.split(":")[0], r.split(":")[1], int(r.split(":")[2])
        model = model_of(args.cld)
        cfg = model.resolve_sampler(name=name, steps=n, grid=grid)
        images = draw(model, cfg, args.reference_seed)
        feats = predict(ev.net, images)[0]
        ref_feats = feats if ref_feats is None else ref_feats
        ref_rows.append(f"| {name} | {grid} | {n} | {ev.fd(images):.1f} | {max(0.0, feature_fd(feats, ref_feats)):.1f} |")
        print(ref_rows[-1], flush=True)
    for path, name, grid, n in runs:
        model = model_of(path)
        cfg = model.resolve_sampler(name=name, steps=n, **({"grid": grid} if grid else {}))
        t0 = time.time()
        sets = [draw(model, cfg, seed) for seed in seeds]
        secs = (time.time() - t0) / len(seeds)
        reports = [ev.report(images, classes) for images in sets]
        to_ref = ""
        if ref_feats is not None:
            to_ref = " | " + (mean_sd([feature_fd(predict(ev.net, images)[0], ref_feats) for images in sets])
                              if path == args.cld else "")
        rel = sum(r["fd_relative"] for r in reports) / len(reports)
        acc = sum(r["class_accuracy"] for r in reports) / len(reports)
        process = model.diffusion_config.process
        nfe = (n if model.is_cld else network_evaluations(name, n)) * (2 if cfg.guidance != 1 else 1)
        rows.append(f"| {process} ({trained[path]}) | {name} | {cfg.grid} | {n} | {nfe} | "
                    f"{mean_sd([r['fd'] for r in reports])}{to_ref} | {rel:.4f} | {100 * acc:.1f} % | {secs:.0f} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "## CLD: SSCS vs Euler-Maruyama on digits, beside VP of the same network and training time", "",
        provenance(), "",
        f"{args.num_samples} class-conditional samples per row and seed (classes 0-9 in turn, seeds {args.seeds}; "
        "with several seeds FD is their mean ± standard deviation, the seeds' values in brackets; guidance "
        f"{models[args.cld].sampler_config.guidance} as in the recipes), scored by `polydiff test`'s evaluator: "
        f"classifier-feature FD against the {len(dm.split_tensors('test')[0])} test digits, with its floor "
        f"{ev.fd_floor:.1f} (train split vs test split) and ceiling {ev.fd_ceiling:.1f} (noise images vs test split); "
        "relative FD = (FD - floor) / (ceiling - floor); lower is better. Evaluations per sample count the CLD "
        "samplers' last (denoising) step; network evaluations count both passes of guidance. The CLD U-Net is the VP "
        "recipe's (same widths, depth, attention, class embedding) with 2 input channels (image and velocity) instead "
        "of 1.", "",
        "| model (training) | sampler | grid | evaluations per sample | network evaluations | FD | "
        + ("FD to reference | " if ref_rows else "") + "relative FD | class accuracy | seconds per seed |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if ref_rows else ""), *rows, "",
        *(["Converged references (seed {}): FD to reference is the Fréchet distance, in the same classifier features, "
           "between a row's samples and the first reference's, so it measures how far a sampler's discretisation "
           "moves the samples from what the model's SDE gives, apart from the model's own error. The other "
           "references show what two converged runs differ by (finite samples, different noise).".format(
               args.reference_seed), "",
           "| reference sampler | grid | evaluations per sample | FD to test | FD to the first reference |",
           "|---|---|---|---|---|", *ref_rows, ""] if ref_rows else []),
        *([args.notes, ""] if args.notes else []),
        f"Reproduce: `{command_line()}`"])
    write_section(args.out, "cld", text, title="# CLD")
    print(f"wrote {args.out}\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()
