"""What the vocoder needs from its DataModule, as a structural type (``polydiff.datasets.audio.SpeechDataModule``
fits); the model checks it in ``connect_data`` and nowhere else reaches into the data."""

from typing import Protocol, runtime_checkable


@runtime_checkable
class AudioData(Protocol):
    """Mono waveform crops ``[B, 1, samples]`` at ``sample_rate``."""

    #: the rate every file is resampled to
    sample_rate: int
