"""Speech for the audio vocoder: the embedded espeak-ng corpus, or your own folder of WAV/FLAC recordings.

Batches are mono waveform crops ``[B, 1, samples]`` in [-1, 1]; the model computes its mel features itself. Training
draws random crops (a random clip, a random offset); validation and test use one fixed centred crop per held-out clip,
so their figures are comparable between runs. The split is by whole clips, fixed by ``seed``; with ``holdout_voices``
it is by voice: every clip of those voices is a test clip (a vocoder evaluated on voices it never heard), validation
takes ``val_fraction`` of the other voices' clips. The voice of a clip is the speaker that the embedded corpus records in
its manifest, or for your own recordings the folder that holds the file (``root/<voice>/*.wav``).

Your own recordings: ``--data.root /path/to/folder`` reads every ``*.wav`` / ``*.flac`` below the folder with soundfile
and resamples it to ``sample_rate`` with torchaudio. Unreadable files, clips shorter than a crop, and multi-channel files
(unless ``--data.downmix true``) stop with an error that names the file and the fix.
"""

from pathlib import Path
from typing import Any, Literal, Optional

import lightning as L
import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from polydiff.core.utils import PolydiffError
from polydiff.datasets.audio_corpus import build_corpus, default_data_dir
from polydiff.datasets.readers.audio import AUDIO_SUFFIXES, read_audio, read_log_mel
from polydiff.datasets.splits import evaluation_sampler


class RandomCrops(Dataset):
    """``length`` random crops of ``crop`` samples from a list of waveforms (clip chosen in proportion to its length)."""

    def __init__(self, waves: list[Tensor], crop: int, length: int) -> None:
        self.waves, self.crop, self.length = waves, crop, length
        lengths = torch.tensor([len(w) - crop + 1 for w in waves], dtype=torch.float64)
        self.weights = lengths / lengths.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Tensor:
        w = self.waves[int(torch.multinomial(self.weights, 1))]
        start = int(torch.randint(0, len(w) - self.crop + 1, (1,)))
        return w[start:start + self.crop][None]


class FixedCrops(Dataset):
    """One centred crop of ``crop`` samples per waveform."""

    def __init__(self, waves: list[Tensor], crop: int) -> None:
        self.waves, self.crop = waves, crop

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> Tensor:
        w = self.waves[i]
        start = (len(w) - self.crop) // 2
        return w[start:start + self.crop][None]


class SpeechDataModule(L.LightningDataModule):
    """Mono speech crops for vocoder training and evaluation.

    Args:
        root: folder of your own WAV/FLAC recordings (searched recursively); None uses the embedded corpus.
        corpus: embedded corpus: espeak (espeak-ng speech), synthetic (voiced harmonic signals), auto (espeak-ng when
            installed, else synthetic).
        num_utterances: clips in the embedded corpus.
        data_dir: cache folder of the embedded corpus (default: $POLYDIFF_DATA_DIR or ~/.cache/polydiff).
        sample_rate: rate every file is resampled to; must equal the model's sample_rate.
        crop_samples: length of the random training crops.
        eval_samples: length of the fixed validation / test crops.
        crops_per_epoch: training crops per epoch.
        batch_size: crops per batch.
        val_fraction: share of clips held out for validation.
        test_fraction: share of clips held out for ``polydiff test``.
        max_eval_clips: at most this many validation and test clips (bounds evaluation time).
        holdout_voices: voices whose clips are the test set and never trained on (None: split by clip); the embedded
            corpus speaks en-us, en-us+f2, en-gb+m3, en-us+f4, en-gb-scotland+m1, en-029+f3, en-gb-x-rp+m7, en-us+f5;
            for ``root`` the voice is the name of the folder holding the file.
        downmix: average the channels of multi-channel files (when False they are an error).
        seed: seed of the split and of the embedded corpus.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        root: Optional[str] = None,
        corpus: Literal["auto", "espeak", "synthetic"] = "auto",
        num_utterances: int = 400,
        data_dir: Optional[str] = None,
        sample_rate: int = 16000,
        crop_samples: int = 8192,
        eval_samples: int = 16384,
        crops_per_epoch: int = 2000,
        batch_size: PositiveInt = 8,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        max_eval_clips: int = 32,
        holdout_voices: Optional[list[str]] = None,
        downmix: bool = False,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if crop_samples < 1 or eval_samples < 1:
            raise PolydiffError("crop_samples and eval_samples must be positive")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise PolydiffError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in (0, 1) and "
                                "sum to less than 1")
        self.root, self.corpus, self.num_utterances = root, corpus, num_utterances
        self.data_dir = data_dir
        self.sample_rate, self.crop_samples, self.eval_samples = sample_rate, crop_samples, eval_samples
        self.crops_per_epoch, self.batch_size = crops_per_epoch, batch_size
        self.val_fraction, self.test_fraction, self.max_eval_clips = val_fraction, test_fraction, max_eval_clips
        self.holdout_voices = list(holdout_voices) if holdout_voices else None
        self.downmix, self.seed, self.num_workers = downmix, seed, num_workers
        self.save_hyperparameters()  # checkpoints (and exports) name the data a model was trained on
        self.splits: Optional[dict[str, list[Tensor]]] = None
        self.files: list[Path] = []
        self.voices: list[str] = []

    # ------------------------------------------------------------------ loading
    def prepare_data(self) -> None:
        """Generate the embedded corpus once, on one process per node (Lightning calls this before ``setup``);
        ``setup`` on every process then finds it cached."""
        if self.root is None:
            self._build_corpus()

    def _build_corpus(self) -> Path:
        return build_corpus(Path(self.data_dir) if self.data_dir else default_data_dir() / "audio",
                            self.num_utterances, self.sample_rate, self.seed, self.corpus)

    def audio_files(self) -> list[Path]:
        """The files to read: your folder's WAV/FLAC files, or the embedded corpus (generated on first use)."""
        return [f for f, _ in self.audio_files_and_voices()]

    def audio_files_and_voices(self) -> list[tuple[Path, str]]:
        """``(file, voice)`` pairs: the embedded corpus's manifest names each clip's voice; in your folder the voice is
        the folder holding the file, relative to ``root`` (empty for files directly in it)."""
        if self.root is None:
            manifest = self._build_corpus()  # cached by prepare_data: this only reads the manifest
            import json

            return [(manifest.parent / it["file"], it["voice"]) for it in json.loads(manifest.read_text())["items"]]
        root = Path(self.root)
        files = self._root_files(root)
        folders = [f.parent.relative_to(root).as_posix() for f in files]
        return [(f, "" if v == "." else v) for f, v in zip(files, folders)]

    def _root_files(self, root: Path) -> list[Path]:
        if not root.is_dir():
            raise PolydiffError(f"--data.root {root} is not a folder; pass a folder of WAV or FLAC files")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if len(files) < 3:
            raise PolydiffError(f"--data.root {root} holds {len(files)} WAV/FLAC files; at least 3 are needed (train, "
                                "validation and test clips): add recordings or cut long ones into several files")
        return files

    def load_waves(self, files: list[Path]) -> list[Tensor]:
        need = max(self.crop_samples, self.eval_samples)
        waves = []
        for f in files:
            w = read_audio(f, self.sample_rate, self.downmix)
            if len(w) < need:
                raise PolydiffError(
                    f"audio file {f} has {len(w)} samples at {self.sample_rate} Hz, shorter than a crop of {need}; "
                    f"remove it or lower --data.crop_samples / --data.eval_samples")
            waves.append(w.clamp(-1, 1))
        return waves

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits is not None:
            return
        pairs = self.audio_files_and_voices()
        self.files, self.voices = [f for f, _ in pairs], [v for _, v in pairs]
        waves = self.load_waves(self.files)
        n = len(waves)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        pick = lambda idx: [waves[i] for i in idx]  # noqa: E731
        if self.holdout_voices:
            test, rest = self.split_by_voice(perm)
            n_val = max(1, round(len(rest) * self.val_fraction))
            self.splits = {"test": pick(test[:self.max_eval_clips]), "val": pick(rest[:n_val][:self.max_eval_clips]),
                           "train": pick(rest[n_val:])}
            return
        n_test = max(1, round(n * self.test_fraction))
        n_val = max(1, round(n * self.val_fraction))
        self.splits = {"test": pick(perm[:n_test][:self.max_eval_clips]),
                       "val": pick(perm[n_test:n_test + n_val][:self.max_eval_clips]),
                       "train": pick(perm[n_test + n_val:])}

    def split_by_voice(self, perm: list[int]) -> tuple[list[int], list[int]]:
        """Clip indices (in the seeded order ``perm``) of the held-out voices and of the others."""
        known = sorted(set(self.voices))
        missing = [v for v in self.holdout_voices or [] if v not in known]
        if missing:
            raise PolydiffError(f"--data.holdout_voices {missing} are not voices of the data; its voices are {known} "
                                "(for --data.root: the folders holding the files)")
        test = [i for i in perm if self.voices[i] in self.holdout_voices]
        rest = [i for i in perm if self.voices[i] not in self.holdout_voices]
        if len(rest) < 2:
            raise PolydiffError(f"--data.holdout_voices {self.holdout_voices} leaves {len(rest)} clips of other voices; "
                                "training and validation need at least 2: hold out fewer voices")
        return test, rest

    def read_input(self, input: str, sample_rate: Optional[int] = None) -> dict[str, Any]:
        """``polydiff sample --input``: a WAV/FLAC recording (mono, or downmixed with ``--data.downmix true``, resampled
        to the model's ``sample_rate``, default the data's) or a log-mel ``.npy``, as ``{"name", "sample_rate", "wave"
        [samples] or "log_mel" [n_mels, frames]}``."""
        rate = sample_rate or self.sample_rate
        p = Path(input)
        name = p.name.split(".")[0]
        if p.suffix.lower() == ".npy":
            return {"name": name, "sample_rate": rate, "log_mel": read_log_mel(p), "path": str(p)}
        if p.suffix.lower() not in AUDIO_SUFFIXES:
            raise PolydiffError(f"--input {p} is neither audio ({', '.join(AUDIO_SUFFIXES)}) nor a log-mel (.npy)")
        # the same rule as training: several channels only with --data.downmix true
        return {"name": name, "sample_rate": rate, "wave": read_audio(p, rate, downmix=self.downmix), "path": str(p)}

    # ------------------------------------------------------------------ loaders
    def _loader(self, ds: Dataset, shuffle: bool = False, sampler=None) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler,
                          num_workers=self.num_workers,
                          drop_last=False, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        assert self.splits is not None
        return self._loader(RandomCrops(self.splits["train"], self.crop_samples, self.crops_per_epoch))

    def val_dataloader(self) -> DataLoader:
        assert self.splits is not None
        return self._loader(FixedCrops(self.splits["val"], self.eval_samples))

    def test_dataloader(self) -> DataLoader:
        assert self.splits is not None
        ds = FixedCrops(self.splits["test"], self.eval_samples)
        return self._loader(ds, sampler=evaluation_sampler(ds))

    def predict_dataloader(self) -> DataLoader:
        """``polydiff predict`` re-synthesises the held-out clips."""
        assert self.splits is not None
        return self._loader(FixedCrops(self.splits["test"], self.eval_samples))
