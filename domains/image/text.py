"""Text conditioning for the image U-Net: a small BERT-like encoder built from a ``transformers`` config and trained
jointly with the diffusion model (as LDM's text-to-image model, ``cond_stage_trainable: true``), or a user's pretrained
encoder read from a local folder (optionally frozen); a word-level tokenizer trained locally with ``tokenizers`` on the
training captions, or read from a local ``tokenizer.json``. Nothing is downloaded.

The encoder's hidden states are the context of the U-Net's cross-attention blocks
(:class:`~polydiff.domains.image.unet.CrossAttentionBlock`). The condition a sampler carries is the ``[B, L]`` tensor of
token ids (0 = padding); the null condition of classifier-free guidance is the empty prompt ``""``.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from polydiff.core.utils import PolydiffError
from polydiff.domains.image.unet import UNet

#: special tokens of the locally trained tokenizer, in id order (0 is the padding id the masks rely on)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@dataclass
class TextConfig:
    """The text encoder and tokenizer of a text-conditioned image model.

    Args:
        enabled: condition the model on text (False: class-conditional or unconditional, the rest is ignored).
        hidden_size: width of the BERT encoder built from a config (ignored with ``pretrained``).
        num_layers: transformer layers of that encoder.
        num_heads: attention heads of that encoder.
        intermediate_size: feed-forward width of that encoder.
        max_length: longest prompt in tokens (longer prompts are an error).
        vocab_size: size of the encoder's embedding table; the tokenizer trained on the captions must fit in it.
        tokenizer: a local ``tokenizer.json`` (or a folder holding one) to use instead of training one on the captions.
        pretrained: a local folder of a ``transformers`` encoder (``save_pretrained``) to use instead of a fresh one;
            its ``tokenizer.json`` is used unless ``tokenizer`` is given.
        freeze: keep the pretrained encoder's weights fixed (only the U-Net trains).
    """

    enabled: bool = False
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_length: int = 16
    vocab_size: int = 128
    tokenizer: Optional[str] = None
    pretrained: Optional[str] = None
    freeze: bool = False


torch.serialization.add_safe_globals([TextConfig])


def train_tokenizer(captions: list[str], vocab_size: int) -> str:
    """A lower-casing word-level tokenizer (``tokenizers``' WordLevel) trained on ``captions``; its JSON."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(captions, trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                  ("[SEP]", 3)])
    return tok.to_str()


def read_tokenizer_file(path: str) -> str:
    """The JSON of a local ``tokenizer.json`` (or of the one inside folder ``path``)."""
    p = Path(path)
    p = p / "tokenizer.json" if p.is_dir() else p
    if not p.is_file():
        raise PolydiffError(f"tokenizer {path} not found; pass a tokenizer.json written by the tokenizers library (or "
                            "a folder holding one), or leave --model.text.tokenizer unset to train one on the captions")
    return p.read_text()


class PromptTokenizer:
    """Prompts to ``[B, L]`` token ids, padded with 0, at most ``max_length`` long."""

    def __init__(self, tokenizer_json: str, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.json = tokenizer_json
        self.tok = Tokenizer.from_str(tokenizer_json)
        self.max_length = max_length
        pad = self.tok.token_to_id("[PAD]")
        if pad not in (0, None):
            raise PolydiffError(f"the tokenizer's [PAD] token has id {pad}; polydiff needs padding id 0")

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def __call__(self, prompts: list[str]) -> Tensor:
        ids = [e.ids for e in self.tok.encode_batch([str(p) for p in prompts])]
        longest = max((len(i) for i in ids), default=1)
        if longest > self.max_length:
            bad = prompts[max(range(len(ids)), key=lambda k: len(ids[k]))]
            raise PolydiffError(f"the prompt {bad!r} has {longest} tokens, more than --model.text.max_length "
                                f"{self.max_length}; shorten it or raise max_length")
        out = torch.zeros(len(ids), max(longest, 1), dtype=torch.long)
        for r, seq in enumerate(ids):
            out[r, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        return out


def build_encoder(cfg: TextConfig) -> nn.Module:
    """A fresh ``BertModel`` from a ``BertConfig``, or the pretrained encoder of a local folder (offline)."""
    if cfg.pretrained is not None:
        from transformers import AutoModel

        if not (Path(cfg.pretrained) / "config.json").is_file():
            raise PolydiffError(f"--model.text.pretrained {cfg.pretrained} is not a transformers model folder (no "
                                "config.json); pass a folder written by save_pretrained")
        encoder = AutoModel.from_pretrained(cfg.pretrained, local_files_only=True)
        if cfg.freeze:
            encoder.requires_grad_(False)
        return encoder
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                        max_position_embeddings=cfg.max_length, type_vocab_size=1, pad_token_id=0)
    return BertModel(config, add_pooling_layer=False)


class TextUNet(nn.Module):
    """``forward(x, c_noise, tokens)``: the U-Net with cross-attention to the text encoder's states of ``tokens``."""

    def __init__(self, unet: UNet, encoder: nn.Module, frozen: bool) -> None:
        super().__init__()
        self.unet = unet
        self.encoder = encoder
        self.frozen = frozen

    def forward(self, x: Tensor, c_noise: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        if cond is None:
            raise ValueError("a text-conditioned U-Net needs token ids (the empty prompt for unconditional samples)")
        tokens = torch.as_tensor(cond, device=x.device).long()
        mask = tokens != 0
        if self.frozen:
            self.encoder.eval()
        states = self.encoder(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        return self.unet(x, c_noise, None, context=states.to(x.dtype), context_mask=mask)


def encoder_width(encoder: nn.Module) -> int:
    return int(encoder.config.hidden_size)


def tokenizer_blob(tokenizer_json: str) -> Tensor:
    """A tokenizer's JSON as a uint8 buffer (so checkpoints and exports carry it)."""
    json.loads(tokenizer_json)  # a clear failure here rather than at load time
    return torch.tensor(list(tokenizer_json.encode("utf-8")), dtype=torch.uint8)
