"""Writing audio with soundfile (reading the user's audio is the data's job: :mod:`polydiff.datasets.readers.audio`)."""

from pathlib import Path

import soundfile as sf
from torch import Tensor


def write_audio(path: str | Path, wave: Tensor, sample_rate: int) -> Path:
    """Write a mono waveform (clipped to [-1, 1]) as 16-bit PCM WAV."""
    p = Path(path)
    sf.write(str(p), wave.detach().float().clamp(-1, 1).cpu().numpy().reshape(-1), int(sample_rate), subtype="PCM_16")
    return p
