"""NIfTI volumes as training data: axial slices (2D) or random crops (3D), from the MNI152 templates or your folder.

Default data ship inside nilearn's wheel: the MNI152 2009c symmetric templates (T1, grey and white matter
probability; 197x233x189 voxels at 1 mm, RAS), read here by path with nibabel (no fetcher, no network). Your own scans:
``--data.root DIR`` with ``.nii`` / ``.nii.gz`` files; every volume is reoriented to RAS+, resampled to ``spacing`` and
scaled by percentiles (:mod:`polydiff.datasets.readers.nifti`).

Held-out data never overlap training data: slices are held out every ``holdout_every``-th brain slice (neighbours of
training slices) or as a slab of consecutive slices with a gap to the training slices; crops are held out from a slab of
the anterior-posterior axis that training crops never touch. Batches are tensors
``[B, 1, *item_size]`` in [-1, 1]. The geometry (affines, source header, axis codes) is given out as plain data by
:meth:`NiftiDataModule.reference_geometry` and :meth:`NiftiDataModule.read_input`.
"""

from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal, Optional

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from polydiff.core.utils import PolydiffError
from polydiff.datasets.readers.nifti import NiftiVolume, list_nifti, read_volume
from polydiff.datasets.splits import SplitLoaders

Template = Literal["mni_t1", "mni_gm", "mni_wm"]
TEMPLATE_FILES = {"mni_t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                  "mni_gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                  "mni_wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}


def template_path(name: str) -> Path:
    """Path of an MNI152 template inside the installed nilearn package (no download)."""
    if name not in TEMPLATE_FILES:
        raise PolydiffError(f"unknown template {name!r}; use one of {sorted(TEMPLATE_FILES)} or pass --data.root")
    spec = find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise PolydiffError("the MNI152 templates ship with nilearn: pip install nilearn, or pass your own scans as "
                            "--data.root DIR")
    path = Path(spec.origin).parent / "datasets" / "data" / TEMPLATE_FILES[name]
    if not path.is_file():
        raise PolydiffError(f"{path} is missing from the installed nilearn; reinstall nilearn (>= 0.10) or pass "
                            "--data.root DIR")
    return path


def shifted(affine: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """The affine of a sub-grid whose voxel 0 is voxel ``offset`` of ``affine``'s grid."""
    t = np.eye(4)
    t[: len(offset), 3] = offset
    return affine @ t


def crop_or_pad(image: np.ndarray, size: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Centre crop (or pad with -1, the background) ``image`` to ``size``; also return the offset of voxel 0."""
    offset = tuple((s - t) // 2 for s, t in zip(image.shape, size))
    out = np.full(size, -1.0, dtype=np.float32)
    src = tuple(slice(max(o, 0), max(o, 0) + min(s, t)) for o, s, t in zip(offset, image.shape, size))
    dst = tuple(slice(max(-o, 0), max(-o, 0) + min(s, t)) for o, s, t in zip(offset, image.shape, size))
    out[dst] = image[src]
    return out, offset


def foreground(x: np.ndarray | Tensor) -> float:
    """Share of voxels above the background level (-1 after scaling)."""
    return float((x > -0.9).sum()) / max(1, x.size if isinstance(x, np.ndarray) else x.numel())


class NiftiDataModule(SplitLoaders, L.LightningDataModule):
    """Base of the NIfTI DataModules: reads the volumes once; subclasses cut them into items.

    Args shared by the subclasses are documented there.
    """

    spatial_dims: int = 3

    def __init__(self, root: Optional[str], template: Template, spacing: tuple[float, float, float],
                 percentiles: tuple[float, float], batch_size: int, seed: int, num_workers: int) -> None:
        super().__init__()
        self.root = root
        self.template = template
        self.spacing = tuple(float(s) for s in spacing)
        self.percentiles = tuple(float(p) for p in percentiles)
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.volumes: list[NiftiVolume] = []
        self._splits: Optional[dict[str, Tensor]] = None

    def files(self) -> list[Path]:
        return list_nifti(self.root) if self.root else [template_path(self.template)]

    def describe(self) -> str:
        return f"folder {self.root}" if self.root else f"template {self.template}"

    def load_volumes(self) -> list[NiftiVolume]:
        if not self.volumes:
            self.volumes = [read_volume(p, self.spacing, self.percentiles) for p in self.files()]
        return self.volumes

    def build_splits(self) -> dict[str, Tensor]:
        """``{"train", "val", "test"}`` -> ``[N, 1, *item_size]`` tensors (subclasses)."""
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self._splits is None:
            self._splits = self.build_splits()
            for split in ("train", "test"):
                if len(self._splits[split]) == 0:
                    raise PolydiffError(f"the {split} split of {self.describe()} is empty; add volumes or lower "
                                        "--data.min_foreground")

    def split_tensor(self, split: str) -> Tensor:
        """All items of ``split`` (train, val or test) as ``[N, 1, *item_size]`` in [-1, 1] (fixed; no random crop)."""
        self.setup()
        return self._splits[split]

    def train_dataset(self) -> Dataset:
        return TensorDataset(self.split_tensor("train"))

    def _loader(self, split: str, train: bool) -> DataLoader:
        ds = self.train_dataset() if train else TensorDataset(self.split_tensor(split))
        return DataLoader(ds, batch_size=self.batch_size, shuffle=train, drop_last=train and len(ds) > self.batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def read_input(self, path: str) -> dict[str, Any]:
        """A user's volume for ``polydiff sample --input``: reoriented to RAS+ on its own grid (no resampling), scaled
        by ``percentiles``; ``{"volume": [X, Y, Z] tensor in [-1, 1], "geometry": {affine, header, axcodes,
        intensity_range, source}}``."""
        vol = read_volume(path, None, self.percentiles)
        return {"volume": torch.from_numpy(vol.data), "geometry": vol.geometry()}


class SliceDataModule(NiftiDataModule):
    """Axial slices of NIfTI volumes, centre-cropped or padded to ``slice_size``; slices with little tissue dropped.

    Args:
        root: folder of your ``.nii`` / ``.nii.gz`` volumes (None: the ``template`` that ships with nilearn).
        template: MNI152 2009c template used when ``root`` is None: mni_t1, mni_gm (grey matter) or mni_wm.
        spacing: voxel size (mm, x y z) every volume is resampled to; in-plane spacing sets the slice resolution.
        percentiles: intensity percentiles mapped to -1 and 1 (values outside are clipped).
        slice_size: height and width of the slices (x and y voxels) after centre crop or padding.
        holdout: which brain slices (per volume) are held out for test and validation: ``interleaved`` (every
            ``holdout_every``-th: each lies between training slices) or ``slab`` (the consecutive slices between the
            ``holdout_slab`` fractions, with ``holdout_gap`` slices on each side used by neither split).
        holdout_every: interleaved: every this many-th brain slice is held out.
        holdout_slab: slab: start and end of the held-out slices as fractions of the brain slices.
        holdout_gap: slab: slices left out between the held-out slab and the training slices on each side.
        min_foreground: a slice is kept when at least this share of its voxels is above the background.
        batch_size: slices per batch.
        seed: seed of the data order.
        num_workers: DataLoader worker processes.
    """

    spatial_dims = 2

    def __init__(self, root: Optional[str] = None, template: Template = "mni_t1",
                 spacing: tuple[float, float, float] = (4.0, 4.0, 1.0), percentiles: tuple[float, float] = (0.5, 99.5),
                 slice_size: tuple[int, int] = (48, 56), holdout: Literal["interleaved", "slab"] = "interleaved",
                 holdout_every: int = 4, holdout_slab: tuple[float, float] = (0.4, 0.6), holdout_gap: int = 4,
                 min_foreground: float = 0.1,
                 batch_size: int = 16, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(root, template, spacing, percentiles, batch_size, seed, num_workers)
        self.save_hyperparameters()
        if holdout_every < 2:
            raise PolydiffError(f"holdout_every must be at least 2, got {holdout_every}; set --data.holdout_every")
        self.item_size = tuple(int(s) for s in slice_size)
        if not 0 <= holdout_slab[0] < holdout_slab[1] <= 1:
            raise PolydiffError(f"holdout_slab must be two fractions 0 <= start < end <= 1, got {holdout_slab}; set "
                                "--data.holdout_slab")
        self.holdout, self.holdout_every = holdout, holdout_every
        self.holdout_slab, self.holdout_gap = holdout_slab, holdout_gap
        self.min_foreground = min_foreground
        self._reference: Optional[dict[str, Any]] = None

    def build_splits(self) -> dict[str, Tensor]:
        train, test = [], []
        for vol in self.load_volumes():
            kept = []
            for z in range(vol.data.shape[2]):
                image, offset = crop_or_pad(vol.data[:, :, z], self.item_size)
                if foreground(image) >= self.min_foreground:
                    kept.append((image, shifted(vol.affine, (*offset, z))))
            a, b = (round(f * len(kept)) for f in self.holdout_slab)
            for k, (image, _) in enumerate(kept):
                if self.holdout == "interleaved":
                    (test if k % self.holdout_every == self.holdout_every - 1 else train).append(image)
                elif a <= k < b:
                    test.append(image)
                elif k < a - self.holdout_gap or k >= b + self.holdout_gap:
                    train.append(image)
            if kept and self._reference is None:
                self._reference = vol.geometry(kept[len(kept) // 2][1])
        held = self.stack(test)
        return {"train": self.stack(train), "val": held, "test": held}

    def stack(self, items: list[np.ndarray]) -> Tensor:
        return torch.from_numpy(np.stack(items)[:, None]) if items else torch.zeros(0, 1, *self.item_size)

    def reference_geometry(self) -> dict[str, Any]:
        """Geometry given to generated slices: the middle brain slice of the first volume (a one-voxel-thick grid)."""
        self.setup()
        return self._reference


class RandomCrops(Dataset):
    """``length`` random crops per epoch from the training regions of the volumes (torch's global RNG)."""

    def __init__(self, data: list[np.ndarray], regions: list[list[tuple[int, int]]], size: tuple[int, ...],
                 min_foreground: float, length: int) -> None:
        self.data, self.regions, self.size, self.min_foreground, self.length = data, regions, size, min_foreground, length

    def __len__(self) -> int:
        return self.length

    def draw(self, generator: Optional[torch.Generator] = None) -> Tensor:
        for _ in range(50):  # retry crops that are mostly background
            v = int(torch.randint(len(self.data), (1,), generator=generator))
            vol = self.data[v]
            lo, hi = self.regions[v][int(torch.randint(len(self.regions[v]), (1,), generator=generator))]
            starts = [int(torch.randint(0, s - c + 1, (1,), generator=generator)) for s, c in zip(vol.shape, self.size)]
            starts[1] = int(torch.randint(lo, hi - self.size[1] + 1, (1,), generator=generator))
            crop = vol[tuple(slice(s, s + c) for s, c in zip(starts, self.size))]
            if foreground(crop) >= self.min_foreground:
                break
        return torch.from_numpy(np.ascontiguousarray(crop))[None]

    def __getitem__(self, i: int) -> Tensor:
        return self.draw()


class CropDataModule(NiftiDataModule):
    """Random 3D crops of NIfTI volumes for training; held-out crops from a slab of the anterior-posterior axis.

    The slab ``holdout`` (fractions of the y axis) of every volume is held out: test and validation crops lie inside
    it on a grid of stride ``crop_size / 2``; training crops never overlap it.

    Args:
        root: folder of your ``.nii`` / ``.nii.gz`` volumes (None: the ``template`` that ships with nilearn).
        template: MNI152 2009c template used when ``root`` is None: mni_t1, mni_gm (grey matter) or mni_wm.
        spacing: voxel size (mm, x y z) every volume is resampled to.
        percentiles: intensity percentiles mapped to -1 and 1 (values outside are clipped).
        crop_size: crop size in voxels (x y z); memory grows with its product.
        holdout: start and end of the held-out slab as fractions of the anterior-posterior (y) axis.
        min_foreground: a crop is used when at least this share of its voxels is above the background.
        crops_per_epoch: random training crops per epoch.
        train_reference_crops: fixed random training crops used by evaluation controls (PCA / pixelwise Gaussian).
        batch_size: crops per batch.
        seed: seed of the fixed reference crops.
        num_workers: DataLoader worker processes.
    """

    spatial_dims = 3

    def __init__(self, root: Optional[str] = None, template: Template = "mni_t1",
                 spacing: tuple[float, float, float] = (3.0, 3.0, 3.0), percentiles: tuple[float, float] = (0.5, 99.5),
                 crop_size: tuple[int, int, int] = (16, 16, 16), holdout: tuple[float, float] = (0.35, 0.65),
                 min_foreground: float = 0.3, crops_per_epoch: int = 512, train_reference_crops: int = 256,
                 batch_size: int = 8, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(root, template, spacing, percentiles, batch_size, seed, num_workers)
        self.save_hyperparameters()
        if not 0 <= holdout[0] < holdout[1] <= 1:
            raise PolydiffError(f"holdout must be two fractions 0 <= start < end <= 1, got {holdout}; set --data.holdout")
        self.item_size = tuple(int(s) for s in crop_size)
        self.holdout = holdout
        self.min_foreground = min_foreground
        self.crops_per_epoch = crops_per_epoch
        self.train_reference_crops = train_reference_crops
        self._reference: Optional[dict[str, Any]] = None

    def regions(self, vol: NiftiVolume) -> tuple[list[tuple[int, int]], tuple[int, int]]:
        """Training ranges of y (each at least one crop long) and the held-out range."""
        n, c = vol.data.shape[1], self.item_size[1]
        if any(s < t for s, t in zip(vol.data.shape, self.item_size)):
            raise PolydiffError(f"{vol.path} resampled to {vol.data.shape} voxels is smaller than crop_size "
                                f"{self.item_size}; lower --data.crop_size or --data.spacing")
        a, b = int(round(self.holdout[0] * n)), int(round(self.holdout[1] * n))
        train = [(lo, hi) for lo, hi in ((0, a), (b, n)) if hi - lo >= c]
        return train, (a, b)

    def build_splits(self) -> dict[str, Tensor]:
        test, train_data, train_regions = [], [], []
        for vol in self.load_volumes():
            train, (a, b) = self.regions(vol)
            if train:
                train_data.append(vol.data)
                train_regions.append(train)
            stride = [max(1, c // 2) for c in self.item_size]
            ranges = [range(0, s - c + 1, st) for s, c, st in zip(vol.data.shape, self.item_size, stride)]
            ranges[1] = range(a, b - self.item_size[1] + 1, stride[1])
            for x in ranges[0]:
                for y in ranges[1]:
                    for z in ranges[2]:
                        crop = vol.data[x:x + self.item_size[0], y:y + self.item_size[1], z:z + self.item_size[2]]
                        if foreground(crop) >= self.min_foreground:
                            test.append(crop)
                            if self._reference is None:
                                self._reference = vol.geometry(shifted(vol.affine, (x, y, z)))
        if not train_data:
            raise PolydiffError(f"no volume of {self.describe()} leaves a training region of {self.item_size[1]} voxels "
                                "outside the held-out slab; lower --data.crop_size or narrow --data.holdout")
        self._crops = RandomCrops(train_data, train_regions, self.item_size, self.min_foreground, self.crops_per_epoch)
        gen = torch.Generator().manual_seed(self.seed)
        reference = [self._crops.draw(gen) for _ in range(self.train_reference_crops)]
        held = torch.from_numpy(np.stack(test)[:, None]) if test else torch.zeros(0, 1, *self.item_size)
        return {"train": torch.stack(reference), "val": held, "test": held}

    def train_dataset(self) -> Dataset:
        self.setup()
        return self._crops

    def random_crops(self, n: int, seed: int) -> Tensor:
        """``n`` fresh random crops of the training region (``[n, 1, *crop_size]``): a reference set from the
        training distribution (it overlaps training voxels, unlike the held-out slab)."""
        self.setup()
        gen = torch.Generator().manual_seed(seed)
        return torch.stack([self._crops.draw(gen) for _ in range(n)])

    def reference_geometry(self) -> dict[str, Any]:
        """Geometry given to generated crops: the first held-out crop's grid (the template's affine, shifted)."""
        self.setup()
        return self._reference
