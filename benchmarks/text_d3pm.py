"""Text benchmark: absorbing vs uniform D3PM (and MDLM) on the embedded corpus, against unigram / bigram baselines.

For each recipe: train it (``--train``; otherwise the newest ``last.ckpt`` under its run directory is used), run
``polydiff test`` (bits per character of the bound on the held-out chunks, n-gram baselines, word share of samples),
evaluate the *exact* bound (all T steps) on the first ``--exact-chunks`` held-out chunks next to the stratified estimate
on the same chunks, and time the fast absorbing sampler against plain ancestral sampling. Writes a section of
docs/benchmarks/text.md and prints the command that reproduces it.

    .venv/bin/python benchmarks/text_d3pm.py --recipes absorbing uniform [--train]
"""

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _doc import command_line, provenance, write_section  # noqa: E402

from polydiff.core.cli import main  # noqa: E402
from polydiff.core.discrete import CategoricalSamplerConfig  # noqa: E402
from polydiff.datasets.text import TextDataModule  # noqa: E402
from polydiff.domains.text import TextDiffusion  # noqa: E402
from polydiff.domains.text.metrics import training_vocabulary, word_share  # noqa: E402


def newest_checkpoint(name: str) -> Path:
    found = sorted((ROOT / "runs" / "text" / name).glob("lightning_logs/version_*/checkpoints/last.ckpt"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no checkpoint for recipe {name}; run with --train")
    return found[-1]


def training_summary(ckpt: Path) -> tuple[int, float]:
    """Optimiser steps of the checkpoint and the wall-clock minutes from the start of training (the run's hparams.yaml,
    written when the first batch starts) to the checkpoint."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hparams = ckpt.parents[1] / "hparams.yaml"
    minutes = (ckpt.stat().st_mtime - hparams.stat().st_mtime) / 60 if hparams.exists() else float("nan")
    return int(state["global_step"]), minutes


def load_model(recipe: Path, ckpt: Path) -> tuple[TextDiffusion, TextDataModule]:
    import yaml

    cfg = yaml.safe_load(recipe.read_text())
    margs = dict(cfg["model"]["init_args"])
    from polydiff.core.discrete import CategoricalConfig
    from polydiff.core.module import TrainingConfig

    margs["diffusion"] = CategoricalConfig(**margs["diffusion"])
    margs["sampler"] = CategoricalSamplerConfig(**margs["sampler"])
    margs["training"] = TrainingConfig(**margs.get("training", {}))
    model = TextDiffusion(**margs)
    model.load_weights(str(ckpt))
    model.eval()
    return model, TextDataModule(**cfg["data"]["init_args"])


def exact_vs_estimate(model: TextDiffusion, dm: TextDataModule, chunks: int, bound_times: int) -> tuple[float, float]:
    texts = dm.split_texts("test")[:chunks]
    b = model.encode(texts)
    T = model.diffusion_config.steps or 1000  # continuous-time models: their 1000-step discretisation
    exact, count = model.bound_nats(b, num_times=0, steps=T, generator=torch.Generator().manual_seed(0))
    est, _ = model.bound_nats(b, num_times=bound_times, generator=torch.Generator().manual_seed(1))
    return (float(exact.sum() / count.sum()) / math.log(2), float(est.sum() / count.sum()) / math.log(2))


def time_samplers(model: TextDiffusion, dm: TextDataModule, n: int, steps: int) -> list[dict]:
    vocab = training_vocabulary(dm.split_texts("train"))
    rows = []
    names = ["absorbing_fast", "ancestral"] if model.diffusion_config.transition == "absorbing" else ["ancestral"]
    for name in names:
        cfg = CategoricalSamplerConfig(name=name, steps=steps)
        t0 = time.perf_counter()
        texts = model.sample_texts(n, seed=0, sampler=cfg)
        rows.append({"sampler": name, "steps": steps, "seconds": time.perf_counter() - t0,
                     "word_share": word_share(texts, vocab), "example": texts[0]})
    return rows


def main_cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["absorbing", "uniform"])
    ap.add_argument("--train", action="store_true", help="train each recipe first (28 minutes each)")
    ap.add_argument("--exact-chunks", type=int, default=16, help="held-out chunks for the exact all-T-steps bound")
    ap.add_argument("--sample-steps", type=int, default=1000)
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit-test-batches", type=float, default=1.0, help="share of held-out batches (quick checks)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "text.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, sampler_rows = [], []
    for name in args.recipes:
        recipe = ROOT / "recipes" / "text" / f"{name}.yaml"
        if args.train:
            main(["fit", "--config", str(recipe), "--trainer.enable_progress_bar", "false"])
        ckpt = newest_checkpoint(name)
        steps, minutes = training_summary(ckpt)
        test_dir = ROOT / "runs" / "text" / "bench" / name
        main(["test", "--config", str(recipe), "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(test_dir), "--trainer.limit_test_batches", str(args.limit_test_batches)])
        metrics_file = max(test_dir.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)
        m = json.loads(metrics_file.read_text())["metrics"]
        model, dm = load_model(recipe, ckpt)
        bound_times = model.diffusion_config.bound_times
        with torch.no_grad():
            exact, est = exact_vs_estimate(model, dm, args.exact_chunks, bound_times)
            srows = time_samplers(model, dm, args.num_samples, min(args.sample_steps, model.diffusion_config.steps
                                                                   or args.sample_steps))
        cfg = model.diffusion_config
        rows.append({"name": name, "transition": cfg.transition, "loss": cfg.loss, "T": cfg.steps, "steps": steps,
                     "minutes": minutes, **m, "exact": exact, "estimate": est, "bound_times": bound_times})
        sampler_rows += [{"name": name, **r} for r in srows]
        print(json.dumps(rows[-1], indent=1), flush=True)

    lines = [provenance(), "",
             "Embedded corpus (CPython `pydoc_data.topics`, text8-normalised, 64-character chunks, split seed 0). "
             "Bits per character are the negative ELBO of the diffusion model on all held-out chunks (the T-step "
             "bound estimated at `bound_times` stratified steps per chunk, unbiased) next to add-k unigram and "
             "bigram models fitted on the training chunks (k of the bigram chosen on validation). Lower is better.",
             "",
             "| recipe | transition / loss | T | training steps (minutes of training, shared CPU) | bits/char (bound) "
             "| unigram "
             "| bigram | generated words in train vocabulary | held-out words in train vocabulary |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['transition']} / {r['loss']} | {r['T'] or 'continuous'} | {r['steps']} "
                     f"({r['minutes']:.0f}) | **{r['bits_per_char']:.3f}** | {r['unigram_bits_per_char']:.3f} | "
                     f"{r['bigram_bits_per_char']:.3f} | {r['generated_words_in_train_vocab']:.3f} | "
                     f"{r['heldout_words_in_train_vocab']:.3f} |")
    lines += ["", f"Exact bound (all T steps, one draw of x_t per step) on the first {args.exact_chunks} held-out "
              "chunks against the stratified estimate used above, same chunks:", "",
              "| recipe | exact bits/char | estimate bits/char (bound_times) |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['exact']:.3f} | {r['estimate']:.3f} ({r['bound_times']}) |")
    lines += ["", f"Sampling {args.num_samples} chunks of 64 characters (1 torch thread, shared CPU):", "",
              "| recipe | sampler | steps | seconds | generated words in train vocabulary | first sample |",
              "|---|---|---|---|---|---|"]
    for r in sampler_rows:
        example = re.sub(r"\s+", " ", r["example"]).replace("|", " ")
        lines.append(f"| {r['name']} | {r['sampler']} | {r['steps']} | {r['seconds']:.1f} | {r['word_share']:.3f} | "
                     f"`{example}` |")
    write_section(args.out, "text_d3pm", "\n".join(lines), title="# Text benchmarks")
    print(f"wrote {args.out}\nreproduce with: {command_line()}")


if __name__ == "__main__":
    main_cli()
