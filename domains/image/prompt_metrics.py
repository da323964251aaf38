"""Prompt accuracy of a text-conditioned digits model: does a classifier read, at each position, the digit the prompt
asks for?

A digit classifier (:func:`polydiff.domains.image.metrics.evaluation_classifier`, trained on the train split and cached)
reads 8x8 crops: a single-digit canvas is average-pooled to 8x8; a two-digit canvas (two half-size digits side by side,
vertically centred, as :class:`polydiff.datasets.captions.CaptionedDigitsDataModule` draws them) is cut into its left and
right halves. A sample is correct when every position holds the requested digit. The control scores the same samples
against the prompts of other items of the same kind (a cyclic shift of the prompt list): a model that ignores the text
scores chance there (10 % single, 1 % pairs), and so does any model on it.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.domains.image.metrics import evaluation_classifier, predict


def crops(images: Tensor, pair: Tensor) -> tuple[Tensor, Tensor]:
    """8x8-sized crops of canvases ``[N, C, S, S]``: position 0 (the whole single digit, or the left one) and position
    1 (the right one; for singles a copy of position 0 that is never scored)."""
    s = images.shape[-1]
    half, top = s // 2, (s - s // 2) // 2
    whole = F.adaptive_avg_pool2d(images, half) if s != half else images
    left = images[..., top:top + half, :half]
    right = images[..., top:top + half, half:]
    first = torch.where(pair[:, None, None, None], left, whole)
    second = torch.where(pair[:, None, None, None], right, whole)
    return first, second


class DigitReader:
    """Reads the digits of canvases; trained on the crops of the train split's canvases at their known digits."""

    def __init__(self, train_images: Tensor, train_digits: Tensor) -> None:
        pair = train_digits[:, 1] >= 0
        first, second = crops(train_images, pair)
        x = torch.cat([first, second[pair]])
        y = torch.cat([train_digits[:, 0], train_digits[pair, 1]])
        self.net = evaluation_classifier(x, y, 10)

    def read(self, images: Tensor, pair: Tensor) -> Tensor:
        """``[N, 2]`` digits read at each position (-1 at position 1 of singles)."""
        first, second = crops(images.float().cpu(), pair.cpu())
        a = predict(self.net, first)[1].argmax(1)
        b = predict(self.net, second)[1].argmax(1)
        return torch.stack([a, torch.where(pair.cpu(), b, torch.full_like(b, -1))], 1)


def correct(read: Tensor, digits: Tensor) -> Tensor:
    """Per item: every position holds the requested digit."""
    return (read == digits.cpu()).all(1)


def shifted_within_kind(digits: Tensor) -> Tensor:
    """The digits of the next item of the same kind (single or pair): prompts that do not belong to the samples."""
    out = digits.clone()
    for kind in (digits[:, 1] < 0, digits[:, 1] >= 0):
        idx = kind.nonzero().flatten()
        if len(idx) > 1:
            out[idx] = digits[idx.roll(1)]
    return out


def prompt_items(images: Tensor, captions: list[str], digits: Tensor, n_single: int, n_pair: int
                 ) -> tuple[Tensor, list[str], Tensor]:
    """The first ``n_single`` single-digit and ``n_pair`` two-digit items of a (test) split, singles first."""
    single = (digits[:, 1] < 0).nonzero().flatten()[:n_single]
    pair = (digits[:, 1] >= 0).nonzero().flatten()[:n_pair]
    idx = torch.cat([single, pair])
    return images[idx], [captions[i] for i in idx], digits[idx]


def prompt_accuracy(model: Any, data: Any, guidance: float, n_single: int = 200, n_pair: int = 200, seed: int = 0,
                    steps: int | None = None) -> dict[str, float]:
    """Prompt accuracy of ``model`` on the test split's captions of ``data`` at ``guidance``, with the shifted-prompt
    control and the reader's own accuracy on the real test canvases (its ceiling)."""
    reader = DigitReader(*_train(data))
    images, captions, digits = prompt_items(*data.split_captions("test"), n_single, n_pair)
    pair = digits[:, 1] >= 0
    samples = model.sample_prompts(captions, guidance=guidance, steps=steps, seed=seed, progress=True) * 2 - 1
    read = reader.read(samples, pair)
    ok, control, real = correct(read, digits), correct(read, shifted_within_kind(digits)), correct(
        reader.read(images, pair), digits)
    out = {}
    for name, kind in (("single", ~pair), ("pair", pair)):
        if kind.any():
            out[f"prompt_acc_{name}"] = float(ok[kind].float().mean())
            out[f"shuffled_acc_{name}"] = float(control[kind].float().mean())
            out[f"reader_acc_real_{name}"] = float(real[kind].float().mean())
    return out


def _train(data: Any) -> tuple[Tensor, Tensor]:
    images, _, digits = data.split_captions("train")
    return images, digits
