"""Tokenisers of the text domain: characters (text8 style) or a BPE trained on the user's corpus.

Both put the absorbing [MASK] state at the *last* id (``mask_id = num_categories - 1``), as the categorical core expects,
and reserve no other special token: padding is handled by a loss / attention mask, not by a token.
"""

import json

from polydiff.core.utils import PolydiffError

TEXT8_ALPHABET = "abcdefghijklmnopqrstuvwxyz "


class CharTokenizer:
    """Characters ``a-z`` and space (ids 0-26) plus [MASK] (id 27)."""

    kind = "char"

    def __init__(self, alphabet: str = TEXT8_ALPHABET) -> None:
        self.alphabet = alphabet
        self.index = {c: i for i, c in enumerate(alphabet)}

    @property
    def num_categories(self) -> int:
        return len(self.alphabet) + 1

    @property
    def mask_id(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as exc:
            raise PolydiffError(f"character {exc.args[0]!r} is not in the character vocabulary (a-z and space); keep "
                                "--data.normalize true or use --model.tokenizer bpe") from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i] if i < len(self.alphabet) else "_" for i in ids)

    def to_json(self) -> str:
        return json.dumps({"kind": "char", "alphabet": self.alphabet})


class BPETokenizer:
    """Byte-level BPE trained with HuggingFace ``tokenizers`` on the training text; ids ``0 .. vocab_size - 1`` are
    BPE tokens (some may stay unused on a small corpus) and ``vocab_size`` is [MASK]."""

    kind = "bpe"

    def __init__(self, tokenizer_json: str, vocab_size: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.vocab_size = int(vocab_size)
        if self.tokenizer.get_vocab_size() > self.vocab_size:
            raise PolydiffError(f"the BPE tokenizer has {self.tokenizer.get_vocab_size()} tokens but the model has room "
                                f"for {self.vocab_size}; raise --model.bpe_vocab_size")

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> "BPETokenizer":
        """Train a byte-level BPE of at most ``vocab_size`` tokens on ``texts`` (deterministic for a given corpus)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok.to_str(), vocab_size)

    @property
    def num_categories(self) -> int:
        return self.vocab_size + 1

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i < self.tokenizer.get_vocab_size()])

    def to_json(self) -> str:
        return json.dumps({"kind": "bpe", "vocab_size": self.vocab_size, "tokenizer": self.tokenizer.to_str()})


def tokenizer_from_json(text: str) -> CharTokenizer | BPETokenizer:
    """Rebuild a tokenizer saved with ``to_json`` (stored in checkpoints)."""
    data = json.loads(text)
    if data["kind"] == "char":
        return CharTokenizer(data["alphabet"])
    return BPETokenizer(data["tokenizer"], data["vocab_size"])
