"""Files the text model writes for ``polydiff sample``: ``samples.txt`` or ``infill.txt``."""

from pathlib import Path
from typing import Any, Optional

from polydiff.core.discrete import CategoricalSamplerConfig
from polydiff.core.utils import PolydiffError
from polydiff.domains.text.api import BLANK


def write_samples(model: Any, out_dir: Path, num_samples: int, sampler: CategoricalSamplerConfig, seed: int,
                  input: Optional[str] = None) -> list[Path]:
    """Unconditional samples to ``samples.txt`` (one per line), or, with ``input`` (a text with ``_`` blanks, read
    by the DataModule from ``polydiff sample --input``), its completions to ``infill.txt`` (the input first, then
    one completion per line)."""
    if input is None:
        path = out_dir / "samples.txt"
        path.write_text("\n".join(model.sample_texts(num_samples, seed, sampler)) + "\n", encoding="utf-8")
        return [path]
    text = input
    if BLANK not in text:
        raise PolydiffError(f"--input {input[:40]!r} has no blanks; mark the characters to generate with '_'")
    texts, *_ = model.infill(text, num_samples, seed, sampler)
    path = out_dir / "infill.txt"
    path.write_text(text + "\n" + "\n".join(texts) + "\n", encoding="utf-8")
    return [path]


def write_predictions(model: Any, texts: list[str], batch: Any, out_dir: Path, prefix: str) -> list[Path]:
    """``polydiff predict``: the batch's samples in ``<prefix>.txt``, one per line."""
    path = out_dir / f"{prefix}.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return [path]
