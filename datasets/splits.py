"""The four Lightning loaders of a DataModule with fixed train / val / test splits, written once."""

from typing import Iterator, Optional

import torch
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


class ResumableShuffle(Sampler[int]):
    """A shuffled training order that is a function of ``(seed, epoch)`` alone, and can start part-way through an epoch.

    The sampler counts its own epochs (one per pass; Lightning's ``set_epoch`` numbering shifts by one when a run is
    resumed at an epoch end, so it is not used) in ``progress["epoch"]``, a dict its DataModule keeps and checkpoints.
    ``skip`` items of the first pass are left out: indices only, nothing is loaded for them.
    """

    def __init__(self, num_items: int, seed: int, progress: dict[str, int], skip: int = 0) -> None:
        self.num_items, self.seed, self.progress, self.skip = int(num_items), int(seed), progress, int(skip)

    def __iter__(self) -> Iterator[int]:
        epoch = self.progress["epoch"]
        self.progress["epoch"] = epoch + 1
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_items, generator=gen).tolist()
        start, self.skip = self.skip, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return self.num_items


class ResumableTraining:
    """Mixin for a ``LightningDataModule`` (list it first): its training loader shuffles with :class:`ResumableShuffle`
    and its checkpointed state says how many passes have started and how far into the current one training got, so
    ``fit --ckpt_path`` resumes on the very batches the uninterrupted run would have seen, at an epoch end or
    mid-epoch. One process: under DDP Lightning wraps the sampler in its distributed one and only the model's
    randomness is exact."""

    _progress: Optional[dict[str, int]] = None
    _skip: int = 0

    def train_sampler(self, num_items: int, seed: int) -> ResumableShuffle:
        if self._progress is None:
            self._progress = {"epoch": 0}
        sampler = ResumableShuffle(num_items, seed, self._progress, self._skip)
        self._skip = 0
        return sampler

    def state_dict(self) -> dict[str, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or self._progress is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress
        done = int(progress.current.completed)
        ended = bool(progress.is_last_batch) or done >= trainer.num_training_batches
        return {"passes_started": int(self._progress["epoch"]),
                "items_done": 0 if ended else done * int(self.batch_size)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not state:
            return
        started, items = int(state["passes_started"]), int(state["items_done"])
        # mid-epoch: repeat the interrupted pass from where it stopped; at an epoch end: the next pass
        self._progress = {"epoch": started - 1 if items > 0 else started}
        self._skip = items
