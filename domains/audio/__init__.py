"""The audio domain: a DiffWave-style mel-to-waveform vocoder (see ``docs/domains/audio.md``)."""

from polydiff.domains.audio.module import VocoderModule
from polydiff.domains.audio.refiner import RefinerVocoderModule

__all__ = ["RefinerVocoderModule", "VocoderModule"]
