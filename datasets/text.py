"""Text for discrete diffusion: CPython's own documentation (embedded default) or your .txt files.

The default corpus is ``pydoc_data.topics`` (the text of ``help()``, ~465k characters of English prose, installed with
every CPython), normalised text8-style (lower-case a-z and single spaces). Your own data: ``--data.path`` a UTF-8 .txt
file or a folder of them (searched recursively, read in sorted order).

The text is cut into consecutive chunks of ``seq_len`` characters; chunks go to train / val / test by a permutation
fixed by ``split_seed``. Batches are lists of strings; the model tokenises them (characters or its BPE).
"""

from typing import Optional

import lightning as L
import torch
from jsonargparse.typing import PositiveInt
from torch.utils.data import DataLoader

from polydiff.core.utils import PolydiffError, training_seed
from polydiff.datasets.readers.text import normalize_text8, read_text_files, read_text_input
from polydiff.datasets.splits import ResumableTraining, SplitLoaders, evaluation_sampler


def embedded_corpus() -> str:
    """The text of CPython's ``pydoc_data.topics`` (topics in sorted order)."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


class TextDataModule(ResumableTraining, SplitLoaders, L.LightningDataModule):
    """Fixed-length character chunks of a text corpus.

    Args:
        path: a UTF-8 .txt file or a folder of .txt files; None uses the embedded CPython documentation.
        seq_len: characters per chunk (the model's max_len must hold a chunk's tokens).
        batch_size: chunks per batch.
        normalize: text8-style normalisation (lower-case a-z and single spaces); needed by the char tokenizer.
        val_fraction: share of chunks for validation.
        test_fraction: share of chunks for ``polydiff test``.
        split_seed: seed of the chunk permutation that fixes the split.
        max_chars: use only the first max_chars characters of the (normalised) corpus (quick runs); None: all.
        num_workers: DataLoader workers.
    """

    def __init__(self, path: Optional[str] = None, seq_len: int = 128, batch_size: PositiveInt = 32, normalize: bool = True,
                 val_fraction: float = 0.05, test_fraction: float = 0.05, split_seed: int = 0,
                 max_chars: Optional[int] = None, num_workers: int = 0) -> None:
        super().__init__()
        if seq_len < 2:
            raise PolydiffError(f"--data.seq_len must be >= 2, got {seq_len}")
        if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise PolydiffError("--data.val_fraction and --data.test_fraction must be in (0, 1) with a sum below 1")
        self.path = path
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.normalize = normalize
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.max_chars = max_chars
        self.num_workers = num_workers
        self.save_hyperparameters()  # checkpoints (and exports) name the data a model was trained on
        self._splits: dict[str, list[str]] | None = None

    def corpus(self) -> str:
        text = embedded_corpus() if self.path is None else read_text_files(self.path)
        if self.normalize:
            text = normalize_text8(text)
        if self.max_chars:
            text = text[: self.max_chars]
        return text

    def _build(self) -> dict[str, list[str]]:
        text = self.corpus()
        n = len(text) // self.seq_len
        where = self.path or "the embedded corpus"
        if n < 3:
            raise PolydiffError(f"{where} has {len(text)} usable characters, fewer than 3 chunks of --data.seq_len "
                                f"{self.seq_len}; add text or lower --data.seq_len")
        chunks = [text[i * self.seq_len:(i + 1) * self.seq_len] for i in range(n)]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        n_val = max(1, round(self.val_fraction * n))
        n_test = max(1, round(self.test_fraction * n))
        return {
            "val": [chunks[i] for i in perm[:n_val]],
            "test": [chunks[i] for i in perm[n_val:n_val + n_test]],
            "train": [chunks[i] for i in perm[n_val + n_test:]],
        }

    def split_texts(self, split: str) -> list[str]:
        """The chunks of ``split`` (train, val or test)."""
        if self._splits is None:
            self._splits = self._build()
        return self._splits[split]

    def setup(self, stage: str | None = None) -> None:
        self.split_texts("train")

    def read_input(self, input: str) -> str:
        """``polydiff sample --input``: a text with ``_`` blanks, or a file holding one."""
        return read_text_input(input)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        texts = self.split_texts(split)
        sampler = evaluation_sampler(texts) if split == "test" else None
        if shuffle:
            sampler = self.train_sampler(len(texts), training_seed())
        return DataLoader(texts, batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=list, drop_last=False)
