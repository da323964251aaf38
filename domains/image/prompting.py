"""The image model's text side (a mixin of :class:`polydiff.domains.image.ImageDiffusion`): the tokenizer kept in the
model (trained on the training captions when fit starts, or read from a local file, stored in checkpoints as a byte
buffer), prompts to token ids, the empty prompt as the null condition, and ``sample_prompts``."""

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from polydiff.core.ema import sync_averaged_buffers
from polydiff.core.utils import PolydiffError
from polydiff.domains.image.text import PromptTokenizer, read_tokenizer_file, tokenizer_blob, train_tokenizer


class PromptAPI:
    """Text conditioning of an image model whose ``self.text`` is a :class:`~polydiff.domains.image.text.TextConfig`."""

    tokenizer: Optional[PromptTokenizer] = None

    def init_tokenizer(self) -> None:
        """The empty tokenizer buffer, filled now from a local file when the settings name one."""
        self.register_buffer("tokenizer_json", torch.zeros(0, dtype=torch.uint8))
        self.tokenizer = None
        path = self.text.tokenizer or self.text.pretrained
        if self.text.tokenizer is not None or (path is not None and self.text.pretrained is not None):
            self.set_tokenizer(read_tokenizer_file(path))

    def set_tokenizer(self, tokenizer_json: str) -> None:
        tok = PromptTokenizer(tokenizer_json, self.text.max_length)
        capacity = int(self.network.encoder.config.vocab_size)
        if tok.vocab_size > capacity:
            raise PolydiffError(f"the tokenizer has {tok.vocab_size} tokens but the text encoder's vocabulary holds "
                                f"{capacity}; raise --model.text.vocab_size to at least {tok.vocab_size}")
        self.tokenizer = tok
        self.register_buffer("tokenizer_json", tokenizer_blob(tokenizer_json).to(self.tokenizer_json.device))

    def tokenizer_from_state(self, state: dict[str, Any]) -> None:
        blob = state.get("tokenizer_json")
        if self.text is not None and blob is not None and blob.numel() > 0:
            self.set_tokenizer(bytes(blob.tolist()).decode("utf-8"))

    def train_tokenizer_on(self, captions: list[str]) -> None:
        """At fit start without a tokenizer: a word-level one trained on the training captions."""
        if self.tokenizer is None:
            self.set_tokenizer(train_tokenizer(captions, self.text.vocab_size))
            sync_averaged_buffers(self)

    def tokenize(self, prompts: Sequence[str]) -> Tensor:
        if self.tokenizer is None:
            raise PolydiffError("the tokenizer is not trained yet: run 'polydiff fit' first (it trains one on the "
                                "captions), load a checkpoint, or set --model.text.tokenizer")
        return self.tokenizer(list(prompts)).to(self.device)

    def null_tokens(self, like: Tensor) -> Tensor:
        """The empty prompt's token ids, padded to ``like``'s length, one row per row of ``like``."""
        null = self.tokenize([""])[0]
        out = torch.zeros_like(like)
        out[:, :len(null)] = null.to(like.device)
        return out

    @torch.no_grad()
    def sample_prompts(self, prompts: Sequence[str], sampler: Any = None, steps: Optional[int] = None,
                       guidance: Optional[float] = None, seed: int = 0, progress: bool = False) -> Tensor:
        """One image per prompt, ``[len(prompts), C, H, W]`` in [0, 1] (classifier-free guidance against the empty
        prompt at the model's ``sampler.guidance`` unless ``guidance`` is given)."""
        if self.text is None:
            raise PolydiffError("this model is not text-conditioned (no --model.text); sample it with classes")
        if isinstance(prompts, str):
            prompts = [prompts]
        cfg = self._sampler(sampler, steps, guidance)
        out = []
        bs = max(1, self.eval_batch_size)
        for k, start in enumerate(range(0, len(prompts), bs)):
            chunk = list(prompts[start:start + bs])
            x = self.generate(self.diffused_shape(len(chunk)), self.tokenize(chunk), cfg, seed + k, progress)
            out.append(self.decode(x).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.channels, self.image_size, self.image_size)
