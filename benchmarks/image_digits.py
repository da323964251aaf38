"""Measure the digits recipe: class accuracy and classifier-feature FD of guided samples, per sampler and step count.

    python benchmarks/image_digits.py --ckpt "100 epochs=runs/image/digits/lightning_logs/version_0/checkpoints/last.ckpt"

For each checkpoint (``label=path``, repeatable) and each of DDIM, Heun and DPM-Solver++ 2M at 10 and 20 steps it draws
``--num_samples`` class-conditional samples (classes 0..9 in turn, seed 0) with the checkpoint's guidance scale (or
``--guidance``), scores them with the evaluation classifier of :mod:`polydiff.domains.image.metrics` (trained on the
train split, cached) against the held-out test split, and writes ``docs/benchmarks/image.md``. It prints the command
that reproduces it. The acceptance bar of the issue: class accuracy >= 90 % and (FD - floor) <= (ceiling - floor) / 5.
"""

import argparse
import datetime
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [("ddim", 10), ("ddim", 20), ("heun", 10), ("heun", 20), ("dpmpp_2m", 10), ("dpmpp_2m", 20)]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", action="append", required=True, help="LABEL=PATH of a digits checkpoint (repeatable)")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the checkpoint's)")
    p.add_argument("--configs", default=",".join(f"{n}:{s}" for n, s in CONFIGS),
                   help="comma-separated sampler:steps pairs")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "image.md"))
    p.add_argument("--grids", default=str(ROOT / "runs" / "bench" / "image_digits"), help="folder for sample grids")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--jobs", type=int, default=1, help="sampler configurations evaluated in parallel processes")
    p.add_argument("--notes", default="", help="extra markdown placed under the heading (e.g. training times)")
    return p.parse_args()


def run_config(job: tuple) -> dict:
    """Sample and score one (checkpoint, sampler, steps) configuration; runs in a worker process with --jobs > 1."""
    path, label, name, steps, guidance, num_samples, threads, grids = job
    torch.set_num_threads(threads)
    from polydiff.domains.image import ImageDiffusion
    from polydiff.domains.image.io import save_grid

    model = ImageDiffusion.load_from_checkpoint(path, map_location="cpu")
    model.eval()
    g = model.sampler_config.guidance if guidance is None else guidance
    classes = torch.arange(num_samples) % 10
    t0 = time.time()
    imgs = model.sample_images(num_samples, classes, sampler=name, steps=steps, guidance=g, seed=0)
    secs = time.time() - t0
    k = min(10, num_samples // 10)
    order = torch.arange(10 * k).reshape(k, 10).T.reshape(-1)  # one row per class
    save_grid(imgs[order], Path(grids) / f"{label.replace(' ', '_')}_{name}_{steps}.png", nrow=10)
    # numpy, not tensors: torch shares tensors between processes through file descriptors, which can stall a Pool
    return {"images": imgs.numpy(), "classes": classes.numpy(), "seconds": secs, "guidance": g}


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    from polydiff.core.samplers import network_evaluations
    from polydiff.datasets.digits import DigitsDataModule
    from polydiff.domains.image.metrics import ImageEvaluator

    command = "python benchmarks/image_digits.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"command: {command}")
    dm = DigitsDataModule()
    tx, ty = dm.split_tensors("train")
    vx, vy = dm.split_tensors("test")
    ev = ImageEvaluator(tx, ty, vx, vy, 10)
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs.split(",")]
    grids = Path(args.grids)
    grids.mkdir(parents=True, exist_ok=True)

    jobs = []
    for item in args.ckpt:
        label, _, path = item.partition("=")
        jobs += [(path, label, name, steps, args.guidance, args.num_samples, args.threads, str(grids))
                 for name, steps in configs]
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(run_config, jobs, chunksize=1)
    else:
        results = [run_config(j) for j in jobs]

    sections = []
    for item in args.ckpt:
        label, _, path = item.partition("=")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        rows = []
        for job, res in zip(jobs, results):
            if job[0] != path or job[1] != label:
                continue
            name, steps, g = job[2], job[3], res["guidance"]
            r = ev.report(torch.from_numpy(res["images"]) * 2 - 1, torch.from_numpy(res["classes"]))
            ok = r["class_accuracy"] >= 0.9 and r["fd_relative"] <= 0.2
            nfe = network_evaluations(name, steps) * (2 if g != 1 else 1)
            rows.append(f"| {name} | {steps} | {nfe} | {100 * r['class_accuracy']:.1f} % | {r['fd']:.1f} | "
                        f"{r['fd_floor']:.1f} | {r['fd_ceiling']:.1f} | {r['fd_relative']:.3f} | "
                        f"{'yes' if ok else 'no'} | {res['seconds']:.0f} |")
            print(f"{label}: {name:9s} {steps:3d} steps  acc {100 * r['class_accuracy']:5.1f} %  FD {r['fd']:7.1f}  "
                  f"floor {r['fd_floor']:.1f}  ceiling {r['fd_ceiling']:.1f}  rel {r['fd_relative']:.3f}  "
                  f"{res['seconds']:.0f} s", flush=True)
        sections.append(
            f"### {label}\n\nCheckpoint `{path}` (epoch {ckpt.get('epoch')}, step {ckpt.get('global_step')}), "
            f"guidance {g}, {args.num_samples} samples (classes 0-9 in turn, seed 0).\n\n"
            "| sampler | steps | network evaluations | class accuracy | FD | floor | ceiling | (FD - floor) / (ceiling - "
            "floor) | passes | seconds |\n|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")

    cpu = platform.processor() or platform.machine()
    text = (
        "## Images: digits\n\n"
        f"Measured {datetime.date.today().isoformat()} on {cpu}, {args.jobs} job(s) of {args.threads} CPU thread(s) "
        "(a machine shared with other jobs: seconds are indicative), torch "
        f"{torch.__version__}.\n\n"
        f"Command: `{command}`\n\n"
        "Evaluation classifier: a small CNN trained on the train split of the digits (1348 images), "
        f"{100 * ev.classifier_test_accuracy:.1f} % accuracy on the {len(vx)} held-out test digits. "
        "FD is the Fréchet distance of its 64-dimensional penultimate features between the samples and the test split; "
        f"floor = train split vs test split ({ev.fd_floor:.1f}), ceiling = Gaussian noise images with the train split's "
        f"per-pixel mean and standard deviation vs test split ({ev.fd_ceiling:.1f}). Class accuracy = share of "
        "class-conditional samples the classifier assigns to the requested class. Passes = accuracy >= 90 % and "
        "(FD - floor) <= (ceiling - floor) / 5 (the issue's bar). Network evaluations count both passes of "
        "classifier-free guidance. Sample grids (one row per class) are written to "
        f"`{Path(args.grids).relative_to(ROOT) if Path(args.grids).is_relative_to(ROOT) else args.grids}/`.\n\n"
        + (args.notes + "\n\n" if args.notes else "")
        + "\n".join(sections)
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    print(f"command: {command}")


if __name__ == "__main__":
    main()
