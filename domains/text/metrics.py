"""Text metrics: n-gram baselines in bits per character and the share of generated words in a vocabulary."""

import math
from collections import Counter

#: add-k values tried for the bigram baseline; the one with the lowest validation bits/char is used
ADD_K_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)


def unigram_bits_per_char(train: list[str], test: list[str], k: float = 1.0) -> float:
    """Bits per character of ``test`` under add-k smoothed character frequencies of ``train``."""
    counts = Counter("".join(train))
    alphabet = set(counts) | set("".join(test))
    total = sum(counts.values()) + k * len(alphabet)
    n, bits = 0, 0.0
    for text in test:
        for c in text:
            bits -= math.log2((counts[c] + k) / total)
            n += 1
    return bits / max(n, 1)


def bigram_bits_per_char(train: list[str], test: list[str], k: float) -> float:
    """Bits per character of ``test`` under an add-k smoothed character bigram of ``train`` (chunks are scored on their
    own, like the diffusion model: the first character of a chunk by the unigram)."""
    uni = Counter("".join(train))
    pairs: Counter = Counter()
    for text in train:
        pairs.update(zip(text, text[1:]))
    alphabet = set(uni) | set("".join(test))
    V = len(alphabet)
    uni_total = sum(uni.values()) + k * V
    ctx: Counter = Counter()
    for (a, _), c in pairs.items():
        ctx[a] += c
    n, bits = 0, 0.0
    for text in test:
        if not text:
            continue
        bits -= math.log2((uni[text[0]] + k) / uni_total)
        for a, b in zip(text, text[1:]):
            bits -= math.log2((pairs[(a, b)] + k) / (ctx[a] + k * V))
        n += len(text)
    return bits / max(n, 1)


def tuned_bigram_bits_per_char(train: list[str], val: list[str], test: list[str]) -> tuple[float, float]:
    """Bigram bits/char on ``test`` with the add-k chosen on ``val``; returns ``(bits, k)``."""
    k = min(ADD_K_GRID, key=lambda kk: bigram_bits_per_char(train, val, kk))
    return bigram_bits_per_char(train, test, k), k


def training_vocabulary(texts: list[str]) -> set[str]:
    """Whole words of the training chunks (the first and last word of a chunk may be cut, so they are left out)."""
    vocab: set[str] = set()
    for text in texts:
        vocab.update(text.split()[1:-1])
    return vocab


def word_share(texts: list[str], vocab: set[str]) -> float:
    """Share of the whole words of ``texts`` (first and last of each chunk left out) that are in ``vocab``."""
    words = [w for text in texts for w in text.split()[1:-1]]
    return sum(w in vocab for w in words) / max(len(words), 1)
