"""Writing what the medical domain generates: NIfTI files with the geometry kept, and PNGs of orthogonal slices.

The geometry arrives as plain data (see :class:`polydiff.domains.medical.protocol.MedicalData`): a dict with
``affine`` (4x4, of the RAS+ array written), optionally ``header`` (the source file's binary NIfTI header: data type,
units, description are kept), ``axcodes`` (the source orientation: the array is reoriented back to it, so a file read
and written again has the same axis codes and affine) and ``intensity_range`` (the raw intensities that -1 and 1 stand
for, so files are written in the source's units).
"""

from io import BytesIO
from pathlib import Path
from typing import Any, Mapping, Optional

import nibabel as nib
import numpy as np
from PIL import Image
from torch import Tensor

from polydiff.core.utils import PolydiffError


def _as_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)


def to_volume(x: Tensor | np.ndarray) -> np.ndarray:
    """A ``[1, X, Y]`` / ``[1, X, Y, Z]`` (or channel-less) item as an ``[X, Y, Z]`` array (2D slices get Z = 1)."""
    a = _as_numpy(x)
    if a.ndim in (3, 4) and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise PolydiffError(f"cannot write an array of shape {a.shape} as a volume; pass [X, Y], [X, Y, Z] or with a "
                            "leading channel of 1")
    return a


def header_from_bytes(block: Optional[bytes]) -> nib.Nifti1Header:
    if not block:
        return nib.Nifti1Header()
    if len(block) == 540:
        return nib.Nifti2Header.from_fileobj(BytesIO(block))
    return nib.Nifti1Header.from_fileobj(BytesIO(block))


def write_nifti(x: Tensor | np.ndarray, geometry: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``x`` (model units in [-1, 1], ``[X, Y(, Z)]`` on the RAS+ grid of ``geometry["affine"]``) as NIfTI."""
    path = Path(path)
    data = to_volume(x)
    lo, hi = geometry.get("intensity_range") or (-1.0, 1.0)
    data = (np.clip(data, -1, 1) + 1) / 2 * (hi - lo) + lo
    src = header_from_bytes(geometry.get("header"))
    header = nib.Nifti1Header()
    for key in ("xyzt_units", "descrip", "intent_code", "intent_name", "qform_code", "sform_code"):
        header[key] = src[key]
    dtype = src.get_data_dtype()
    header.set_data_dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    affine = np.asarray(geometry["affine"], dtype=np.float64)
    img = nib.Nifti1Image(data.astype(np.float32), affine, header)
    img.set_qform(affine, int(src["qform_code"]) or 1)
    img.set_sform(affine, int(src["sform_code"]) or 1)
    codes = geometry.get("axcodes")
    if codes and tuple(codes) != nib.aff2axcodes(affine):
        ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                               nib.orientations.axcodes2ornt(tuple(codes)))
        img = img.as_reoriented(ornt)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def orthogonal_slices(x: Tensor | np.ndarray, gap: int = 2) -> np.ndarray:
    """Axial, coronal and sagittal slices through the centre of a RAS+ ``[X, Y, Z]`` volume side by side (uint8,
    anterior and superior up); a 2D slice (Z = 1) is shown alone."""
    v = (np.clip(to_volume(x), -1, 1) + 1) / 2
    axial = np.rot90(v[:, :, v.shape[2] // 2])  # rows: y (anterior up), columns: x
    if v.shape[2] == 1:
        return (axial * 255).round().astype(np.uint8)
    coronal = np.rot90(v[:, v.shape[1] // 2, :])  # rows: z (superior up), columns: x
    sagittal = np.rot90(v[v.shape[0] // 2, :, :])  # rows: z, columns: y
    h = max(p.shape[0] for p in (axial, coronal, sagittal))
    panels = [np.pad(p, ((0, h - p.shape[0]), (0, gap))) for p in (axial, coronal, sagittal)]
    return (np.concatenate(panels, axis=1)[:, :-gap] * 255).round().astype(np.uint8)


def save_slices_png(x: Tensor | np.ndarray, path: str | Path, scale: int = 4) -> Path:
    """PNG of :func:`orthogonal_slices`, enlarged ``scale`` times (nearest neighbour)."""
    path = Path(path)
    img = orthogonal_slices(x)
    Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST).save(path)
    return path


def write_item(x: Tensor | np.ndarray, geometry: Mapping[str, Any], stem: str | Path) -> list[Path]:
    """``stem.nii.gz`` and ``stem.png`` for one volume or slice."""
    stem = Path(stem)
    return [write_nifti(x, geometry, stem.with_name(stem.name + ".nii.gz")),
            save_slices_png(x, stem.with_name(stem.name + ".png"))]
