"""The audio domain: a DiffWave-style mel-to-waveform vocoder (see ``docs/domains/audio.md``)."""

from polydiff.domains.audio.module import VocoderModule

__all__ = ["VocoderModule"]
