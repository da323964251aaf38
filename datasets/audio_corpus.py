"""The embedded speech corpus of the audio domain, generated offline and cached on disk.

Real speech clips are rare in Python wheels and nothing may be downloaded at run time, so polydiff makes its own:
Debian's ``espeak-ng`` speaks English sentences (taken from the Python documentation shipped with CPython,
``pydoc_data.topics``) in several voices, speeds and pitches; the WAVs are resampled to the configured rate with torchaudio
and written as FLAC files plus a ``manifest.json``. When ``espeak-ng`` is not installed, a synthetic fallback writes voiced
signals instead: a harmonic source with a gliding pitch, shaped by three formant resonances and a syllable envelope, with
pauses, so that a vocoder still sees speech-like spectra (the manifest says which kind was made).

Generation is deterministic for a given seed, count and sample rate; a finished corpus is reused.
"""

import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from polydiff.core.utils import PolydiffError

#: espeak-ng voices (language + variant): male and female, several accents
VOICES = ("en-us", "en-us+f2", "en-gb+m3", "en-us+f4", "en-gb-scotland+m1", "en-029+f3", "en-gb-x-rp+m7",
          "en-us+f5")
CORPUS_VERSION = 2


def default_data_dir() -> Path:
    """``$POLYDIFF_DATA_DIR`` or ``~/.cache/polydiff`` (never inside the repository)."""
    import os

    return Path(os.environ.get("POLYDIFF_DATA_DIR", Path.home() / ".cache" / "polydiff"))


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def corpus_sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct English utterances: sentences of 3-20 plain words from ``pydoc_data.topics`` (shipped with
    CPython), then, when more are asked for, lists of 2-6 words drawn from the same text."""
    from pydoc_data.topics import topics

    text = " ".join(topics.values())
    found: list[str] = []
    seen = set()
    for sent in re.split(r"(?<=[.!?])\s+", text):
        sent = " ".join(sent.split())
        words = sent.rstrip(".!?").split(" ")
        if not 3 <= len(words) <= 20 or not all(re.fullmatch(r"[A-Za-z,;:'()-]+", w) for w in words):
            continue
        if sent.lower() in seen:
            continue
        seen.add(sent.lower())
        found.append(sent)
    rng = np.random.default_rng(seed)
    found = [found[i] for i in rng.permutation(len(found))]
    vocab = sorted({w.lower() for w in re.findall(r"\b[A-Za-z]{3,12}\b", text)})
    while len(found) < n:
        found.append(" ".join(vocab[i] for i in rng.integers(0, len(vocab), int(rng.integers(2, 7)))))
    return found[:n]


def _resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return wave.astype(np.float32)
    return AF.resample(torch.from_numpy(wave.astype(np.float32)), sr_in, sr_out).numpy()


def speak(text: str, voice: str, speed: int, pitch: int, sample_rate: int) -> np.ndarray:
    """One utterance by espeak-ng as float32 mono at ``sample_rate`` (espeak-ng itself speaks at 22050 Hz)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "u.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if res.returncode != 0 or not wav.is_file():
            raise PolydiffError(f"espeak-ng failed for voice {voice!r}: {res.stderr.strip()}; reinstall espeak-ng "
                                "(apt-get install espeak-ng)")
        x, sr = sf.read(wav, dtype="float32", always_2d=True)
    return _resample(x.mean(1), sr, sample_rate)


def synthetic_utterance(rng: np.random.Generator, sample_rate: int, seconds: float) -> np.ndarray:
    """A voiced, speech-like signal: harmonics of a gliding f0 through three formant resonances, in syllables.

    Source-filter model of vowels (Fant 1960): the spectrum of each harmonic k f0 is weighted by a sum of resonances
    ``1 / (1 + ((f - F_i) / B_i)^2)`` at formants F1..F3 that move from syllable to syllable.
    """
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(90, 240) * (1 + 0.15 * np.sin(2 * math.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 6)))
    phase = 2 * math.pi * np.cumsum(f0) / sample_rate
    syl = rng.uniform(0.12, 0.3)
    n_syl = int(seconds / syl) + 1
    formants = np.stack([rng.uniform(300, 900, n_syl), rng.uniform(900, 2400, n_syl), rng.uniform(2400, 3400, n_syl)], 1)
    idx = np.minimum((t / syl).astype(int), n_syl - 1)
    frm = formants[idx]
    # syllable envelope: raised sine per syllable, some syllables silent (pauses)
    voiced = rng.uniform(size=n_syl) > 0.2
    env = np.sin(math.pi * ((t / syl) % 1.0)) ** 2 * voiced[idx]
    out = np.zeros(n)
    for k in range(1, int(sample_rate / 2 / 90)):
        fk = k * f0
        amp = sum(1.0 / (1 + ((fk - frm[:, i]) / (60 + 40 * i)) ** 2) for i in range(3)) / k**0.5
        amp = amp * (fk < sample_rate / 2 - 200)
        out += amp * np.sin(k * phase)
    out = out * env + 0.003 * rng.standard_normal(n) * env
    return (0.3 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def build_corpus(out_dir: str | Path, num_utterances: int = 400, sample_rate: int = 16000, seed: int = 0,
                 kind: str = "auto") -> Path:
    """Write (or reuse) the embedded corpus in ``out_dir``; return the manifest path.

    Args:
        out_dir: cache folder (created).
        num_utterances: number of clips.
        sample_rate: rate of the written FLAC files.
        seed: seed of sentence, voice, speed and pitch choices.
        kind: ``espeak`` (error if missing), ``synthetic``, or ``auto`` (espeak-ng when installed, else synthetic).
    """
    if kind == "auto":
        kind = "espeak" if espeak_available() else "synthetic"
    if kind == "espeak" and not espeak_available():
        raise PolydiffError("espeak-ng is not installed: install it (apt-get install espeak-ng, or 'make install' as "
                            "root) or set --data.corpus synthetic")
    out = Path(out_dir) / f"{kind}_{sample_rate}hz_n{num_utterances}_seed{seed}_v{CORPUS_VERSION}"
    manifest = out / "manifest.json"
    if manifest.is_file():
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    texts = corpus_sentences(num_utterances, seed) if kind == "espeak" else [""] * num_utterances
    items = []
    for i, text in enumerate(texts):
        voice = VOICES[i % len(VOICES)]
        speed, pitch = int(rng.integers(130, 191)), int(rng.integers(30, 71))
        if kind == "espeak":
            wave = speak(text, voice, speed, pitch, sample_rate)
        else:
            wave = synthetic_utterance(rng, sample_rate, float(rng.uniform(1.5, 3.5)))
        path = out / f"utt{i:04d}.flac"
        sf.write(path, wave, sample_rate, subtype="PCM_16")
        items.append({"file": path.name, "text": text, "voice": voice if kind == "espeak" else "synthetic",
                      "speed": speed, "pitch": pitch, "seconds": round(len(wave) / sample_rate, 3)})
    # written last: a manifest means the corpus is complete
    manifest.write_text(json.dumps({"kind": kind, "sample_rate": sample_rate, "items": items}, indent=1))
    return manifest
