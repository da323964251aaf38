"""Measure the moving-digits video recipe against its controls: per-frame FD, identity consistency, constant-speed
residual, for the model's unconditional clips, real test clips, frame-shuffled and independent real frames, the
inflated image model before temporal training, and the model's clips continued to twice the training length.

    python benchmarks/video_digits.py \
        --ckpt "inflated, 30 min=runs/video/moving_digits/lightning_logs/version_0/checkpoints/last.ckpt" \
        --image_ckpt runs/image/digits/lightning_logs/version_0/checkpoints/last.ckpt

It rebuilds the checkpoint's moving-digits DataModule (same seed and sizes), scores every row with
:func:`polydiff.domains.video.evaluation.evaluate` (the classifier is trained on train-split frames and cached), prints
the table with the acceptance checks of the issue, and writes it into ``docs/benchmarks/video.md``.
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
    p.add_argument("--ckpt", action="append", required=True, help="LABEL=PATH of a moving-digits checkpoint")
    p.add_argument("--image_ckpt", default=None, help="the image checkpoint the video model was inflated from "
                   "(default: the checkpoint's training.init_from)")
    p.add_argument("--num_samples", type=int, default=256)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale of clips with a class (default: the "
                   "checkpoint's)")
    p.add_argument("--guidance_sigma_min", type=float, default=None, help="guidance only at noise levels sigma / alpha "
                   ">= this (default: the checkpoint's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "video.md"))
    p.add_argument("--notes", default="", help="extra markdown under the heading (e.g. the training time)")
    return p.parse_args()


def acceptance(table: dict[str, dict[str, float]]) -> list[str]:
    m, c = table["model"], table.get("continued_2x", {})
    checks = [
        ("identity consistency >= 0.8", m.get("identity_consistency", float("nan")), lambda v: v >= 0.8),
        ("constant-speed residual <= 1.0 px", m["motion_residual"], lambda v: v <= 1.0),
        ("per-frame FD within a fifth of floor-to-ceiling (fd_relative <= 0.2)", m["fd_relative"], lambda v: v <= 0.2),
        ("continued to 2x length: identity consistency >= 0.7", c.get("identity_consistency", float("nan")),
         lambda v: v >= 0.7),
    ]
    lines = [f"- {name}: {value:.3f} ({'met' if ok(value) else 'not met'})" for name, value, ok in checks]
    inflated = table.get("inflated", {}).get("identity_consistency")
    if inflated is not None:
        lines.append(f"- control: the image model frame by frame (inflated, before temporal training) near chance: "
                     f"{inflated:.3f} (independent real frames {table['independent']['identity_consistency']:.3f})")
    for row, what in (("null_class", "the same model given the null class (no label, no guidance)"),
                      ("same_class_frames", "control: each frame from another model clip of the same class (the "
                       "label alone)"),
                      ("inflated_labelled", "control: the image model frame by frame, each clip given the model "
                       "row's class"),
                      ("animated", "the model's own first frames animated (two-stage sampling)"),
                      ("animated_real", "real first frames animated")):
        if row in table:
            lines.append(f"- {what}: identity consistency {table[row]['identity_consistency']:.3f}, frame agreement "
                         f"{table[row]['frame_agreement']:.3f}")
    return lines


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    from polydiff.datasets.video import MovingDigitsDataModule
    from polydiff.domains.video import VideoDiffusion
    from polydiff.domains.video.evaluation import evaluate, format_table

    sections = [provenance(), "", args.notes] if args.notes else [provenance()]
    for spec in args.ckpt:
        label, path = spec.split("=", 1)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        data_args = {k: v for k, v in ckpt.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
        dm = MovingDigitsDataModule(**data_args)
        model = VideoDiffusion.load_from_checkpoint(path, map_location="cpu")
        model.eval_num_samples = args.num_samples
        if args.image_ckpt:
            model.training_config.init_from = args.image_ckpt
        if args.steps:
            model.sampler_config.steps = args.steps
        if args.guidance is not None:
            model.sampler_config.guidance = args.guidance
        if args.guidance_sigma_min is not None:
            model.sampler_config.guidance_sigma_min = args.guidance_sigma_min
        t0 = time.time()
        table = evaluate(model, dm, verbose=False)
        secs = time.time() - t0
        m = table["model"]
        cfg = model.sampler_config
        how = ("each clip's class drawn by the model's labeler (from its class prior; from the given frames for the "
               f"animated and continued rows), guidance {cfg.guidance} at sigma / alpha >= {cfg.guidance_sigma_min}"
               if model.labeler is not None
               else "null class")
        text = [f"### {label}", "", f"`{path}`, step {ckpt.get('global_step')}, {args.num_samples} unconditional "
                f"clips per row ({how}), {cfg.name} {cfg.steps} steps; evaluation {secs / 60:.1f} min.",
                "", format_table(table, m["fd_floor"], m["fd_ceiling"]), "",
                "Acceptance (issue 13):", *acceptance(table)]
        print("\n".join(text))
        sections += ["", *text]
    sections += ["", f"Reproduce: `{command_line()}`"]
    write_section(args.out, "video_digits", "\n".join(sections), title="# Video benchmarks")
    print(f"\nwritten to {args.out}\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()
