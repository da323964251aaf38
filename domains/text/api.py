"""The text model's Python API: unconditional samples and infilling of blanks (``_``), one blank per token.

:class:`TextSamplingAPI` is a mixin of :class:`polydiff.domains.text.TextDiffusion`; it relies on the model's tokenizer,
``max_len``, ``decode`` and ``generate``.
"""

import re
import warnings

import torch
from torch import Tensor

from polydiff.core.discrete import CategoricalSamplerConfig
from polydiff.core.utils import PolydiffError

#: the character that marks a blank to fill in ``polydiff sample --input``
BLANK = "_"


class TextSamplingAPI:
    """``sample_texts``, ``parse_blanks`` and ``infill``."""

    def sample_texts(self, n: int, seed: int = 0, sampler: CategoricalSamplerConfig | None = None,
                     length: int | None = None) -> list[str]:
        """``n`` unconditional samples of ``length`` tokens (default ``max_len``), decoded."""
        (tokens,) = self.generate([(n, length or self.max_len)], sampler=sampler, seed=seed)
        return self.decode(tokens)

    def sample_native(self, n: int, sampler: CategoricalSamplerConfig, seed: int, infill: str | None = None
                      ) -> list[str]:
        """:meth:`polydiff.core.base.PolydiffModule.sample`: ``n`` texts, or ``n`` completions of ``infill`` (a text
        with ``_`` blanks)."""
        if infill is not None:
            return self.infill(infill, n, seed, sampler)[0]
        return self.sample_texts(n, seed, sampler)

    def parse_blanks(self, text: str) -> tuple[Tensor, Tensor]:
        """Token ids and the mask of given (fixed) tokens of a text whose runs of ``_`` are blanks, one per token."""
        tok = self._tok()
        ids: list[int] = []
        fixed: list[bool] = []
        for part in re.split(r"(_+)", text):
            if not part:
                continue
            if part.startswith(BLANK):
                ids += [0] * len(part)
                fixed += [False] * len(part)
            else:
                seg = part.lower() if tok.kind == "char" else part
                if tok.kind == "char":
                    outside = sorted(set(re.findall(r"[^a-z ]", seg)))
                    if outside:
                        warnings.warn(f"--input characters {outside} are outside the model's alphabet (a-z and space); "
                                      "each run of them became one space", stacklevel=2)
                    seg = re.sub(r"[^a-z]+", " ", seg)
                enc = tok.encode(seg)
                ids += enc
                fixed += [True] * len(enc)
        if not ids:
            raise PolydiffError("--input is empty; give a text with blanks, e.g. \"the ____ of the ____\"")
        if len(ids) > self.max_len:
            raise PolydiffError(f"--input has {len(ids)} tokens, more than the model's max_len {self.max_len}")
        return torch.tensor(ids, dtype=torch.long), torch.tensor(fixed, dtype=torch.bool)

    def infill(self, text: str, n: int, seed: int = 0, sampler: CategoricalSamplerConfig | None = None
               ) -> tuple[list[str], Tensor, Tensor, Tensor]:
        """Fill the blanks (``_``) of ``text`` ``n`` times; returns texts, tokens ``[n, L]``, given ids and fixed mask."""
        ids, fixed = self.parse_blanks(text)
        L = len(ids)
        f = fixed.expand(n, L).to(self.device)
        v = ids.expand(n, L).to(self.device)
        (tokens,) = self.generate([(n, L)], sampler=sampler, seed=seed, fixed=[f], values=[v])
        return self.decode(tokens), tokens, ids, fixed
