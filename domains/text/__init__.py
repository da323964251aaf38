"""polydiff.domains.text: discrete diffusion language models (D3PM / MDLM) with a time-conditioned BERT denoiser.

Character tokens by default (a-z, space, [MASK]); an optional BPE trained with ``tokenizers`` on your corpus. Metrics:
bits per character of the variational bound, unigram / bigram baselines, share of generated words in the training
vocabulary. Infilling keeps given tokens exactly.
"""

from polydiff.domains.text.module import TextDiffusion
from polydiff.domains.text.network import TimeConditionedBert
from polydiff.domains.text.tokenizer import BPETokenizer, CharTokenizer

__all__ = ["BPETokenizer", "CharTokenizer", "TextDiffusion", "TimeConditionedBert"]
