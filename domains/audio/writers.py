"""Files the vocoder writes for ``polydiff sample --input``: the re-synthesised WAV, the log-mel it vocoded and a
spectrogram comparison with Griffin-Lim; and the Markdown table ``polydiff test`` prints."""

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from torch import Tensor

from polydiff.core.sampling import SamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.audio.audio_io import write_audio
from polydiff.domains.audio.metrics import log_mel_l1, pesq_wb
from polydiff.domains.audio.plots import save_spectrograms


def input_mel(model: Any, input: dict[str, Any]) -> tuple[Tensor, Optional[Tensor], str]:
    """``(mel_norm [1, n_mels, F], reference wave or None, name)`` from what the DataModule read for ``polydiff
    sample --input``: a recording (``wave`` at ``sample_rate``) or a log-mel (``log_mel [n_mels, frames]``, the
    natural-log magnitude mel computed with this model's settings)."""
    name, path = input["name"], input.get("path", input["name"])
    if int(input["sample_rate"]) != model.features.sample_rate:
        raise PolydiffError(f"--input {path} was read at {input['sample_rate']} Hz but the model works at "
                            f"{model.features.sample_rate} Hz; set --data.sample_rate {model.features.sample_rate}")
    if input.get("log_mel") is not None:
        log_mel = input["log_mel"]
        n_mels = model.features.n_mels
        if log_mel.shape[0] != n_mels:
            raise PolydiffError(f"mel file {path} has shape {tuple(log_mel.shape)}; expected [{n_mels}, frames >= 2] "
                                f"natural-log magnitude mels (sample_rate={model.features.sample_rate}, hop_length="
                                f"{model.features.hop_length}), e.g. the <name>.mel.npy written by polydiff sample")
        return model.features.normalise(log_mel[None]), None, name
    wave = input["wave"]
    if wave.numel() < model.features.n_fft:
        raise PolydiffError(f"audio file {path} has {wave.numel()} samples, fewer than n_fft={model.features.n_fft}")
    wave = wave[None, None]
    return model.features(wave), wave, name


def write_samples(model: Any, out_dir: Path, num_samples: int, sampler: SamplerConfig, seed: int,
                  input: Optional[dict[str, Any]] = None) -> list[Path]:
    """Re-synthesise ``input`` (a WAV/FLAC or log-mel .npy, read by the DataModule): writes ``<name>.wav``,
    ``<name>.mel.npy`` (the mel that was
    vocoded) and ``<name>_spectrograms.png`` (reference, vocoder and Griffin-Lim log-mels)."""
    if input is None:
        raise PolydiffError("the audio vocoder re-synthesises a recording: pass --input FILE.wav (or a log-mel .npy)")
    mel, ref, name = input_mel(model, input)
    mel = mel.to(model.device)
    samples = (mel.shape[-1] - 1) * model.features.hop_length
    t0 = time.perf_counter()
    wave = model.vocode(mel, samples, sampler, seed)
    rtf = (time.perf_counter() - t0) / (samples / model.features.sample_rate)
    out_dir = Path(out_dir)
    paths = [write_audio(out_dir / f"{name}.wav", wave[0], model.features.sample_rate)]
    npy = out_dir / f"{name}.mel.npy"
    np.save(npy, model.features.denormalise(mel)[0].cpu().numpy())
    paths.append(npy)
    gl = model.griffin_lim(mel, samples)
    panels = [("input" if ref is not None else "input mel (.npy)", model.features.denormalise(mel)[0]),
              (model.describe(sampler), model.features.log_mel(wave)[0]),
              (f"griffin-lim ({model.griffin_lim_iters} iterations)", model.features.log_mel(gl)[0])]
    paths.append(save_spectrograms(out_dir / f"{name}_spectrograms.png", panels, model.features.sample_rate,
                                   model.features.hop_length))
    msg = f"vocoded {samples / model.features.sample_rate:.2f} s at real-time factor {rtf:.2f}"
    if ref is not None:
        ref = ref[..., :samples].to(wave.device)
        msg += (f"; log-mel L1 vs input: vocoder {float(log_mel_l1(model.features, ref, wave)):.3f}, "
                f"Griffin-Lim {float(log_mel_l1(model.features, ref, gl)):.3f}")
        try:
            rate = model.features.sample_rate
            msg += (f"; PESQ wb: vocoder {float(pesq_wb(ref, wave, rate)):.2f}, Griffin-Lim "
                    f"{float(pesq_wb(ref, gl, rate)):.2f}")
        except PolydiffError:  # PESQ refuses clips without detectable speech (silence): skip the figure
            msg += "; no PESQ (no speech detected in the input)"
    print(msg)
    return paths


def format_table(metrics: dict[str, float], label: str) -> str:
    """Markdown table: the vocoder, the identical pipeline with a zeroed network, and Griffin-Lim."""
    lines = ["| method | log-mel L1 (lower) | MR-STFT (lower) | SI-SDR dB (higher) | periodicity error (lower) | "
             "PESQ wb (higher) | STOI (higher) | real-time factor |", "|---|---|---|---|---|---|---|---|"]
    for name, row in (("diffwave", label), ("zeroed", f"control: {label}, zeroed network"),
                      ("griffinlim", "Griffin-Lim, 32 iterations")):
        lines.append(f"| {row} | {metrics[f'{name}_logmel_l1']:.3f} | {metrics[f'{name}_mrstft']:.3f} | "
                     f"{metrics[f'{name}_si_sdr']:.2f} | {metrics[f'{name}_periodicity']:.3f} | "
                     f"{metrics[f'{name}_pesq']:.3f} | {metrics[f'{name}_stoi']:.3f} | {metrics[f'{name}_rtf']:.3f} |")
    return "\n".join(lines)


def write_predictions(model: Any, waves: Tensor, batch: Any, out_dir: Path, prefix: str) -> list[Path]:
    """``polydiff predict``: each re-synthesised clip as ``<prefix>_003.wav`` at the model's sample rate."""
    rate = model.features.sample_rate
    return [write_audio(out_dir / f"{prefix}_{i:03d}.wav", w, rate) for i, w in enumerate(waves)]
