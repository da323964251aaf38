"""Audio data: your own folder of WAV/FLAC files (reading, resampling, split, clear errors) and the embedded corpus."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.core.utils import PolydiffError
from polydiff.datasets.audio import SpeechDataModule
from polydiff.datasets.audio_corpus import build_corpus, espeak_available, synthetic_utterance
from polydiff.datasets.readers.audio import read_audio

torch.set_num_threads(1)


def write_tone(path, seconds=1.0, sr=16000, freq=300.0, channels=1, subtype="PCM_16"):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * math.pi * freq * t)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr, subtype=subtype)


def folder(tmp_path, n=5, **kw):
    root = tmp_path / "rec"
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        write_tone(root / ("sub" if i % 2 else "") / f"clip{i}.{'flac' if i % 2 else 'wav'}", freq=200.0 + 50 * i, **kw)
    return root


def module(root, **kw):
    args = dict(root=str(root), crop_samples=2048, eval_samples=4096, batch_size=2, crops_per_epoch=6)
    args.update(kw)
    return SpeechDataModule(**args)


def test_own_folder_split_crops_and_resampling(tmp_path):
    root = folder(tmp_path, n=6, sr=8000)  # 8 kHz files are resampled to 16 kHz
    dm = module(root, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"test": 1, "val": 1, "train": 4}
    assert all(len(w) == 16000 for v in dm.splits.values() for w in v)
    # the resampled 200 Hz tone keeps its frequency: zero crossings per second
    w = read_audio(root / "clip0.wav", 16000)
    crossings = int(((w[:-1] < 0) & (w[1:] >= 0)).sum())
    assert abs(crossings - 200) <= 2
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (2, 1, 2048)
    val = next(iter(dm.val_dataloader()))
    assert val.shape == (1, 1, 4096)
    # fixed centred crops: the same batch twice
    assert torch.equal(val, next(iter(dm.val_dataloader())))


def test_clear_errors_for_bad_files(tmp_path):
    root = folder(tmp_path, n=3)
    (root / "broken.wav").write_bytes(b"RIFF0000WAVEnot really audio")
    with pytest.raises(PolydiffError, match=r"broken\.wav cannot be read.*convert it"):
        module(root).setup()
    (root / "broken.wav").unlink()
    write_tone(root / "short.wav", seconds=0.1)
    with pytest.raises(PolydiffError, match=r"short\.wav has 1600 samples.*crop_samples"):
        module(root).setup()
    (root / "short.wav").unlink()
    write_tone(root / "stereo.flac", channels=2)
    with pytest.raises(PolydiffError, match=r"stereo\.flac has 2 channels.*--data.downmix true"):
        module(root).setup()
    dm = module(root, downmix=True)
    dm.setup()
    assert sum(len(v) for v in dm.splits.values()) == 4


def test_folder_errors(tmp_path):
    with pytest.raises(PolydiffError, match="is not a folder"):
        module(tmp_path / "missing").setup()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PolydiffError, match="holds 0 WAV/FLAC files"):
        module(empty).setup()


def test_synthetic_corpus_is_voiced_and_cached(tmp_path):
    manifest = build_corpus(tmp_path, num_utterances=3, sample_rate=16000, seed=0, kind="synthetic")
    items = json.loads(manifest.read_text())["items"]
    assert len(items) == 3
    x, sr = sf.read(manifest.parent / items[0]["file"])
    assert sr == 16000 and np.abs(x).max() <= 0.31
    # voiced: low spectral flatness (geometric / arithmetic mean of the power spectrum; white noise: ~0.56)
    def flatness(sig):
        frames = np.stack([sig[i:i + 1024] * np.hanning(1024) for i in range(0, len(sig) - 1024, 512)])
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
        return float(np.median(np.exp(np.log(power).mean(1)) / power.mean(1)))
    assert flatness(x) < 0.1 < flatness(np.random.default_rng(0).standard_normal(len(x)))
    # cached: a second call returns the same manifest without writing anything again
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert build_corpus(tmp_path, num_utterances=3, sample_rate=16000, seed=0, kind="synthetic") == manifest
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == written
    rng = np.random.default_rng(0)
    assert synthetic_utterance(rng, 16000, 0.5).shape == (8000,)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed")
def test_espeak_corpus(tmp_path):
    manifest = build_corpus(tmp_path, num_utterances=2, sample_rate=16000, seed=0, kind="espeak")
    meta = json.loads(manifest.read_text())
    assert meta["kind"] == "espeak" and len({it["voice"] for it in meta["items"]}) == 2
    x, sr = sf.read(manifest.parent / meta["items"][0]["file"])
    assert sr == 16000 and len(x) > 8000 and 0.01 < x.std() < 0.5
