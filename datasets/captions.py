"""Captioned images for text-conditioned diffusion: generated captions of scikit-learn's digits (one digit, or two
digits side by side with their order in words), and your own image folder with a ``metadata.csv`` / ``metadata.jsonl``
of ``file_name`` and ``text`` (the layout users know from image-folder datasets).

Batches are ``(images [B, C, H, W] in [-1, 1], captions: list[str])``. The text-conditioned image model trains its
tokenizer on :meth:`CaptionedImageDataModule.split_captions` of the train split and evaluates prompt accuracy with the
per-position digits of the test split (``digits``: ``[N, 2]``, -1 where a position holds none).
"""

import csv
import json
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from polydiff.core.utils import PolydiffError, training_seed
from polydiff.datasets.image_tensors import ImageTensorDataModule, split_indices
from polydiff.datasets.readers.image import list_images, read_image

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
#: wordings of a single digit ({a}: the digit as a numeral or a word)
SINGLE = ["a {a}", "the digit {a}", "a handwritten {a}", "the number {a}", "digit {a}", "one {a} alone",
          "a single {a}", "{a}"]
#: wordings of two digits, {a} on the left and {b} on the right
PAIR = ["a {a} to the left of a {b}", "a {b} to the right of a {a}", "{a} then {b}", "{a} and {b} from left to right",
        "on the left a {a}, on the right a {b}", "a {b} on the right and a {a} on the left", "{a} left, {b} right",
        "{b} right of {a}"]


class CaptionedImages(Dataset):
    def __init__(self, images: Tensor, captions: list[str]) -> None:
        self.images, self.captions = images, captions

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        return self.images[i], self.captions[i]


class CaptionedImageDataModule(ImageTensorDataModule):
    """Base of the captioned DataModules: subclasses implement :meth:`build` (images, captions and digits of a split)."""

    num_classes = 0

    def build(self) -> dict[str, tuple[Tensor, list[str], Tensor]]:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self._splits is not None:
            return
        self._captioned = self.build()
        self._splits = {k: (v[0], torch.full((len(v[0]),), -1, dtype=torch.long)) for k, v in self._captioned.items()}

    def split_captions(self, split: str) -> tuple[Tensor, list[str], Tensor]:
        """``(images [N, C, H, W] in [-1, 1], captions, digits [N, 2])`` of ``split`` (digits -1: unknown / none)."""
        self.setup()
        return self._captioned[split]

    def _loader(self, split: str, train: bool) -> DataLoader:
        images, captions, _ = self.split_captions(split)
        if len(images) == 0:
            raise PolydiffError(f"the {split} split is empty ({self.describe()}); add images or lower "
                                "--data.val_fraction / --data.test_fraction")
        ds = CaptionedImages(images, captions)
        sampler = self.train_sampler(len(ds), training_seed()) if train else None
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, drop_last=train and len(ds) > self.batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)


def single_caption(a: int, gen: torch.Generator) -> str:
    template = SINGLE[int(torch.randint(len(SINGLE), (1,), generator=gen))]
    return template.format(a=_name(a, gen))


def pair_caption(a: int, b: int, gen: torch.Generator) -> str:
    template = PAIR[int(torch.randint(len(PAIR), (1,), generator=gen))]
    return template.format(a=_name(a, gen), b=_name(b, gen))


def _name(d: int, gen: torch.Generator) -> str:
    """A digit as a numeral or as a word, at random: the model must read both."""
    return str(d) if bool(torch.rand((), generator=gen) < 0.5) else WORDS[d]


def pair_canvas(left: Tensor, right: Tensor, size: int) -> Tensor:
    """Two ``[1, 8, 8]`` digits side by side, each ``size / 2`` square, vertically centred on a ``size``-square canvas
    of background (-1)."""
    half = size // 2
    pair = torch.cat([F.interpolate(d[None], size=(half, half), mode="bilinear", align_corners=False)[0]
                      if half != d.shape[-1] else d for d in (left, right)], dim=-1)
    canvas = torch.full((1, size, size), -1.0)
    top = (size - half) // 2
    canvas[:, top:top + half] = pair
    return canvas


class CaptionedDigitsDataModule(CaptionedImageDataModule):
    """Captioned digits made from scikit-learn's 1797 real 8x8 digits (no download), on ``image_size``-square canvases:
    single digits upsampled to the canvas ("the digit 3", "a handwritten seven", ...) and pairs of digits at half
    size side by side ("a 3 to the left of a 5", "a five to the right of a three", ...), digits as numerals or words.
    Each split's canvases are made from that split's digits only.

    Args:
        pairs_per_digit: two-digit canvases per single-digit one (each pair drawn at random from the split's digits).
        batch_size: images per batch.
        image_size: canvas side (16: singles upsampled to 16x16, pairs at 8x8 each).
        val_fraction: share of the digits held out for validation.
        test_fraction: share held out for testing (the prompts and references of the evaluation).
        seed: seed of the split, the pairs and the wordings.
        num_workers: DataLoader worker processes.
    """

    def __init__(self, pairs_per_digit: float = 2.0, batch_size: PositiveInt = 32, image_size: int = 16,
                 val_fraction: float = 0.05, test_fraction: float = 0.2, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(batch_size, val_fraction, test_fraction, seed, num_workers, image_size, channels=1)
        if image_size % 2 or image_size < 8:
            raise PolydiffError(f"image_size must be even and at least 8, got {image_size}; set --data.image_size")
        if pairs_per_digit < 0:
            raise PolydiffError(f"pairs_per_digit must be >= 0, got {pairs_per_digit}; set --data.pairs_per_digit")
        self.pairs_per_digit = pairs_per_digit
        self.save_hyperparameters()

    def build(self) -> dict[str, tuple[Tensor, list[str], Tensor]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        small = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1  # [-1, 1], 8x8
        labels = torch.tensor(digits.target, dtype=torch.long)
        full = F.interpolate((small + 1) / 2, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        full = full.clamp(0, 1) * 2 - 1
        gen = torch.Generator().manual_seed(self.seed)
        out = {}
        for split, idx in split_indices(len(small), self.val_fraction, self.test_fraction, self.seed).items():
            images = [full[idx]]
            captions = [single_caption(int(labels[i]), gen) for i in idx]
            digit_pairs = [torch.stack([labels[idx], torch.full_like(labels[idx], -1)], 1)]
            n_pairs = round(len(idx) * self.pairs_per_digit)
            if n_pairs and len(idx):
                pick = idx[torch.randint(len(idx), (n_pairs, 2), generator=gen)]
                images.append(torch.stack([pair_canvas(small[a], small[b], self.image_size) for a, b in pick]))
                captions += [pair_caption(int(labels[a]), int(labels[b]), gen) for a, b in pick]
                digit_pairs.append(labels[pick])
            out[split] = (torch.cat(images), captions, torch.cat(digit_pairs))
        return out

    def describe(self) -> str:
        return "captioned sklearn digits"


class CaptionFolderDataModule(CaptionedImageDataModule):
    """Your own captioned images: PNG / JPEG files in ``root`` and a ``metadata.csv`` (columns ``file_name``, ``text``)
    or ``metadata.jsonl`` (one ``{"file_name": ..., "text": ...}`` per line) beside them. Every image needs a caption
    and every caption an existing image; either mismatch is an error naming the files.

    Args:
        root: the folder with the images and the metadata file.
        image_size: side of the square images (resized on the shorter side, centre-cropped).
        channels: 1 (grayscale) or 3 (RGB).
        batch_size: images per batch.
        val_fraction: share of the images held out for validation.
        test_fraction: share held out for testing.
        seed: seed of the split.
        num_workers: DataLoader worker processes.
    """

    def __init__(self, root: Optional[str] = None, image_size: int = 32, channels: Literal[1, 3] = 3,
                 batch_size: PositiveInt = 32, val_fraction: float = 0.05, test_fraction: float = 0.1, seed: int = 0,
                 num_workers: int = 0) -> None:
        super().__init__(batch_size, val_fraction, test_fraction, seed, num_workers, image_size, channels)
        self.root = root
        self.save_hyperparameters()

    def read_metadata(self) -> dict[str, str]:
        """``file_name -> caption`` from the folder's metadata file."""
        if self.root is None or not Path(self.root).is_dir():
            raise PolydiffError(f"--data.root {self.root} is not a folder; pass the folder of your captioned images")
        root = Path(self.root)
        csv_path, jsonl_path = root / "metadata.csv", root / "metadata.jsonl"
        if csv_path.is_file():
            path = csv_path
            with csv_path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = [(n + 2, r) for n, r in enumerate(reader)]
                fields = reader.fieldnames or []
        elif jsonl_path.is_file():
            path, rows, fields = jsonl_path, [], ["file_name", "text"]
            for n, line in enumerate(jsonl_path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append((n, json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise PolydiffError(f"{path} line {n} is not JSON ({exc.msg}); write one "
                                            '{"file_name": ..., "text": ...} object per line') from None
        else:
            raise PolydiffError(f"{root} has no metadata.csv or metadata.jsonl; add one with a file_name and a text "
                                "column (one caption per image)")
        for column in ("file_name", "text"):
            if column not in fields:
                raise PolydiffError(f"{path} has no {column!r} column (columns: {list(fields)}); name the columns "
                                    "file_name and text")
        captions: dict[str, str] = {}
        for line, row in rows:
            name, text = row.get("file_name"), row.get("text")
            if not name:
                raise PolydiffError(f"{path} line {line} has no file_name; give every row an image file name")
            if text is None or not str(text).strip():
                raise PolydiffError(f"{path} line {line} ({name}) has an empty text; give every image a caption")
            if not (root / name).is_file():
                raise PolydiffError(f"{path} line {line} names {name}, which is not a file in {root}; fix the name or "
                                    "remove the row")
            captions[str(Path(name))] = str(text).strip()
        return captions

    def build(self) -> dict[str, tuple[Tensor, list[str], Tensor]]:
        captions = self.read_metadata()
        root = Path(self.root)
        uncaptioned = [str(p.relative_to(root)) for p in list_images(root) if str(p.relative_to(root)) not in captions]
        if uncaptioned:
            raise PolydiffError(f"{len(uncaptioned)} images in {root} have no caption in the metadata file (e.g. "
                                f"{uncaptioned[0]}); add rows for them or move them out")
        names = sorted(captions)
        images = torch.stack([read_image(root / n, self.image_size, self.channels) for n in names])
        texts = [captions[n] for n in names]
        out = {}
        for split, idx in split_indices(len(names), self.val_fraction, self.test_fraction, self.seed).items():
            out[split] = (images[idx], [texts[i] for i in idx], torch.full((len(idx), 2), -1, dtype=torch.long))
        return out

    def describe(self) -> str:
        return f"captioned folder {self.root}"
