"""Latent vs pixel diffusion on the digits: the autoencoder's held-out PSNR against PCA of the same latent size, and
classifier-feature FD / class accuracy of a latent model and a pixel model trained for the same wall time, at 4, 8, 16
and 32 network evaluations (both passes of classifier-free guidance counted: steps = evaluations / 2).

    python benchmarks/latent_digits.py --ae AE.ckpt --latent LATENT.ckpt --pixel PIXEL.ckpt \
        --notes "how they were trained"

Controls in the same run: the evaluation's floor (train split vs test split) and ceiling (noise), the FD of the
autoencoder's reconstructions of the test digits (what a perfect latent model would reach), and PCA reconstruction.
Writes its section into docs/benchmarks/latent.md and prints the command that reproduces it.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _doc import command_line, provenance, write_section  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ae", required=True, help="autoencoder checkpoint (recipes/autoencoder/digits.yaml)")
    p.add_argument("--latent", required=True, help="latent model checkpoint (recipes/image/digits_latent.yaml)")
    p.add_argument("--pixel", required=True, help="pixel model checkpoint (recipes/image/digits.yaml)")
    p.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "latent.md"))
    p.add_argument("--notes", default="")
    return p.parse_args()


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    from polydiff.core import load
    from polydiff.datasets.digits import DigitsDataModule
    from polydiff.domains.autoencoder.metrics import pca_reconstruction, psnr
    from polydiff.domains.image.metrics import ImageEvaluator

    dm = DigitsDataModule(image_size=16, seed=0)
    train_x, train_y = dm.split_tensors("train")
    test_x, test_y = dm.split_tensors("test")
    ev = ImageEvaluator(train_x, train_y, test_x, test_y, 10)

    ae = load(args.ae)
    with torch.no_grad():
        rec = ae.reconstruct(test_x)
    dims = ae.encode(test_x[:1]).numel()
    pca = pca_reconstruction(train_x, test_x, dims)
    lines = [provenance(), ""]
    if args.notes:
        lines += [args.notes, ""]
    lines += [
        "### Autoencoder (first stage)",
        "",
        f"`{args.ae}`: 16x16 digits to {tuple(ae.encode(test_x[:1]).shape[1:])} latents ({dims} numbers for 256 "
        f"pixels). Held-out test split ({len(test_x)} digits), PSNR over the whole split (data in [-1, 1], range 2).",
        "",
        "| code | latent numbers | held-out PSNR (dB) | FD of reconstructions |",
        "|---|---|---|---|",
        f"| KL autoencoder | {dims} | {psnr(test_x, rec):.2f} | {ev.fd(rec.clamp(-1, 1)):.1f} |",
        f"| PCA (control, fitted on the train split) | {dims} | {psnr(test_x, pca):.2f} | "
        f"{ev.fd(pca.clamp(-1, 1)):.1f} |",
        "",
        f"Acceptance: autoencoder beats PCA on held-out PSNR: "
        f"{'met' if psnr(test_x, rec) > psnr(test_x, pca) else 'not met'}.",
        "",
        "### Latent vs pixel diffusion at equal training time",
        "",
        f"{args.num_samples} samples (classes 0-9 in turn, seed 0), {args.sampler}, guidance {args.guidance}; network "
        "evaluations count both passes of guidance (steps = evaluations / 2). FD floor (train vs test) "
        f"{ev.fd_floor:.1f}, ceiling (noise) {ev.fd_ceiling:.1f}; the evaluation classifier scores "
        f"{100 * ev.classifier_test_accuracy:.1f} % on real test digits. Sampling seconds: one thread, "
        f"{args.num_samples} images.",
        "",
        "| model | training | network evaluations | FD | class accuracy | sampling s |",
        "|---|---|---|---|---|---|",
    ]
    results: dict[str, dict[int, dict[str, float]]] = {}
    for label, path in (("latent", args.latent), ("pixel", args.pixel)):
        model = load(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        trained = f"step {ckpt.get('global_step')}"
        results[label] = {}
        classes = torch.arange(args.num_samples) % 10
        for nfe in args.nfe:
            steps = max(1, nfe // (2 if args.guidance != 1 else 1))
            t0 = time.time()
            images = model.sample_images(args.num_samples, classes, args.sampler, steps=steps, guidance=args.guidance,
                                         seed=0) * 2 - 1
            secs = time.time() - t0
            m = ev.report(images, classes)
            m["secs"] = secs
            results[label][nfe] = m
            lines.append(f"| {label} | {trained} | {nfe} | {m['fd']:.1f} | {100 * m['class_accuracy']:.1f} % | "
                         f"{secs:.1f} |")
            print(lines[-1], flush=True)
    best_pixel = min(results["pixel"].items(), key=lambda kv: kv[1]["fd"])
    reach = [n for n, m in sorted(results["latent"].items()) if m["fd"] <= best_pixel[1]["fd"]]
    better_equal = [n for n in args.nfe if results["latent"][n]["fd"] < results["pixel"][n]["fd"]]
    lines += [
        "",
        f"Acceptance: the pixel model's best FD is {best_pixel[1]['fd']:.1f} (at {best_pixel[0]} evaluations); the latent "
        f"model reaches it at {reach[0] if reach else 'no'} evaluations; latent FD is lower than pixel FD at equal "
        f"evaluations for {better_equal or 'none'} of {args.nfe}: "
        f"{'met' if (reach and reach[0] < best_pixel[0]) or better_equal else 'not met'}.",
        "",
        f"Reproduce: `{command_line()}`",
    ]
    write_section(args.out, "latent_digits", "\n".join(lines), title="# Latent diffusion and text conditioning")
    print("\n".join(lines))
    print(f"\nwritten to {args.out}\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()
