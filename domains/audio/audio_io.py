"""Reading and writing audio with soundfile (torchaudio's own load/save need torchcodec), resampling with torchaudio."""

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from polydiff.core.utils import PolydiffError

#: file endings read as audio
AUDIO_SUFFIXES = (".wav", ".flac")


def read_audio(path: str | Path, sample_rate: int, downmix: bool = False) -> Tensor:
    """A mono float32 waveform ``[samples]`` at ``sample_rate`` from a WAV or FLAC file.

    Args:
        path: the file.
        sample_rate: rate to resample to (torchaudio's band-limited sinc resampler).
        downmix: average the channels of a multi-channel file; when False such a file is an error.
    """
    p = Path(path)
    if not p.is_file():
        raise PolydiffError(f"audio file {p} does not exist; pass a WAV or FLAC file")
    try:
        x, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types for the same user problem
        raise PolydiffError(f"audio file {p} cannot be read ({type(exc).__name__}: {exc}); convert it to 16-bit WAV "
                            "or FLAC, or remove it from the folder") from None
    if x.shape[1] > 1 and not downmix:
        raise PolydiffError(f"audio file {p} has {x.shape[1]} channels but the vocoder is mono; convert it to mono "
                            "or set --data.downmix true (averages the channels)")
    if x.shape[0] == 0:
        raise PolydiffError(f"audio file {p} is empty; remove it from the folder")
    wave = torch.from_numpy(np.ascontiguousarray(x.mean(1)))
    if not torch.isfinite(wave).all():
        raise PolydiffError(f"audio file {p} contains NaN or inf samples; re-export it")
    if sr != sample_rate:
        wave = AF.resample(wave, int(sr), int(sample_rate))
    return wave.float()


def write_audio(path: str | Path, wave: Tensor, sample_rate: int) -> Path:
    """Write a mono waveform (clipped to [-1, 1]) as 16-bit PCM WAV."""
    p = Path(path)
    sf.write(str(p), wave.detach().float().clamp(-1, 1).cpu().numpy().reshape(-1), int(sample_rate), subtype="PCM_16")
    return p
