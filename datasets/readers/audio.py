"""Reading audio with soundfile (torchaudio's own load needs torchcodec), resampling with torchaudio, and reading the
log-mel ``.npy`` files a vocoder re-synthesises. Writing audio is the audio domain's
(:mod:`polydiff.domains.audio.audio_io`)."""

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


def read_log_mel(path: str | Path) -> Tensor:
    """A natural-log magnitude mel ``[n_mels, frames]`` (float32) from a ``.npy`` file (``[1, n_mels, frames]`` also
    accepted), e.g. the ``<name>.mel.npy`` that ``polydiff sample`` writes beside each vocoded WAV."""
    p = Path(path)
    if not p.is_file():
        raise PolydiffError(f"mel file {p} does not exist; pass a WAV/FLAC or a .npy log-mel")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any numpy failure means the file is not a plain array
        raise PolydiffError(f"mel file {p} cannot be read ({type(exc).__name__}: {exc}); save it with "
                            "numpy.save") from None
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise PolydiffError(f"mel file {p} has shape {arr.shape}; expected [n_mels, frames >= 2] natural-log "
                            "magnitude mels, e.g. the <name>.mel.npy written by polydiff sample")
    if not np.isfinite(arr).all():
        raise PolydiffError(f"mel file {p} contains NaN or inf values")
    return torch.from_numpy(arr.astype(np.float32))
