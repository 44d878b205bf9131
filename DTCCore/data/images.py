"""Reading and writing 3D volumes with their geometry (SimpleITK, LPS conventions).

Arrays returned and accepted here are indexed **(x, y, z)**: the transpose of
``SimpleITK.GetArrayFromImage`` (which is (z, y, x)). Geometry follows SimpleITK: ``spacing`` in mm per
voxel along x, y, z; ``origin`` the LPS position in mm of voxel (0, 0, 0); ``direction`` the 3x3 matrix
of the axis directions, row-major (9 floats), columns being the x, y, z axes.

Every problem a user can fix (missing file, wrong dimension, label on another grid...) raises a
one-line :class:`~DTCCore.errors.DTCError` that names the file and the fix.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..atomic import default_file_mode, silent_unlink
from ..errors import DTCError

# Bytes of RAM needed per voxel while a volume is read and used: the float32 array (4), SimpleITK's
# own buffer during the read (4) and a float32 working copy (normalisation, padding) (4). Our estimate.
WORKING_BYTES_PER_VOXEL = 12
# Relative tolerance used to decide that two grids are the same. Our choice: loose enough for the
# float32 rounding of NIfTI headers (~1e-7 relative), tight enough to catch a real resampling.
GRID_TOLERANCE = 1e-4
# Extensions stripped by case_name, longest first so ".seg.nrrd" wins over ".nrrd".
_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd", ".nhdr", ".hdr", ".img")
# Generic file names inside a case folder (LA2018: <case>/image.nrrd, <case>/label.nrrd; the raw
# challenge data: lgemri.nrrd / laendo.nrrd): the case is named after the folder instead.
_GENERIC_STEMS = frozenset({"image", "label", "mask", "lgemri", "laendo"})


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid lies in space (SimpleITK/LPS conventions, mm)."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def from_sitk(cls, img: sitk.Image | sitk.ImageFileReader) -> "Geometry":
        """Geometry of a 3D SimpleITK image (or of a reader after ``ReadImageInformation``)."""
        sx, sy, sz = (float(v) for v in img.GetSpacing())
        ox, oy, oz = (float(v) for v in img.GetOrigin())
        return cls(
            spacing=(sx, sy, sz),
            origin=(ox, oy, oz),
            direction=tuple(float(v) for v in img.GetDirection()),
        )

    def apply_to(self, img: sitk.Image) -> sitk.Image:
        """Set this geometry on ``img`` (in place) and return it."""
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    def same_grid(self, other: "Geometry", shape_a=None, shape_b=None, tol: float = GRID_TOLERANCE) -> bool:
        """True when both grids have the same size (if given), spacing, origin and direction.

        Spacing is compared relatively (``tol``), the origin within ``tol`` x the largest of 1 mm and the
        coordinates' magnitude, the direction cosines within ``10 * tol`` (NIfTI stores them as float32
        quaternions).
        """
        if shape_a is not None and shape_b is not None and tuple(shape_a) != tuple(shape_b):
            return False
        sa, sb = np.asarray(self.spacing), np.asarray(other.spacing)
        oa, ob = np.asarray(self.origin), np.asarray(other.origin)
        da, db = np.asarray(self.direction), np.asarray(other.direction)
        if sa.shape != sb.shape or oa.shape != ob.shape or da.shape != db.shape:
            return False
        if np.any(np.abs(sa - sb) > tol * np.maximum(np.abs(sa), np.abs(sb))):
            return False
        scale = max(1.0, float(np.max(np.abs(np.concatenate([oa, ob])))))
        if np.any(np.abs(oa - ob) > tol * scale):
            return False
        return bool(np.all(np.abs(da - db) <= 10 * tol))

    def describe(self, shape=None) -> str:
        """Short human-readable text, e.g. ``size 175x132x88, spacing 0.625x0.625x0.625 mm, ...``."""
        parts = []
        if shape is not None:
            parts.append("size " + "x".join(str(int(s)) for s in shape))
        parts.append("spacing " + "x".join(f"{v:.6g}" for v in self.spacing) + " mm")
        parts.append("origin (" + ", ".join(f"{v:.6g}" for v in self.origin) + ")")
        parts.append("direction (" + ", ".join(f"{v:.4g}" for v in self.direction) + ")")
        return ", ".join(parts)


def available_memory_bytes() -> int | None:
    """RAM the process can still use, in bytes (``MemAvailable`` of /proc/meminfo), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _read_header(path: Path) -> sitk.ImageFileReader:
    if not path.exists():
        raise DTCError(f"image file {path} does not exist; check the path")
    if path.is_dir():
        raise DTCError(f"{path} is a folder, not an image file; give the path of a .nrrd/.nii.gz/.mha file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DTCError(
            f"cannot read {path} as an image (not an image file, or a format SimpleITK does not know); "
            "save it as .nrrd, .nii.gz or .mha"
        ) from None
    return reader


def _check_header(path: Path, reader: sitk.ImageFileReader) -> tuple[int, ...]:
    dim = reader.GetDimension()
    if dim != 3:
        raise DTCError(f"{path} is a {dim}D image; a 3D volume is required (save a single 3D volume)")
    if reader.GetNumberOfComponents() != 1:
        raise DTCError(
            f"{path} has {reader.GetNumberOfComponents()} components per voxel (vector/RGB); "
            "a scalar (grey-level) volume is required: convert it to a single channel"
        )
    size = tuple(int(s) for s in reader.GetSize())
    n = int(np.prod(size, dtype=np.int64))
    if n == 0:
        raise DTCError(f"{path} has no voxels (size {'x'.join(map(str, size))}); check the file")
    need = n * WORKING_BYTES_PER_VOXEL
    avail = available_memory_bytes()
    if avail is not None and need > avail:
        raise DTCError(
            f"{path} is too large for the available memory: {'x'.join(map(str, size))} = {n:,} voxels need "
            f"about {need / 2**30:.1f} GiB, only {avail / 2**30:.1f} GiB is free; crop or downsample it first"
        )
    return size


def _execute(path: Path, reader: sitk.ImageFileReader, pixel_type: int | None) -> sitk.Image:
    if pixel_type is not None:
        reader.SetOutputPixelType(pixel_type)
    try:
        return reader.Execute()
    except RuntimeError:
        raise DTCError(f"cannot read the voxels of {path} (the file is truncated or corrupt); "
                       "export it again") from None
    except MemoryError:
        raise DTCError(f"not enough memory to read {path}; close other programs or crop the volume") from None


def _to_xyz(img: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(img).transpose(2, 1, 0))


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a 3D scalar volume.

    Returns ``(array, geometry)``: ``array`` float32 of shape (X, Y, Z) (intensity units of the file),
    ``geometry`` its :class:`Geometry`. Raises DTCError for a missing, unreadable or truncated file,
    a non-3D or multi-component image, zero voxels, NaN/Inf intensities, or an image too large for the
    available memory (checked from the header, before reading the voxels).
    """
    path = Path(path)
    reader = _read_header(path)
    _check_header(path, reader)
    img = _execute(path, reader, sitk.sitkFloat32)
    array = _to_xyz(img)
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise DTCError(f"{path} has {bad:,} NaN or infinite intensities; replace them (e.g. by 0) and save it again")
    return array, Geometry.from_sitk(img)


def read_label(path: str | os.PathLike, geometry: Geometry, shape, num_classes: int = 1) -> np.ndarray:
    """Read a label map that must lie on the image grid ``(geometry, shape)``.

    Returns uint8 (X, Y, Z) with values in 0..num_classes (0 = background). Raises DTCError when the
    grid differs from the image's (size, spacing, origin, direction), or the values are not integers
    in 0..num_classes. An empty label (all 0) is returned as is: the caller decides.
    """
    path = Path(path)
    reader = _read_header(path)
    size = _check_header(path, reader)
    label_geometry = Geometry.from_sitk(reader)
    if not geometry.same_grid(label_geometry, tuple(shape), size):
        raise DTCError(
            f"label {path} is not on the image grid: label {label_geometry.describe(size)} vs image "
            f"{geometry.describe(shape)}; resample the label to the image (nearest neighbour)"
        )
    img = _execute(path, reader, None)
    values = _to_xyz(img)
    lo, hi = (values.min(), values.max())
    is_int = np.issubdtype(values.dtype, np.integer)
    if is_int and 0 <= lo and hi <= num_classes:
        return values.astype(np.uint8, copy=False)
    if not is_int:
        finite = np.isfinite(values)
        if finite.all() and np.array_equal(values, np.round(values)) and 0 <= lo and hi <= num_classes:
            return values.astype(np.uint8)
    found = np.unique(values)
    shown = ", ".join(f"{v:g}" for v in found[:10]) + (", ..." if found.size > 10 else "")
    expected = "0/1" if num_classes == 1 else f"integers 0..{num_classes}"
    if num_classes == 1 and is_int and lo >= 0:
        fix = "binarise it (label > 0)"
    elif num_classes > 1 and is_int and lo >= 0:
        fix = f"remap its values to 0..{num_classes} or set num_classes to match"
    else:
        fix = f"save it as integer classes 0..{num_classes}"
    raise DTCError(
        f"label {path} has values {{{shown}}}; a {num_classes}-class model expects {expected} — {fix}"
    )


def label_values(path: str | os.PathLike) -> list[int]:
    """The nonzero values of a label map, sorted (``dtc train`` counts a new model's classes from them).

    Reads the whole file. Raises DTCError for values that are not whole numbers >= 0 (a probability map or
    a signed label), naming them and the fix.
    """
    path = Path(path)
    reader = _read_header(path)
    _check_header(path, reader)
    img = _execute(path, reader, None)
    values = sitk.GetArrayViewFromImage(img)  # a view: img must stay referenced while it is read
    if np.issubdtype(values.dtype, np.integer) and values.min() >= 0:
        found = np.flatnonzero(np.bincount(values.ravel().astype(np.int64, copy=False))) if values.max() < 2**16 \
            else np.unique(values)
        return [int(v) for v in found if v != 0]
    found = np.unique(values)
    if np.isfinite(found).all() and np.array_equal(found, np.round(found)) and found.min() >= 0:
        return [int(v) for v in found if v != 0]
    shown = ", ".join(f"{v:g}" for v in found[:10]) + (", ..." if found.size > 10 else "")
    raise DTCError(f"label {path} has values {{{shown}}}; a label map holds whole classes 0, 1, 2, ... "
                   "(0 = background) — save it as integer classes")


def _full_extension(name: str) -> str:
    lower = name.lower()
    for ext in _EXTENSIONS:
        if lower.endswith(ext):
            return name[len(name) - len(ext):]
    return Path(name).suffix


def write_image(path: str | os.PathLike, array_xyz: np.ndarray, geometry: Geometry, compress: bool = True) -> None:
    """Write ``array_xyz`` (X, Y, Z) with ``geometry`` to ``path``, atomically.

    The file type follows the extension (.nrrd, .nii.gz, .mha...). The volume is written to a temp file
    in the same folder with the same extension, then renamed over ``path``: a reader sees the old file or
    the new one, never a part. bool arrays are written as uint8. Raises DTCError when the folder cannot
    be written (the temp file is removed).
    """
    array = np.asarray(array_xyz)
    if array.ndim != 3:
        raise DTCError(f"cannot write {path}: a 3D (x, y, z) array is required, got shape {array.shape}")
    write_image_zyx(path, array.transpose(2, 1, 0), geometry, compress)


def write_image_zyx(path: str | os.PathLike, array_zyx: np.ndarray, geometry: Geometry, compress: bool = True) -> None:
    """:func:`write_image` of an array in SimpleITK's (Z, Y, X) order (Slicer's (K, J, I)): a C-contiguous array
    of any numeric type is written as it is, its only copy SimpleITK's own."""
    path = Path(path)
    array = np.asarray(array_zyx)
    if array.ndim != 3:
        raise DTCError(f"cannot write {path}: a 3D (z, y, x) array is required, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    geometry.apply_to(img)
    ext = _full_extension(path.name) or ".nrrd"
    base = path.name[: len(path.name) - len(ext)] if path.name.endswith(ext) else path.name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-", suffix=ext, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise DTCError(f"cannot write to folder {path.parent} ({exc.strerror}); choose a writable folder") from None
    try:
        sitk.WriteImage(img, tmp, useCompression=compress)
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600 files; give the user's usual permissions
        os.replace(tmp, path)
    except (RuntimeError, OSError) as exc:
        silent_unlink(tmp)
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1][:200]
        raise DTCError(f"cannot write {path} ({reason}); free disk space or choose another folder") from None
    except BaseException:
        silent_unlink(tmp)
        raise


def case_name(path: str | os.PathLike) -> str:
    """Name of a case from its file: ``/d/case07.nii.gz`` -> ``case07``; ``/d/case07/image.nrrd`` -> ``case07``."""
    path = Path(path)
    ext = _full_extension(path.name)
    stem = path.name[: len(path.name) - len(ext)] if ext else path.name
    if stem.lower() in _GENERIC_STEMS and path.parent.name:
        return path.parent.name
    return stem
