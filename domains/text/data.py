"""What the text model needs from its DataModule, as a structural type (``polydiff.datasets.text.TextDataModule``
fits); the model checks it in ``connect_data`` and nowhere else reaches into the data."""

from typing import Protocol, runtime_checkable


@runtime_checkable
class TextData(Protocol):
    """Text chunks split into train / val / test."""

    def split_texts(self, split: str) -> list[str]:
        """The chunks of ``train``, ``val`` or ``test``."""
        ...
