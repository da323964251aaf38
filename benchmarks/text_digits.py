"""Prompt accuracy of the text-to-image digits model: the share of samples whose digits (per position on two-digit
canvases) a classifier reads as the prompt says, at guidance 1 and 3, with the shuffled-prompt control (the same samples
scored against another item's prompt) and the reader's accuracy on the real canvases.

    python benchmarks/text_digits.py --ckpt TEXT.ckpt --notes "how it was trained"

Prompts are the captions of the held-out test split of CaptionedDigitsDataModule (same seed as training): wordings and
digit pairs the model may not have seen together. Writes its section into docs/benchmarks/latent.md.
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
    p.add_argument("--ckpt", required=True, help="checkpoint of recipes/image/digits_text.yaml")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--per_kind", type=int, default=300, help="prompts per kind (single, pair)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the checkpoint's)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "latent.md"))
    p.add_argument("--notes", default="")
    return p.parse_args()


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    from polydiff.core import load
    from polydiff.datasets.captions import CaptionedDigitsDataModule
    from polydiff.domains.image.prompt_metrics import prompt_accuracy, prompt_items

    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    data_args = {k: v for k, v in ckpt.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    dm = CaptionedDigitsDataModule(**data_args)
    model = load(args.ckpt)
    cfg = model.sampler_config
    steps = args.steps or cfg.steps
    _, captions, digits = prompt_items(*dm.split_captions("test"), args.per_kind, args.per_kind)
    examples = [captions[0], captions[1], captions[-1], captions[-2]]
    lines = [provenance(), ""]
    if args.notes:
        lines += [args.notes, ""]
    lines += [
        "### Text-to-image digits: prompt accuracy",
        "",
        f"`{args.ckpt}` (step {ckpt.get('global_step')}), {cfg.name} {steps} steps, {args.per_kind} single-digit and "
        f"{args.per_kind} two-digit prompts from the held-out test captions (e.g. "
        + ", ".join(f'"{c}"' for c in examples) + "). A sample counts when the reader finds the requested digit at "
        "every position. Shuffled: the same samples scored against the prompt of another test item of the same kind "
        "(chance: 10 % single, 1 % pairs).",
        "",
        "| guidance | single-digit prompts | two-digit prompts | shuffled single | shuffled two-digit | sampling s |",
        "|---|---|---|---|---|---|",
    ]
    results = {}
    for g in args.guidance:
        t0 = time.time()
        m = prompt_accuracy(model, dm, g, args.per_kind, args.per_kind, steps=steps)
        secs = time.time() - t0
        results[g] = m
        lines.append(f"| {g:g} | {100 * m['prompt_acc_single']:.1f} % | {100 * m['prompt_acc_pair']:.1f} % | "
                     f"{100 * m['shuffled_acc_single']:.1f} % | {100 * m['shuffled_acc_pair']:.1f} % | {secs:.0f} |")
        print(lines[-1], flush=True)
    m = results[max(args.guidance)]
    lines += [
        f"| real test canvases (reader's ceiling) | {100 * m['reader_acc_real_single']:.1f} % | "
        f"{100 * m['reader_acc_real_pair']:.1f} % | | | |",
        "",
    ]
    lo, hi = results[min(args.guidance)], results[max(args.guidance)]
    checks = [
        ("single-digit prompt accuracy >= 70 %", hi["prompt_acc_single"] >= 0.7),
        ("two-digit prompt accuracy >= 50 %", hi["prompt_acc_pair"] >= 0.5),
        (f"guidance {max(args.guidance):g} better than {min(args.guidance):g} (both kinds)",
         hi["prompt_acc_single"] > lo["prompt_acc_single"] and hi["prompt_acc_pair"] > lo["prompt_acc_pair"]),
        ("shuffled prompts near chance (single <= 20 %, pairs <= 5 %)",
         hi["shuffled_acc_single"] <= 0.2 and hi["shuffled_acc_pair"] <= 0.05),
    ]
    lines += ["Acceptance (issue 16):", *[f"- {name}: {'met' if ok else 'not met'}" for name, ok in checks], "",
              f"Reproduce: `{command_line()}`"]
    write_section(args.out, "text_digits", "\n".join(lines), title="# Latent diffusion and text conditioning")
    print("\n".join(lines))
    print(f"\nwritten to {args.out}\nreproduce: {command_line()}")


if __name__ == "__main__":
    main()
