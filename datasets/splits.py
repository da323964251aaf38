"""The four Lightning loaders of a DataModule with fixed train / val / test splits, written once."""

from torch.utils.data import DataLoader


class SplitLoaders:
    """Mixin for a ``LightningDataModule`` (list it first): the loaders come from one ``_loader(split, train)``;
    ``polydiff predict`` uses the test split."""

    def _loader(self, split: str, train: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)
