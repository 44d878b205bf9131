"""Preview and training-curve PNGs: valid files, drawn contours, atomic writes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from DTCCore.evaluation.preview import LEVELSET_COLOR, SEGMENTATION_COLOR, save_curves, save_preview

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # PNG specification, section 5.2


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def colour_pixels(path, hex_colour: str, tol: float = 0.08) -> int:
    import matplotlib.colors
    import matplotlib.image

    rgb = np.array(matplotlib.colors.to_rgb(hex_colour))
    pixels = matplotlib.image.imread(str(path))[..., :3]
    return int((np.abs(pixels - rgb).max(-1) < tol).sum())


def sphere_case(shape=(30, 26, 12), centre=(18, 12, 6), radius=5.0):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    distance = np.linalg.norm(grid - np.array(centre), axis=-1)
    label = (distance <= radius).astype(np.uint8)
    levelset = np.clip((distance - radius - 1.0) / 10.0, -1, 1).astype(np.float32)  # zero line 1 voxel outside
    image = np.random.default_rng(0).normal(0, 0.2, shape).astype(np.float32) + label
    return image, label, levelset


def test_preview_png_with_both_contours(tmp_path):
    image, label, levelset = sphere_case()
    out = tmp_path / "preview.png"
    save_preview(out, image, label, levelset, spacing=(0.6, 0.6, 2.5), title="case 1")
    data = out.read_bytes()
    width, height = png_size(data)
    assert width >= 600 and height >= 300 and len(data) > 20_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png"]  # no temp file left
    assert colour_pixels(out, SEGMENTATION_COLOR) > 100  # contours and legend drawn
    assert colour_pixels(out, LEVELSET_COLOR) > 50


def test_preview_without_levelset_and_with_empty_label(tmp_path):
    image, label, _ = sphere_case()
    out = tmp_path / "empty.png"
    save_preview(out, image, np.zeros_like(label))
    assert png_size(out.read_bytes())[0] > 0
    assert colour_pixels(out, LEVELSET_COLOR) == 0  # no level set: no cyan line or legend entry
    save_preview(out, image, label)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png"]


def test_preview_rejects_mismatched_shapes(tmp_path):
    image, label, levelset = sphere_case()
    with pytest.raises(ValueError):
        save_preview(tmp_path / "x.png", image, label[:-1])
    with pytest.raises(ValueError):
        save_preview(tmp_path / "x.png", image, label, levelset[:, :-1])
    assert not list(tmp_path.iterdir())


def progress_records(n: int = 30, total: int = 600):
    records = [{"event": "start", "total": total}]
    for i in range(1, n + 1):
        it = i * 20
        records.append({
            "event": "progress", "iteration": it, "total": total,
            "losses": {"total": 1.5 / i, "dice": 1.0 / i, "lsf": 0.3 / i, "consistency": 0.0 if i < 3 else 0.01 / i},
            "lr": 0.01 if it < 250 else 0.001, "lambda": float(np.exp(-5 * (1 - it / total) ** 2)),
        })
    return records


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The matplotlib figures ``save_curves`` writes, captured on their way to the PNG file."""
    from DTCCore.evaluation import preview

    figures: list = []
    real = preview._write_png

    def capture(fig, path):
        figures.append(fig)
        return real(fig, path)

    monkeypatch.setattr(preview, "_write_png", capture)
    return figures


def lines_by_label(fig) -> dict:
    """{label: (x, y)} of every line drawn on the figure's axes (twin axes included), as float arrays."""
    return {line.get_label(): (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
            for ax in fig.axes for line in ax.get_lines()}


def test_curves_png(tmp_path, drawn):
    out = tmp_path / "sub" / "curves.png"
    records = progress_records()
    save_curves(out, records[::-1])  # any order: plotted by iteration
    data = out.read_bytes()
    width, height = png_size(data)
    assert width >= 600 and height >= 300 and len(data) > 20_000
    assert sorted(p.name for p in out.parent.iterdir()) == ["curves.png"]
    # what is drawn: every loss, lambda and the learning rate, point for point against the iteration
    (fig,) = drawn
    lines = lines_by_label(fig)
    progress = [r for r in records if r["event"] == "progress"]
    iterations = [r["iteration"] for r in progress]
    expected = {name: [r["losses"][name] for r in progress] for name in ("total", "dice", "lsf", "consistency")}
    expected["consistency"] = [v if v > 0 else np.nan for v in expected["consistency"]]  # log axis: 0 is a gap
    expected["lambda (consistency weight)"] = [r["lambda"] for r in progress]
    expected["learning rate"] = [r["lr"] for r in progress]
    assert set(lines) == set(expected)
    for label, values in expected.items():
        x, y = lines[label]
        np.testing.assert_array_equal(x, iterations, err_msg=label)
        np.testing.assert_allclose(y, values, rtol=1e-12, err_msg=label)  # NaN where expected NaN
    losses, schedule = fig.axes[:2]
    assert losses.get_yscale() == "log" and losses.get_xlim() == (0.0, 600.0) and schedule.get_xlim() == (0.0, 600.0)


def test_curves_with_no_progress_yet(tmp_path, drawn):
    out = tmp_path / "curves.png"
    save_curves(out, [{"event": "start", "total": 10}])
    assert png_size(out.read_bytes())[0] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]
    (fig,) = drawn
    assert lines_by_label(fig) == {}  # nothing plotted
    assert [[t.get_text() for t in ax.texts] for ax in fig.axes] == [["no progress yet"], ["no progress yet"]]
