"""Audio vocoder benchmark: a trained DiffWave-style checkpoint against Griffin-Lim on the held-out clips.

Evaluates the checkpoint with several 6-step samplers of the core (the same ``test_step`` as ``polydiff test``), writes
the table, the real-time factors, the commands and the machine to ``docs/benchmarks/audio.md``, re-synthesises one
held-out clip with ``polydiff sample`` (WAV + spectrogram PNG in ``benchmarks/out/audio/``) and prints the commands.

    polydiff fit --config recipes/audio/diffwave_speech.yaml                     # the training run (nice -n 10 here)
    python benchmarks/audio_vocoder.py --ckpt runs/audio/diffwave_speech/lightning_logs/version_0/checkpoints/last.ckpt

The refiner (recipes/audio/refiner_speech.yaml, a diffusion model of the magnitude Griffin-Lim needs) is measured over
several training seeds on voices held out from training, with PESQ and STOI, against Griffin-Lim and the identical pipeline
with a zeroed network; its section of docs/benchmarks/audio.md is written between markers:

    python benchmarks/audio_vocoder.py --recipe recipes/audio/refiner_speech.yaml --refiners CKPT_SEED0,CKPT_SEED1,CKPT_SEED2
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/audio/diffwave_speech.yaml"
DEFAULT_CKPT = "runs/audio/diffwave_speech/lightning_logs/version_0/checkpoints/last.ckpt"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def heldout_data(recipe: str, clips: int | None = None):
    """The recipe's speech DataModule (set up for testing), limited to ``clips`` held-out clips when given."""
    from polydiff.datasets.audio import SpeechDataModule

    data_args = yaml.safe_load((ROOT / recipe).read_text())["data"]["init_args"]
    if clips is not None:
        data_args["max_eval_clips"] = clips
    dm = SpeechDataModule(**data_args)
    dm.setup("test")
    return dm


def model_class(recipe: str) -> type:
    """The LightningModule class the recipe trains (``model.class_path``)."""
    import importlib

    module, name = yaml.safe_load((ROOT / recipe).read_text())["model"]["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def evaluate(ckpt: str, recipe: str, name: str, steps: int, grid: str, clips: int, consistency: str = "none",
             iters: int = 0, untrained: bool = False, sampler: dict | None = None) -> dict:
    """Metrics of one sampler (Python API: ``polydiff test`` takes the sampler stored in the checkpoint), optionally with
    the GLA-Grad consistency projection; ``untrained`` evaluates the same pipeline with the network as initialised
    (seed 0: its output layer is zero, so it predicts eps = 0) instead of the checkpoint's weights."""
    from polydiff.core.sampling import SamplerConfig
    from polydiff.core.trainer import PolydiffTrainer

    cls = model_class(recipe)
    model = cls.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    if untrained:
        torch.manual_seed(0)
        model = cls(**{k: v for k, v in model.hparams.items() if not k.startswith("_")})
    model.sampler_config = SamplerConfig(**sampler) if sampler else SamplerConfig(name=name, steps=steps, grid=grid)
    if consistency != "none":
        model.consistency, model.consistency_iters = consistency, iters
    dm = heldout_data(recipe, clips)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = PolydiffTrainer(default_root_dir=tmp, accelerator="cpu", devices=1, enable_progress_bar=False,
                                  enable_model_summary=False)
        trainer.test(model, dm, verbose=False)
        out = json.loads(next(Path(tmp).rglob("metrics.json")).read_text())
    return out


def parse_spec(spec: str) -> tuple[str, int, str, str, int]:
    """``name:steps:grid[:consistency:iterations]`` -> its fields (consistency ``none`` when absent)."""
    parts = spec.split(":")
    if len(parts) not in (3, 5):
        raise SystemExit(f"sampler spec {spec!r} is not name:steps:grid or name:steps:grid:consistency:iterations")
    name, steps, grid = parts[:3]
    consistency, iters = (parts[3], int(parts[4])) if len(parts) == 5 else ("none", 0)
    return name, int(steps), grid, consistency, iters


def label_of(name: str, steps: int, grid: str, consistency: str, iters: int) -> str:
    label = f"DiffWave-style, {name}, {steps} steps ({grid} grid)"
    if consistency != "none":
        label += f" + {consistency} consistency, {iters} iterations per step (GLA-Grad)"
    return label


def row_of(label: str, m: dict) -> tuple:
    return (label, m["diffwave_logmel_l1"], m["diffwave_mrstft"], m["diffwave_si_sdr"], m["diffwave_periodicity"],
            m["diffwave_rtf"])


def write_heldout_sample(ckpt: str, recipe: str, out_dir: Path) -> Path:
    """Write the first held-out test clip as WAV and vocode it with ``polydiff sample`` (WAV + PNG)."""
    from polydiff.domains.audio.audio_io import write_audio

    dm = heldout_data(recipe)
    out_dir.mkdir(parents=True, exist_ok=True)
    clip = write_audio(out_dir / "heldout.wav", dm.splits["test"][0], dm.sample_rate)
    cmd = [sys.executable, "-m", "polydiff.core.cli", "sample", "--config", recipe, "--ckpt_path", ckpt, "--input",
           str(clip), "--out", str(out_dir / "vocoded")]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out_dir / "vocoded" / "heldout_spectrograms.png"


def floors(ckpt: str, recipe: str, clips: int) -> list[tuple]:
    """Rows without a trained network, to read the table against: the prior alone (coloured noise, what the model starts
    from) and the true waveform's MDCT magnitudes with random signs (the right magnitudes in the prior's own transform
    with the phase thrown away): log-mel L1 and MR-STFT reward a phase-coherent waveform, not only magnitudes."""
    from polydiff.domains.audio import VocoderModule
    from polydiff.domains.audio.features import imdct, mdct
    from polydiff.domains.audio.metrics import log_mel_l1, mr_stft_distance, periodicity_error, si_sdr

    model = VocoderModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    dm = heldout_data(recipe, clips)
    sums: dict[str, list[float]] = {}
    gen = torch.Generator().manual_seed(0)
    basis = model.features.mdct_basis
    for batch in dm.test_dataloader():
        wave = (batch[0] if isinstance(batch, (list, tuple)) else batch).float()
        mel = model.features(wave)
        coeffs = mdct(wave, basis)
        signs = torch.randint(0, 2, coeffs.shape, generator=gen) * 2.0 - 1.0
        outs = {"the prior alone: mel-coloured Gaussian noise, no network":
                model.colour(torch.randn(wave.shape, generator=gen), mel),
                "true MDCT magnitudes with random signs (oracle magnitudes, no phase)": imdct(coeffs.abs() * signs, basis)}
        for label, est in outs.items():
            acc = sums.setdefault(label, [0.0, 0.0, 0.0, 0.0, 0.0])
            acc[0] += float(log_mel_l1(model.features, wave, est).sum())
            acc[1] += float(mr_stft_distance(wave, est).sum())
            acc[2] += float(si_sdr(wave, est).sum())
            acc[3] += float(periodicity_error(wave, est, model.features.sample_rate).sum())
            acc[4] += wave.shape[0]
    return [(label, a / n, m / n, d / n, p / n, float("nan")) for label, (a, m, d, p, n) in sums.items()]


def validation_curve(ckpt: Path) -> list[tuple[int, float]]:
    """``(step, val/logmel_l1)`` pairs from the run's CSV log next to the checkpoint folder (empty when absent)."""
    import csv

    log = ckpt.resolve().parent.parent / "metrics.csv"
    if not log.is_file():
        return []
    with log.open() as fh:
        return [(int(r["step"]) + 1, float(r["val/logmel_l1"])) for r in csv.DictReader(fh) if r.get("val/logmel_l1")]


def verdicts(rows: list[tuple], specs: list[tuple], gl: tuple) -> list[str]:
    """What the table says: does the network alone beat Griffin-Lim at 6 steps, and does the trained network add
    anything to a consistency projection over the same pipeline with an untrained network."""
    def beats(row: tuple, ref: tuple, offset: int) -> list[str]:
        return [name for name, i in (("log-mel L1", 1), ("MR-STFT", 2)) if row[i] < ref[i - offset]]

    out = []
    plain = [r for r, spec in zip(rows, specs) if spec[1] == 6 and spec[3] == "none"]
    if plain:
        best = min(plain, key=lambda r: r[1])
        won = beats(best, gl, 1)
        out.append(f"- Network alone: the best 6-step sampler ({best[0]}) beats Griffin-Lim on "
                   + (" and ".join(won) if won else "neither log-mel L1 nor MR-STFT") + ".")
    controls = {r[0]: r for r in rows if r[0].startswith("control: ")}
    for row, spec in zip(rows, specs):
        if spec[3] == "none":
            continue
        won = beats(row, gl, 1)
        line = (f"- {row[0]}: beats Griffin-Lim on " + (" and ".join(won) if won else "neither metric"))
        control = controls.get("control: " + row[0] + ", untrained network (eps = 0)")
        if control is not None:
            # relative change against the untrained network; within 2 % counts as no difference
            diffs = [f"{name} {row[i]:.3f} vs {control[i]:.3f}" for name, i in
                     (("log-mel L1", 1), ("MR-STFT", 2), ("SI-SDR dB", 3))]
            gain = [name for name, i in (("log-mel L1", 1), ("MR-STFT", 2)) if row[i] < 0.98 * control[i]]
            loss = [name for name, i in (("log-mel L1", 1), ("MR-STFT", 2)) if row[i] > 1.02 * control[i]]
            if gain:
                verdict = "improves " + " and ".join(gain)
            elif loss:
                verdict = "is worse on " + " and ".join(loss)
            else:
                verdict = "adds nothing on log-mel L1 or MR-STFT (within 2 %)"
                verdict += ": the gain over Griffin-Lim is the projection's" if won else ""
            line += f"; against the same projection with an untrained network ({', '.join(diffs)}), the trained network "
            line += verdict
        out.append(line + ".")
    return out


REFINER_METRICS = (("log-mel L1", "logmel_l1", -1), ("MR-STFT", "mrstft", -1), ("SI-SDR (dB)", "si_sdr", 1),
                   ("periodicity error", "periodicity", -1), ("PESQ wb", "pesq", 1), ("STOI", "stoi", 1))


def magnitude_oracles(recipe: str, clips: int) -> dict[str, dict[str, float]]:
    """What the refiner could gain, on the same held-out clips, without a network: Griffin-Lim from the *true* linear
    magnitude, the mel's least-squares magnitude with the *true* phase, and the mel-consistent least-squares magnitude
    (the zeroed pipeline's input) with Griffin-Lim; per-clip means of every refiner metric."""
    from polydiff.domains.audio.consistency import linear_magnitude, mel_consistent_magnitude
    from polydiff.domains.audio.metrics import (
        griffin_lim_magnitude,
        log_mel_l1,
        mr_stft_distance,
        periodicity_error,
        pesq_wb,
        si_sdr,
        stoi,
    )

    model = model_class(recipe)()
    f = model.features
    dm = heldout_data(recipe, clips)
    sums: dict[str, dict[str, float]] = {}
    n = 0
    for batch in dm.test_dataloader():
        wave = (batch[0] if isinstance(batch, (list, tuple)) else batch).float()
        samples, log_mel = wave.shape[-1], f.log_mel(wave)
        spec = torch.stft(wave[:, 0], f.n_fft, f.hop_length, window=torch.hann_window(f.n_fft), return_complex=True)
        pinv = linear_magnitude(f, log_mel).clamp_min(f.log_floor)
        outs = {
            "Griffin-Lim (32 iterations) from the true linear magnitude": griffin_lim_magnitude(f, spec.abs(), samples),
            "the mel's least-squares magnitude with the true phase": torch.istft(
                pinv * torch.exp(1j * spec.angle()), f.n_fft, f.hop_length, window=torch.hann_window(f.n_fft),
                length=samples)[:, None],
            "Griffin-Lim from the mel-consistent least-squares magnitude (10 rounds)": griffin_lim_magnitude(
                f, mel_consistent_magnitude(f, pinv, log_mel, 10), samples),
        }
        for label, est in outs.items():
            acc = sums.setdefault(label, {})
            for key, fn in (("logmel_l1", lambda r, e: log_mel_l1(f, r, e)), ("mrstft", mr_stft_distance),
                            ("si_sdr", si_sdr), ("periodicity", lambda r, e: periodicity_error(r, e, f.sample_rate)),
                            ("pesq", lambda r, e: pesq_wb(r, e, f.sample_rate)),
                            ("stoi", lambda r, e: stoi(r, e, f.sample_rate))):
                acc[key] = acc.get(key, 0.0) + float(fn(wave, est).sum())
        n += wave.shape[0]
    return {label: {k: v / n for k, v in acc.items()} for label, acc in sums.items()}


def refiner_section(ckpts: list[str], recipe: str, clips: int, train_note: str) -> str:
    """The refiner's table over training seeds with the recipe's sampler: every checkpoint, their mean and spread
    (max - min), the identical pipeline with a zeroed network and Griffin-Lim (both measured in every checkpoint's run),
    and the verdicts."""
    from _doc import provenance

    from polydiff.core.samplers import network_evaluations

    sampler = yaml.safe_load((ROOT / recipe).read_text())["model"]["init_args"]["sampler"]
    name, steps, grid = sampler["name"], sampler["steps"], sampler.get("grid", "karras")
    nfe = network_evaluations(name, steps, sampler.get("final_step", "zero"))
    runs = []
    for path in ckpts:
        res = evaluate(path, recipe, name, steps, grid, clips, sampler=sampler)
        step = torch.load(path, map_location="cpu", weights_only=True).get("global_step")
        runs.append((path, step, res["metrics"], res))
        print(path, {k: round(v, 4) for k, v in res["metrics"].items()}, flush=True)
    extra = runs[0][3]
    data = yaml.safe_load((ROOT / recipe).read_text())["data"]["init_args"]

    def cells(vals: list[float]) -> str:
        return " | ".join(f"{v:.3f}" for v in vals)

    def stat(pipe: str, key: str) -> list[float]:
        return [r[2][f"{pipe}_{key}"] for r in runs]

    head = "| method | " + " | ".join(label for label, _, _ in REFINER_METRICS) + " | real-time factor |"
    lines = [head, "|---" * (len(REFINER_METRICS) + 2) + "|"]
    for i, (_path, step, m, _) in enumerate(runs):
        lines.append(f"| refiner, run {i + 1} ({step} training steps) | "
                     + cells([m[f"diffwave_{k}"] for _, k, _ in REFINER_METRICS]) + f" | {m['diffwave_rtf']:.3f} |")
    mean = {k: sum(stat("diffwave", k)) / len(runs) for _, k, _ in REFINER_METRICS + (("", "rtf", 0),)}
    spread = {k: max(stat("diffwave", k)) - min(stat("diffwave", k)) for _, k, _ in REFINER_METRICS}
    lines.append(f"| **refiner, mean of {len(runs)} runs** | "
                 + cells([mean[k] for _, k, _ in REFINER_METRICS]) + f" | {mean['rtf']:.3f} |")
    lines.append(f"| spread over the {len(runs)} runs (max - min) | "
                 + cells([spread[k] for _, k, _ in REFINER_METRICS]) + " | - |")
    for pipe, label in (("zeroed", "control: identical pipeline, zeroed network (Griffin-Lim from the mel-consistent "
                                   "least-squares magnitude)"),
                        ("griffinlim", "Griffin-Lim, 32 iterations, same mel")):
        vals = {k: sum(stat(pipe, k)) / len(runs) for _, k, _ in REFINER_METRICS + (("", "rtf", 0),)}
        lines.append(f"| {label} | " + cells([vals[k] for _, k, _ in REFINER_METRICS]) + f" | {vals['rtf']:.3f} |")
    lines += ["", "What no network can add and what a better magnitude could (same clips, no training):", "",
              head, lines[1]]
    for label, vals in magnitude_oracles(recipe, clips).items():
        lines.append(f"| {label} | " + cells([vals[k] for _, k, _ in REFINER_METRICS]) + " | - |")
    # verdicts: every run against Griffin-Lim; the mean's margin over the zeroed control against the seeds' spread
    verdict = []
    for label, key, sign in REFINER_METRICS:
        trained, gl, ctrl = stat("diffwave", key), stat("griffinlim", key), stat("zeroed", key)
        beats_gl = all(sign * (t - g) > 0 for t, g in zip(trained, gl))
        margin = sign * (mean[key] - sum(ctrl) / len(ctrl))
        verdict.append(f"- {label}: {'every run beats' if beats_gl else 'not every run beats'} Griffin-Lim "
                       f"({mean[key]:.3f} vs {sum(gl) / len(gl):.3f}); margin over the zeroed control "
                       f"{margin:+.3f} (in the better direction), spread over runs {spread[key]:.3f}: "
                       + ("larger than the spread" if margin > spread[key] else "NOT larger than the spread") + ".")
    worst_rtf = max(stat("diffwave", "rtf"))
    verdict.append(f"- Real-time factor of the whole pipeline ({nfe} network evaluations + Griffin-Lim), worst run: "
                   f"{worst_rtf:.3f} "
                   f"({'below' if worst_rtf < 1 else 'not below'} 1).")
    png = write_heldout_sample(ckpts[0], recipe, ROOT / "benchmarks/out/audio_refine")
    cmd = f"python benchmarks/audio_vocoder.py --recipe {recipe} --refiners {','.join(ckpts)} --clips {clips}"
    voices = ", ".join(data.get("holdout_voices") or [])
    text = [
        "## Refiner vocoder (magnitude diffusion + Griffin-Lim) on held-out voices",
        "",
        provenance(),
        "",
        f"Test clips: {extra['clips']} clips ({extra['audio_seconds']:.1f} s at 16 kHz, fixed centred crops of "
        f"{data['eval_samples']} samples) of the voices {voices}, which no run trained on (`--data.holdout_voices`). "
        f"Sampler: the recipe's, {name} with {steps} steps ({grid} grid, "
        + ", ".join(f"{k} {v}" for k, v in sampler.items() if k not in ("name", "steps", "grid"))
        + f"): {nfe} network evaluations. PESQ is wide-band PESQ (ITU-T P.862.2) at the corpus's "
        "16 kHz, STOI the standard one (Taal et al. 2011). Lower is better for log-mel L1, MR-STFT and periodicity "
        "error, higher for SI-SDR, PESQ and STOI; real-time factor = CPU wall time / audio duration on 1 torch thread "
        "on a shared machine. Every run's `polydiff test` measured the control and Griffin-Lim on the same clips.",
        "",
    ] + lines + ["", *verdict, "", train_note, "", "Reproduce:", "", "```"]
    text += [f"polydiff fit --config {recipe} --seed_everything {s} --trainer.default_root_dir runs/audio/refiner_seed{s}"
             for s in range(len(ckpts))]
    text += [f"polydiff test --config {recipe} --ckpt_path {ckpts[0]}", cmd, "```", "",
             f"Spectrogram comparison of one held-out-voice clip (input / refiner / Griffin-Lim): "
             f"`{png.relative_to(ROOT)}` (written by `polydiff sample ... --input heldout.wav`)."]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=DEFAULT_CKPT)
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--samplers", default="ddpm:6:karras,ddim:6:karras,dpmpp_2m:6:karras",
                        help="comma-separated name:steps:grid[:consistency:iterations] (consistency: griffin_lim or "
                             "mel, GLA-Grad's projection of each step's estimate)")
    parser.add_argument("--clips", type=int, default=32, help="held-out clips (1.02 s each)")
    parser.add_argument("--out", default="docs/benchmarks/audio.md")
    parser.add_argument("--train-note", default="", help="how the checkpoint was trained (steps, wall time)")
    parser.add_argument("--floors", action="store_true",
                        help="also report the prior alone, oracle MDCT magnitudes with random signs and, for each "
                             "sampler with a consistency projection, the same pipeline with an untrained network")
    parser.add_argument("--compare", action="append", default=[],
                        help="LABEL=CKPT: another checkpoint (e.g. other prior) evaluated with the first sampler")
    parser.add_argument("--refiners", default="",
                        help="comma-separated checkpoints of the refiner recipe (one per training seed): writes the "
                             "refiner section of --out, with the recipe's sampler")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.chdir(ROOT)
    if args.refiners:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from _doc import write_section

        text = refiner_section(args.refiners.split(","), args.recipe, args.clips, args.train_note)
        write_section(ROOT / args.out, "audio-refine", text)
        print(text)
        print(f"written to {args.out}\nreproduce with: {text.split(chr(10))[2]}")
        return

    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    step = ckpt.get("global_step")
    rows, gl, extra = [], None, None
    specs = [parse_spec(spec) for spec in args.samplers.split(",")]
    for spec in specs:
        res = evaluate(args.ckpt, args.recipe, *spec[:3], args.clips, *spec[3:])
        m, extra = res["metrics"], res
        rows.append(row_of(label_of(*spec), m))
        gl = (m["griffinlim_logmel_l1"], m["griffinlim_mrstft"], m["griffinlim_si_sdr"], m["griffinlim_periodicity"],
              m["griffinlim_rtf"])
        print(rows[-1], flush=True)
    for item in args.compare:
        label, path = item.split("=", 1)
        other = torch.load(path, map_location="cpu", weights_only=True)
        m = evaluate(path, args.recipe, *specs[0][:3], args.clips, *specs[0][3:])["metrics"]
        rows.append(row_of(f"{label} ({other.get('global_step')} training steps), {specs[0][0]}, {specs[0][1]} steps", m))
        print(rows[-1], flush=True)
    if args.floors:
        for spec in specs:
            if spec[3] != "none":
                m = evaluate(args.ckpt, args.recipe, *spec[:3], args.clips, *spec[3:], untrained=True)["metrics"]
                rows.append(row_of("control: " + label_of(*spec) + ", untrained network (eps = 0)", m))
                print(rows[-1], flush=True)
        rows += floors(args.ckpt, args.recipe, args.clips)
    png = write_heldout_sample(args.ckpt, args.recipe, ROOT / "benchmarks/out/audio")

    cmd_bench = f"python benchmarks/audio_vocoder.py --ckpt {args.ckpt} --clips {args.clips}" + "".join(
        f" --compare '{c}'" for c in args.compare) + (" --floors" if args.floors else "") + (
        f" --samplers {args.samplers}" if args.samplers != parser.get_default("samplers") else "")
    lines = [
        "## Audio vocoder (DiffWave-style) vs Griffin-Lim",
        "",
        f"Held-out clips of the embedded espeak-ng corpus: {extra['clips']} clips, {extra['audio_seconds']:.1f} s at "
        "16 kHz (fixed centred crops of clips never seen in training). Lower is better for log-mel L1 and "
        "multi-resolution STFT distance, higher for SI-SDR; real-time factor = CPU wall time / audio duration "
        f"({extra['torch_threads']} torch thread, machine shared with other jobs, so RTFs are upper bounds).",
        "",
        "| method | log-mel L1 | MR-STFT | SI-SDR (dB) | periodicity error | real-time factor |",
        "|---|---|---|---|---|---|",
    ]
    for label, l1, mr, sdr, per, rtf in rows:
        lines.append(f"| {label} | {l1:.3f} | {mr:.3f} | {sdr:.2f} | {per:.3f} | "
                     f"{'-' if rtf != rtf else f'{rtf:.3f}'} |")
    lines.append(f"| Griffin-Lim, 32 iterations, same mel | {gl[0]:.3f} | {gl[1]:.3f} | {gl[2]:.2f} | {gl[3]:.3f} | "
                 f"{gl[4]:.3f} |")
    lines += [""] + verdicts(rows, specs, gl)
    curve = validation_curve(Path(args.ckpt))
    if curve:
        lines += ["", "Learning curve (validation log-mel L1 of the default sampler on 4 validation clips, EMA weights):",
                  "", "| step | " + " | ".join(str(s) for s, _ in curve) + " |",
                  "|---|" + "---|" * len(curve), "| log-mel L1 | " + " | ".join(f"{v:.3f}" for _, v in curve) + " |"]
    lines += [
        "",
        f"Checkpoint: `{args.ckpt}` after {step} training steps. {args.train_note}".rstrip(),
        "",
        "Reproduce:",
        "",
        "```",
        f"nice -n 10 polydiff fit --config {args.recipe}",
        f"polydiff test --config {args.recipe} --ckpt_path {args.ckpt}   # the recipe's sampler (dpmpp_2m, 6 steps)",
        cmd_bench,
        "```",
        "",
        f"Spectrogram comparison of one held-out clip (input / vocoder / Griffin-Lim): `{png.relative_to(ROOT)}` "
        "(written by `polydiff sample ... --input heldout.wav`).",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {cpu_name()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, no GPU.",
        "",
    ]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _doc import write_section

    out = ROOT / args.out
    write_section(out, "audio-diffwave", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {out}\nreproduce with: {cmd_bench}")


if __name__ == "__main__":
    main()
