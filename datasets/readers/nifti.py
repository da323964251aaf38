"""Reading NIfTI volumes for training: checks, reorientation to RAS+, resampling to a spacing, percentile scaling.

Every step keeps the geometry as plain data (numpy affines, the source header as bytes, axis codes), so that the medical
domain can write what it generates on the same grid without importing this package (see
:mod:`polydiff.domains.medical.io`). Errors name the file and the fix.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import nibabel as nib
import numpy as np

from polydiff.core.utils import PolydiffError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


@dataclass
class NiftiVolume:
    """One volume as the DataModules hold it.

    ``data``: float32 ``[X, Y, Z]`` on the RAS+ voxel grid of ``affine``, scaled so that the ``intensity_range``
    percentiles map to -1 and 1 (and clipped there). ``source_axcodes`` and ``header`` are those of the file, so that a
    writer can put data back in the file's orientation with its header fields (dtype, units, description).
    """

    data: np.ndarray
    affine: np.ndarray
    header: bytes
    source_axcodes: tuple[str, ...]
    intensity_range: tuple[float, float]
    path: str

    def geometry(self, affine: Optional[np.ndarray] = None) -> dict[str, Any]:
        """The geometry as a plain dict (what :func:`polydiff.domains.medical.io.write_nifti` takes)."""
        return {"affine": np.array(self.affine if affine is None else affine, dtype=np.float64),
                "header": self.header, "axcodes": self.source_axcodes,
                "intensity_range": tuple(float(v) for v in self.intensity_range), "source": self.path}


def list_nifti(folder: str | Path) -> list[Path]:
    """The ``.nii`` / ``.nii.gz`` files of ``folder`` (sorted); any other file (hidden files aside) is an error."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PolydiffError(f"NIfTI folder {root} does not exist; pass an existing folder of .nii/.nii.gz files as "
                            "--data.root")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    others = [p for p in files if not is_nifti_name(p)]
    if others:
        raise PolydiffError(f"{others[0]} is not a NIfTI file (.nii or .nii.gz); convert it (e.g. dcm2niix for DICOM) "
                            f"or move it out of {root}")
    if not files:
        raise PolydiffError(f"NIfTI folder {root} is empty; put .nii or .nii.gz volumes there")
    return files


def load_checked(path: str | Path) -> nib.Nifti1Image:
    """``nibabel.load`` with the checks training needs: a NIfTI file, 3D (trailing singleton axes dropped), no NaN."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PolydiffError(f"NIfTI file {path} does not exist; pass the path of a .nii or .nii.gz volume")
    if not is_nifti_name(path):
        raise PolydiffError(f"{path} is not a NIfTI file (.nii or .nii.gz); convert it (e.g. dcm2niix for DICOM) "
                            "and pass the .nii.gz")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - a corrupt or truncated file, whatever nibabel raised
        raise PolydiffError(f"{path} cannot be read as NIfTI ({type(exc).__name__}: {exc}); re-export the "
                            "volume") from None
    if data.ndim > 3:
        extra = data.shape[3:]
        if all(s == 1 for s in extra):
            data = data.reshape(data.shape[:3])
        else:
            raise PolydiffError(f"{path} is 4D {tuple(data.shape)} but a 3D volume is expected; split it into 3D "
                                "volumes (e.g. nibabel.funcs.four_to_three or fslsplit) and pass those")
    elif data.ndim == 2:
        data = data[:, :, None]
    elif data.ndim != 3:
        raise PolydiffError(f"{path} has {data.ndim} axes {tuple(data.shape)}; pass a 3D volume")
    data = data.astype(np.float32)
    bad = int(np.isnan(data).sum())
    if bad:
        raise PolydiffError(f"{path} has {bad} NaN voxels; replace them (e.g. numpy.nan_to_num) and re-save, or "
                            "remove the file")
    out = nib.Nifti1Image(data, img.affine, header=img.header if isinstance(img.header, nib.Nifti1Header) else None)
    out.extra["source_header"] = img.header.binaryblock
    out.extra["source_axcodes"] = nib.aff2axcodes(img.affine)
    return out


def conform(img: nib.Nifti1Image, spacing: Optional[Sequence[float]]) -> nib.Nifti1Image:
    """Reorient to the closest canonical (RAS+) orientation and, when ``spacing`` is given, resample to it (mm).

    Downsampling first smooths with a Gaussian of FWHM ``sqrt(target^2 - source^2)`` per axis, so the coarser grid is an
    average of its neighbourhood rather than an aliased pick of voxels.
    """
    from nibabel.processing import resample_to_output, smooth_image

    extra = dict(img.extra)
    img = nib.as_closest_canonical(img)
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise PolydiffError(f"spacing must be three positive voxel sizes in mm, got {spacing}; set --data.spacing")
        zooms = np.array(img.header.get_zooms()[:3], dtype=np.float64)
        fwhm = np.sqrt(np.clip(np.square(spacing) - np.square(zooms), 0, None))
        if np.any(fwhm > 0):
            img = smooth_image(img, fwhm)
        img = resample_to_output(img, voxel_sizes=spacing, order=1)
    img.extra.update(extra)
    return img


def normalise(data: np.ndarray, percentiles: Sequence[float]) -> tuple[np.ndarray, tuple[float, float]]:
    """Map the ``percentiles`` (low, high) of ``data`` to -1 and 1 and clip; return the data and the raw range."""
    low_p, high_p = (float(p) for p in percentiles)
    if not 0 <= low_p < high_p <= 100:
        raise PolydiffError(f"percentiles must be two numbers 0 <= low < high <= 100, got {tuple(percentiles)}; set "
                            "--data.percentiles")
    lo, hi = (float(v) for v in np.percentile(data, [low_p, high_p]))
    if hi <= lo:
        hi = lo + 1.0  # a constant volume: anything maps to -1
    out = np.clip((data - lo) / (hi - lo) * 2 - 1, -1, 1).astype(np.float32)
    return out, (lo, hi)


def read_volume(path: str | Path, spacing: Optional[Sequence[float]] = None,
                percentiles: Sequence[float] = (0.5, 99.5)) -> NiftiVolume:
    """Read, check, reorient, resample and scale one volume (see the module docstring)."""
    img = conform(load_checked(path), spacing)
    data, rng = normalise(np.asarray(img.dataobj, dtype=np.float32), percentiles)
    return NiftiVolume(data, np.array(img.affine, dtype=np.float64), img.extra["source_header"],
                       tuple(img.extra["source_axcodes"]), rng, str(path))
