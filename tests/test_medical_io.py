"""NIfTI reading and writing for the medical domain: the geometry survives, refined grids are right, bad input is named."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from polydiff.core.utils import PolydiffError
from polydiff.datasets.medical import CropDataModule, SliceDataModule
from polydiff.datasets.readers.nifti import read_volume
from polydiff.domains.medical import MedicalDiffusion
from polydiff.domains.medical.geometry import downsampled_affine, upsampled_affine
from polydiff.domains.medical.io import orthogonal_slices, write_item, write_nifti

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
ANATOMICAL = NIBABEL_DATA / "anatomical.nii"  # 33 x 41 x 25, 2 mm, LAS, int16
EXAMPLE_4D = NIBABEL_DATA / "example4d.nii.gz"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def same_dtype(a: np.dtype, b: np.dtype) -> bool:
    return np.dtype(a).newbyteorder("=") == np.dtype(b).newbyteorder("=")


def test_round_trip_keeps_affine_axis_codes_shape_and_dtype(tmp_path):
    src = nib.load(ANATOMICAL)
    vol = read_volume(ANATOMICAL, None, (0, 100))
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")  # held as RAS+ ...
    model = MedicalDiffusion(spatial_dims=3, item_size=vol.data.shape, model_channels=8, channel_mult=(1,),
                             attention_levels=(), num_heads=1)
    batch = model.encode(torch.from_numpy(vol.data)[None, None])
    out = write_nifti(model.decode(batch.x0)[0], vol.geometry(), tmp_path / "rt.nii.gz")
    back = nib.load(out)
    assert np.allclose(back.affine, src.affine)  # ... and written back in the file's orientation
    assert nib.aff2axcodes(back.affine) == nib.aff2axcodes(src.affine) == ("L", "A", "S")
    assert back.shape == src.shape
    assert same_dtype(back.get_data_dtype(), src.get_data_dtype())
    assert back.header["xyzt_units"] == src.header["xyzt_units"]
    # percentiles (0, 100) make the scaling invertible: the voxels come back to within the int16 rounding
    assert np.abs(back.get_fdata() - src.get_fdata()).max() <= 1.0


def test_resampling_to_a_spacing_keeps_the_field_of_view_and_ras():
    vol = read_volume(ANATOMICAL, (4.0, 4.0, 4.0))
    assert np.allclose(np.abs(np.diag(vol.affine)[:3]), 4.0)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.data.shape == (17, 21, 13)  # 33 x 41 x 25 voxels of 2 mm, first voxel kept
    assert vol.data.min() >= -1 and vol.data.max() <= 1


def test_super_resolution_affine_halves_spacing_and_moves_the_origin_by_half_a_fine_voxel():
    affine = nib.load(ANATOMICAL).affine  # LAS, 2 mm
    fine = upsampled_affine(affine, (2, 2, 2))
    assert np.allclose(nib.affines.voxel_sizes(fine), nib.affines.voxel_sizes(affine) / 2)
    assert nib.aff2axcodes(fine) == nib.aff2axcodes(affine)
    # the first fine voxel centre lies half a fine voxel before the first coarse centre, along each voxel axis
    expected = affine @ np.array([-0.25, -0.25, -0.25, 1.0])
    assert np.allclose(fine[:, 3], expected)
    assert np.allclose(fine[:3, 3] - affine[:3, 3], -0.5 * fine[:3, :3].sum(axis=1))
    # block averaging is the inverse map; in-plane only (2D SR) leaves the z column alone
    assert np.allclose(downsampled_affine(fine, (2, 2, 2)), affine)
    inplane = upsampled_affine(affine, (2, 2, 1))
    assert np.allclose(inplane[:, 2], affine[:, 2])


def test_slices_and_crops_come_with_their_grid_and_never_overlap_held_out_data():
    dm = SliceDataModule()
    train, test = dm.split_tensor("train"), dm.split_tensor("test")
    assert train.shape[1:] == test.shape[1:] == (1, 48, 56)
    assert len(test) == (len(train) + len(test)) // 4  # every 4th brain slice held out
    slab = SliceDataModule(holdout="slab", holdout_slab=(0.4, 0.6), holdout_gap=4)
    assert len(slab.split_tensor("test")) == 25 and len(slab.split_tensor("train")) == 127 - 25 - 2 * 4
    geometry = dm.reference_geometry()
    assert np.allclose(np.diag(geometry["affine"])[:3], (4, 4, 1))
    crops = CropDataModule(crops_per_epoch=4, train_reference_crops=4)
    crops.setup()
    vol = crops.volumes[0]
    (regions, (a, b)) = crops.regions(vol)
    assert all(hi <= a or lo >= b for lo, hi in regions)  # training ranges of y avoid the held-out slab
    assert next(iter(crops.train_dataloader())).shape == (4, 1, 16, 16, 16)
    fresh = crops.random_crops(3, seed=1)
    assert fresh.shape == (3, 1, 16, 16, 16) and torch.equal(fresh, crops.random_crops(3, seed=1))
    assert all(float((c > -0.9).float().mean()) >= 0.3 for c in fresh)  # crops of mostly background are redrawn


def test_written_items_have_png_slices(tmp_path):
    vol = read_volume(ANATOMICAL, None)
    paths = write_item(vol.data, vol.geometry(), tmp_path / "vol")
    assert [p.name for p in paths] == ["vol.nii.gz", "vol.png"]
    panels = orthogonal_slices(vol.data)
    assert panels.dtype == np.uint8 and panels.shape == (41, 33 + 2 + 33 + 2 + 41)  # axial | coronal | sagittal


def write_volume(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return path


def test_bad_inputs_name_the_file_and_the_fix(tmp_path):
    def error(folder: Path) -> str:
        with pytest.raises(PolydiffError) as exc:
            SliceDataModule(root=str(folder)).setup()
        return str(exc.value)

    (tmp_path / "empty").mkdir()
    msg = error(tmp_path / "empty")
    assert "empty" in msg and ".nii.gz" in msg
    assert "does not exist" in error(tmp_path / "nowhere")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_volume(mixed / "ok.nii.gz", np.zeros((8, 8, 8), np.float32))
    (mixed / "notes.txt").write_text("not a volume")
    msg = error(mixed)
    assert "notes.txt" in msg and "not a NIfTI" in msg and "move it out" in msg
    four = tmp_path / "four"
    four.mkdir()
    (four / "bold.nii.gz").write_bytes(EXAMPLE_4D.read_bytes())
    msg = error(four)
    assert "bold.nii.gz" in msg and "4D" in msg and "four_to_three" in msg
    nan = tmp_path / "nan"
    nan.mkdir()
    data = np.ones((8, 8, 8), np.float32)
    data[1, 2, 3] = np.nan
    write_volume(nan / "holes.nii", data)
    msg = error(nan)
    assert "holes.nii" in msg and "1 NaN" in msg and "nan_to_num" in msg
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cut.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    msg = error(broken)
    assert "cut.nii.gz" in msg and "re-export" in msg
