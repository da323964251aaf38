"""The four Lightning loaders of a DataModule with fixed train / val / test splits, written once."""

from typing import Optional

from torch.utils.data import DataLoader, Sampler

from polydiff.core.utils import PolydiffError


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


def evaluation_sampler(dataset) -> Optional[Sampler]:
    """A sampler that gives each process of a distributed run a disjoint share of an evaluation set, with no item
    repeated; None on one process (Lightning then leaves the loader alone).

    Lightning's default ``DistributedSampler`` pads the last share with repeated items, which test metrics summed over
    processes (``polydiff.core.utils.sum_across_ranks``) would count twice. Shares differ by at most one item, so every
    process gets at least one batch as long as the set has at least one item per process (checked here: a process
    without a batch would skip the epoch-end sum the others wait in).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    world = dist.get_world_size()
    if len(dataset) < world:
        raise PolydiffError(f"the evaluation split has {len(dataset)} items, fewer than the {world} processes; use "
                            "fewer --trainer.devices for polydiff test or a larger test split")
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, shuffle=False)
