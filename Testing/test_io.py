"""Tests of DTCCore.data.images: geometry round trips, the (x, y, z) convention and every user error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DTCCore.data import images as io
from DTCCore.data.images import Geometry, case_name, read_image, read_label, write_image
from DTCCore.errors import DTCError

# An oblique rotation (30 degrees about z, then 20 about x), det +1, so NIfTI can store it as a quaternion.
_A, _B = math.radians(30), math.radians(20)
_RZ = np.array([[math.cos(_A), -math.sin(_A), 0], [math.sin(_A), math.cos(_A), 0], [0, 0, 1]])
_RX = np.array([[1, 0, 0], [0, math.cos(_B), -math.sin(_B)], [0, math.sin(_B), math.cos(_B)]])
OBLIQUE = Geometry(spacing=(0.7, 1.3, 2.5), origin=(-12.5, 30.25, 7.0), direction=tuple((_RX @ _RZ).ravel()))


def _sitk_write(img: sitk.Image, path: Path, compress: bool = False) -> Path:
    sitk.WriteImage(img, str(path), useCompression=compress)
    return path


def _volume(shape=(6, 5, 4), dtype=np.float32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz", ".mha"])
def test_geometry_round_trip(tmp_path, ext):
    array = _volume()
    path = tmp_path / f"case{ext}"
    write_image(path, array, OBLIQUE)
    back, geometry = read_image(path)
    assert back.dtype == np.float32 and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(geometry.spacing, OBLIQUE.spacing, rtol=1e-6)
    np.testing.assert_allclose(geometry.origin, OBLIQUE.origin, atol=1e-5)
    np.testing.assert_allclose(geometry.direction, OBLIQUE.direction, atol=1e-6)
    assert geometry.same_grid(OBLIQUE, back.shape, array.shape)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_array_is_xyz_indexed(tmp_path):
    """array[x, y, z] is SimpleITK's pixel at index (x, y, z), both ways."""
    array = _volume(shape=(7, 5, 3))
    path = tmp_path / "a.nrrd"
    write_image(path, array, OBLIQUE)
    img = sitk.ReadImage(str(path))
    assert img.GetSize() == (7, 5, 3)
    assert img.GetPixel(6, 2, 1) == pytest.approx(float(array[6, 2, 1]))
    # a point's physical position follows SimpleITK (origin + direction @ (index * spacing))
    direction = np.reshape(OBLIQUE.direction, (3, 3))
    expected = np.array(OBLIQUE.origin) + direction @ (np.array([6, 2, 1]) * OBLIQUE.spacing)
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((6, 2, 1)), expected, atol=1e-6)
    src = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))  # (z, y, x)
    back, _ = read_image(_sitk_write(src, tmp_path / "b.nrrd"))
    assert back.shape == (5, 4, 3) and back[4, 1, 2] == src.GetPixel(4, 1, 2)


def test_write_bool_and_overwrite_keeps_permissions(tmp_path):
    path = tmp_path / "m.nrrd"
    write_image(path, np.ones((3, 3, 3)), Geometry())
    mask = np.zeros((4, 3, 2), bool)
    mask[1, 2, 1] = True
    write_image(path, mask, Geometry())
    img = sitk.ReadImage(str(path))
    assert img.GetPixelID() == sitk.sitkUInt8 and img.GetSize() == (4, 3, 2) and img.GetPixel(1, 2, 1) == 1
    assert path.stat().st_mode & 0o044  # readable by others (mkstemp alone would give 0600)


def test_temp_file_has_same_extension_and_is_renamed(tmp_path, monkeypatch):
    seen = []
    real = sitk.WriteImage

    def spy(img, name, *args, **kwargs):
        seen.append(Path(name))
        return real(img, name, *args, **kwargs)

    monkeypatch.setattr(io.sitk, "WriteImage", spy)
    write_image(tmp_path / "seg.nii.gz", np.zeros((2, 2, 2), np.uint8), Geometry())
    assert len(seen) == 1 and seen[0].parent == tmp_path and seen[0].name.startswith(".seg.")
    assert seen[0].name.endswith(".nii.gz") and not seen[0].exists()
    assert (tmp_path / "seg.nii.gz").exists()


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken(img, name, *args, **kwargs):
        Path(name).write_bytes(b"partial")
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: No space left on device")

    monkeypatch.setattr(io.sitk, "WriteImage", broken)
    with pytest.raises(DTCError, match="out.nrrd.*free disk space"):
        write_image(tmp_path / "out.nrrd", np.zeros((2, 2, 2)), Geometry())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["under_file", "proc"])
def test_unwritable_folder(tmp_path, where):
    if where == "under_file":
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "out.nrrd"
    else:
        target = Path("/proc/dtc_test_out.nrrd")
    with pytest.raises(DTCError, match="cannot write"):
        write_image(target, np.zeros((2, 2, 2)), Geometry())
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["afile"] if where == "under_file" else [])


def test_missing_and_folder(tmp_path):
    with pytest.raises(DTCError, match=r"nope\.nrrd does not exist"):
        read_image(tmp_path / "nope.nrrd")
    with pytest.raises(DTCError, match="is a folder"):
        read_image(tmp_path)


def test_text_file_named_nrrd(tmp_path):
    path = tmp_path / "fake.nrrd"
    path.write_text("this is not an image\n")
    with pytest.raises(DTCError, match=r"fake\.nrrd.*as an image") as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_truncated_nrrd(tmp_path):
    path = _sitk_write(sitk.GetImageFromArray(_volume((20, 20, 20))), tmp_path / "t.nrrd")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DTCError, match="truncated or corrupt"):
        read_image(path)


def test_2d_and_4d(tmp_path):
    p2 = _sitk_write(sitk.Image([5, 6], sitk.sitkFloat32), tmp_path / "flat.nrrd")
    with pytest.raises(DTCError, match="is a 2D image; a 3D volume is required"):
        read_image(p2)
    p4 = _sitk_write(sitk.Image([3, 3, 3, 2], sitk.sitkFloat32), tmp_path / "time.nii.gz")
    with pytest.raises(DTCError, match="is a 4D image"):
        read_image(p4)


def test_vector_image(tmp_path):
    path = _sitk_write(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), tmp_path / "rgb.nrrd")
    with pytest.raises(DTCError, match="3 components per voxel"):
        read_image(path)
    with pytest.raises(DTCError, match="components per voxel"):
        read_label(path, Geometry(), (4, 4, 4))


def test_nan_and_inf(tmp_path):
    array = _volume((4, 4, 4))
    array[0, 0, 0] = np.nan
    array[1, 2, 3] = np.inf
    array[2, 2, 2] = np.nan
    path = _sitk_write(sitk.GetImageFromArray(array), tmp_path / "nan.nrrd")
    with pytest.raises(DTCError, match="has 3 NaN or infinite"):
        read_image(path)


def _nrrd_header(path: Path, sizes: str) -> Path:
    path.write_text(f"NRRD0004\ntype: float\ndimension: 3\nsizes: {sizes}\nencoding: raw\nendian: little\n\n")
    return path


def test_huge_image_refused_from_header(tmp_path, monkeypatch):
    """A 1e9-voxel header is refused before any voxel is read (the file holds no voxels at all)."""
    monkeypatch.setattr(io, "available_memory_bytes", lambda: 8 * 2**30)
    path = _nrrd_header(tmp_path / "huge.nrrd", "1000 1000 1000")
    with pytest.raises(DTCError, match=r"too large for the available memory.*1,000,000,000 voxels.*11\.2 GiB"):
        read_image(path)


def test_memory_check_uses_available_memory(tmp_path, monkeypatch):
    path = tmp_path / "s.nrrd"
    write_image(path, _volume((10, 10, 10)), Geometry())
    monkeypatch.setattr(io, "available_memory_bytes", lambda: 1000 * io.WORKING_BYTES_PER_VOXEL - 1)
    with pytest.raises(DTCError, match="crop or downsample"):
        read_image(path)
    monkeypatch.setattr(io, "available_memory_bytes", lambda: 1000 * io.WORKING_BYTES_PER_VOXEL)
    assert read_image(path)[0].shape == (10, 10, 10)
    monkeypatch.undo()
    free = io.available_memory_bytes()
    assert free is None or free > 0


def test_zero_voxels(tmp_path, monkeypatch):
    class EmptyHeader:  # what ReadImageInformation reports for a 0-sized volume
        def GetDimension(self):
            return 3

        def GetNumberOfComponents(self):
            return 1

        def GetSize(self):
            return (0, 4, 4)

    with pytest.raises(DTCError, match=r"has no voxels \(size 0x4x4\)"):
        io._check_header(tmp_path / "e.nrrd", EmptyHeader())


def _label_file(tmp_path, values, name="lab.nrrd", geometry=Geometry()) -> Path:
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(values).transpose(2, 1, 0)))
    return _sitk_write(geometry.apply_to(img), tmp_path / name)


def test_read_label_ok(tmp_path):
    values = np.zeros((5, 4, 3), np.float32)
    values[1:3, 1:3, 1] = 1.0
    path = _label_file(tmp_path, values, geometry=OBLIQUE)
    label = read_label(path, OBLIQUE, (5, 4, 3), 1)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, values.astype(np.uint8))
    empty = _label_file(tmp_path, np.zeros((5, 4, 3), np.uint8), "empty.nrrd")
    assert not read_label(empty, Geometry(), (5, 4, 3)).any()  # empty labels are the caller's business
    multi = _label_file(tmp_path, np.arange(60, dtype=np.uint16).reshape(5, 4, 3) % 3, "multi.nrrd")
    assert read_label(multi, Geometry(), (5, 4, 3), num_classes=2).max() == 2


@pytest.mark.parametrize(
    "label_geometry, shape",
    [
        (Geometry(origin=(0.0, 0.0, 1.0)), (5, 4, 3)),
        (Geometry(spacing=(1.0, 1.0, 1.1)), (5, 4, 3)),
        (Geometry(direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)), (5, 4, 3)),
        (Geometry(), (5, 4, 4)),
    ],
)
def test_read_label_wrong_grid(tmp_path, label_geometry, shape):
    path = _label_file(tmp_path, np.zeros(shape, np.uint8), geometry=label_geometry)
    with pytest.raises(DTCError, match=r"not on the image grid: label size .* vs image size 5x4x3.*resample") as info:
        read_label(path, Geometry(), (5, 4, 3))
    assert "\n" not in str(info.value)


def test_read_label_tolerates_header_rounding(tmp_path):
    rounded = Geometry(spacing=(0.7 * (1 + 1e-7), 1.3, 2.5), origin=(-12.5 + 1e-6, 30.25, 7.0),
                       direction=tuple(np.asarray(OBLIQUE.direction) + 1e-7))
    path = _label_file(tmp_path, np.ones((5, 4, 3), np.uint8), geometry=rounded)
    assert read_label(path, OBLIQUE, (5, 4, 3)).all()


@pytest.mark.parametrize(
    "values, classes, message",
    [
        (np.array([0, 255], np.uint8), 1, r"has values \{0, 255\}; a 1-class model expects 0/1 — binarise it"),
        (np.array([0, 1, 2, 3], np.uint8), 2, r"has values \{0, 1, 2, 3\}; a 2-class model expects integers 0\.\.2"),
        (np.array([-1, 0, 1], np.int8), 1, r"has values \{-1, 0, 1\}"),
        (np.array([0, 0.5, 1], np.float32), 1, r"has values \{0, 0\.5, 1\}.*integer classes"),
    ],
)
def test_read_label_bad_values(tmp_path, values, classes, message):
    array = np.resize(values, 60).reshape(5, 4, 3)
    path = _label_file(tmp_path, array)
    with pytest.raises(DTCError, match=message):
        read_label(path, Geometry(), (5, 4, 3), classes)


def test_geometry_describe_and_same_grid():
    text = OBLIQUE.describe((5, 4, 3))
    assert text.startswith("size 5x4x3, spacing 0.7x1.3x2.5 mm, origin (-12.5, 30.25, 7)")
    assert OBLIQUE.same_grid(OBLIQUE) and not OBLIQUE.same_grid(OBLIQUE, (1, 2, 3), (1, 2, 4))
    assert not OBLIQUE.same_grid(Geometry())
    img = OBLIQUE.apply_to(sitk.Image([2, 2, 2], sitk.sitkUInt8))
    assert Geometry.from_sitk(img).same_grid(OBLIQUE, tol=1e-9)


@pytest.mark.parametrize(
    "path, name",
    [
        ("/d/case07.nii.gz", "case07"),
        ("/d/case07.NII.GZ", "case07"),
        ("/d/case07.nrrd", "case07"),
        ("/d/Segmentation.seg.nrrd", "Segmentation"),
        ("/d/a.b.mha", "a.b"),
        ("/d/x.mhd", "x"),
        ("/data/la2018/0RZDK210BSMWAA6467LU/image.nrrd", "0RZDK210BSMWAA6467LU"),
        ("/data/la2018/0RZDK210BSMWAA6467LU/label.nrrd", "0RZDK210BSMWAA6467LU"),
        ("scan.nii", "scan"),
    ],
)
def test_case_name(path, name):
    assert case_name(path) == name


def test_bundled_sample_reads():
    root = Path(__file__).resolve().parents[1] / "DTCCore" / "sample"
    image, geometry = read_image(root / "la_sample_image.nrrd")
    label = read_label(root / "la_sample_label.nrrd", geometry, image.shape, 1)
    assert image.shape == label.shape == (175, 132, 88)
    assert set(np.unique(label)) == {0, 1}
    assert geometry.spacing == pytest.approx((0.625, 0.625, 0.625))
