"""The text domain's LightningModule: a categorical diffusion language model over characters or BPE tokens."""

import math
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import Tensor

from polydiff.core.base import TrainingConfig, require_data
from polydiff.core.discrete import CategoricalBatch, CategoricalConfig, CategoricalSamplerConfig, DiscreteDiffusionModule
from polydiff.core.utils import PolydiffError
from polydiff.domains.text import writers
from polydiff.domains.text.api import TextSamplingAPI
from polydiff.domains.text.data import TextData
from polydiff.domains.text.metrics import (
    training_vocabulary,
    tuned_bigram_bits_per_char,
    unigram_bits_per_char,
    word_share,
)
from polydiff.domains.text.network import TimeConditionedBert
from polydiff.domains.text.tokenizer import BPETokenizer, CharTokenizer, tokenizer_from_json

#: the DataModules that fit this model (named in the error when another is given)
USE_DATA = "polydiff.datasets.text.TextDataModule"


class TextDiffusion(TextSamplingAPI, DiscreteDiffusionModule):
    """Discrete diffusion over text (D3PM uniform / absorbing, MDLM) with a time-conditioned BERT denoiser.

    Batches are lists of strings (see :class:`polydiff.datasets.text.TextDataModule`); the model tokenises them.

    Args:
        tokenizer: char (a-z, space and [MASK]; needs text8-normalised data) or bpe (trained on the training split at
            the start of ``polydiff fit`` and stored in the checkpoint).
        bpe_vocab_size: number of BPE tokens (the model has one more category, [MASK]).
        max_len: longest token sequence; unconditional samples have this length.
        hidden_size: transformer width.
        num_layers: transformer blocks.
        num_heads: attention heads.
        intermediate_size: feed-forward width.
        dropout: dropout in the transformer.
        pretrained: local folder of a HuggingFace BERT (save_pretrained) whose encoder initialises the denoiser.
        local_kernel: width of the convolution over token embeddings before the transformer (0: none; see
            ``TimeConditionedBert``).
        num_test_samples: samples drawn by ``polydiff test`` for the word-share metric.
        diffusion: categorical process and loss (see ``CategoricalConfig``).
        sampler: default sampler (``absorbing_fast`` for absorbing models).
        training: optimiser settings.
    """

    domain = "text"

    def __init__(
        self,
        tokenizer: Literal["char", "bpe"] = "char",
        bpe_vocab_size: int = 1024,
        max_len: int = 128,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int = 1024,
        dropout: float = 0.0,
        pretrained: Optional[str] = None,
        local_kernel: int = 5,
        num_test_samples: int = 16,
        diffusion: CategoricalConfig = CategoricalConfig(),
        sampler: CategoricalSamplerConfig = CategoricalSamplerConfig(),
        training: TrainingConfig = TrainingConfig(),
    ) -> None:
        super().__init__(diffusion, sampler, training)
        if diffusion.transition == "marginal":
            raise PolydiffError("the text domain supports transitions uniform and absorbing; set "
                                "--model.diffusion.transition accordingly")
        self.tokenizer_kind = tokenizer
        self.max_len = max_len
        self.num_test_samples = num_test_samples
        # [MASK] (the last id) is a category only for the absorbing process; uniform noise stays among real tokens
        with_mask = CharTokenizer().num_categories if tokenizer == "char" else bpe_vocab_size + 1
        num_categories = with_mask if diffusion.transition == "absorbing" else with_mask - 1
        self.network = TimeConditionedBert(num_categories, max_len, hidden_size, num_layers, num_heads,
                                           intermediate_size, dropout, pretrained, local_kernel)
        self.set_variables([num_categories])
        self.register_buffer("tokenizer_json", torch.zeros(0, dtype=torch.uint8))
        self.tokenizer: CharTokenizer | BPETokenizer | None = None
        if tokenizer == "char":
            self._set_tokenizer(CharTokenizer())
        self.bpe_vocab_size = bpe_vocab_size
        self.save_hyperparameters()

    # ------------------------------------------------------------------ tokenizer
    def _set_tokenizer(self, tok: CharTokenizer | BPETokenizer) -> None:
        expected = self.processes[0].num_categories + (0 if self.diffusion_config.transition == "absorbing" else 1)
        if tok.num_categories != expected:
            raise PolydiffError(f"the tokenizer has {tok.num_categories} ids (with [MASK]) but the model expects "
                                f"{expected}; use the --model settings of training")
        self.tokenizer = tok
        blob = torch.tensor(list(tok.to_json().encode("utf-8")), dtype=torch.uint8)
        self.register_buffer("tokenizer_json", blob.to(self.tokenizer_json.device))

    def _tokenizer_from_state(self, state: dict[str, Any]) -> None:
        blob = state.get("tokenizer_json")
        if blob is not None and blob.numel() > 0:
            self._set_tokenizer(tokenizer_from_json(bytes(blob.tolist()).decode("utf-8")))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Restore the tokenizer stored in the state first (a BPE's size differs from the empty placeholder)."""
        self._tokenizer_from_state(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def restore_from_checkpoint(self, checkpoint: dict[str, Any], path: str) -> None:
        """The tokenizer first: a BPE's vocabulary sets the size of the embedding the weights fill."""
        self._tokenizer_from_state(checkpoint["state_dict"])

    def connect_data(self, datamodule: Any) -> None:
        """At fit, a BPE model without a tokenizer trains one on the training texts."""
        dm = require_data(datamodule, TextData, "text", USE_DATA)
        if self.tokenizer is None and self.trainer.state.fn == "fit":
            self._set_tokenizer(BPETokenizer.train(dm.split_texts("train"), self.bpe_vocab_size))

    def _tok(self) -> CharTokenizer | BPETokenizer:
        if self.tokenizer is None:
            raise PolydiffError("the BPE tokenizer is not trained yet: run 'polydiff fit' first or pass --ckpt_path")
        return self.tokenizer

    # ------------------------------------------------------------------ batches
    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids ``[B, L]`` (zero-padded) and the mask ``[B, L]`` of real tokens."""
        ids = [self._tok().encode(t) for t in texts]
        longest = max((len(i) for i in ids), default=0)
        if longest > self.max_len:
            raise PolydiffError(f"a text chunk has {longest} tokens, more than --model.max_len {self.max_len}; lower "
                                "--data.seq_len or raise --model.max_len")
        tokens = torch.zeros(len(ids), max(longest, 1), dtype=torch.long)
        mask = torch.zeros_like(tokens)
        for r, seq in enumerate(ids):
            tokens[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[r, : len(seq)] = 1
        return tokens.to(self.device), mask.to(self.device)

    def encode(self, batch: Any) -> CategoricalBatch:
        tokens, mask = self.tokenize(list(batch))
        return CategoricalBatch(x0=(tokens,), mask=(mask,), cond=mask)

    def x0_logits(self, xs: tuple[Tensor, ...], time: Tensor, cond: Any) -> tuple[Tensor, ...]:
        attention = None if cond is None or bool(cond.all()) else cond
        return (self.network(xs[0], time, attention),)

    def decode(self, tokens: Tensor) -> list[str]:
        return [self._tok().decode(row.tolist()) for row in tokens.cpu()]

    # ------------------------------------------------------------------ evaluation
    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._test_totals["chars"] = 0.0

    def test_step(self, batch: Any, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self._test_totals["chars"] += sum(len(t) for t in batch)

    def test_metrics(self) -> dict[str, float]:
        bits_token = self.test_bound_bits()
        metrics = {"bits_per_token": bits_token,
                   "bits_per_char": self._test_totals["nats"] / max(self._test_totals.get("chars", 0.0), 1.0)
                   / math.log(2)}
        dm = require_data(self.trainer.datamodule, TextData, "text", USE_DATA)
        train, val, test = dm.split_texts("train"), dm.split_texts("val"), dm.split_texts("test")
        metrics["unigram_bits_per_char"] = unigram_bits_per_char(train, test)
        metrics["bigram_bits_per_char"], metrics["bigram_add_k"] = tuned_bigram_bits_per_char(train, val, test)
        vocab = training_vocabulary(train)
        self._test_samples = self.sample_texts(self.num_test_samples, seed=0)
        metrics["generated_words_in_train_vocab"] = word_share(self._test_samples, vocab)
        metrics["heldout_words_in_train_vocab"] = word_share(test, vocab)
        return metrics

    def on_test_epoch_end(self) -> None:
        self.gather_test_totals()
        metrics = {"bound_bits_per_position": self.test_bound_bits(), **self.test_metrics()}
        self.report_metrics(metrics, {"samples": getattr(self, "_test_samples", [])[:4],
                                      "bound_times": self.diffusion_config.bound_times,
                                      "steps": self.diffusion_config.steps})

    # ------------------------------------------------------------------ sampling (the Python API is api.py)
    def write_predictions(self, prediction: list[str], batch: Any, out_dir: Path, prefix: str) -> list[Path]:
        return writers.write_predictions(self, prediction, batch, out_dir, prefix)

    def write_samples(self, out_dir: Path, num_samples: int, sampler: CategoricalSamplerConfig, seed: int,
                      input: Optional[str] = None) -> list[Path]:
        """``samples.txt``, or with ``input`` (a text with ``_`` blanks) ``infill.txt``
        (:func:`polydiff.domains.text.writers.write_samples`)."""
        return writers.write_samples(self, out_dir, num_samples, sampler, seed, input)

    def predict_step(self, batch: Any, batch_idx: int) -> list[str]:
        """``polydiff predict``: one unconditional sample per item of the batch (the items only set the count); the seed
        differs per batch and per process."""
        return self.sample_texts(len(batch), seed=batch_idx * self.trainer.world_size + self.global_rank)
