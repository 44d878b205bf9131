"""The model registry of the panel: listing without torch, import and export with the label table and card."""

from __future__ import annotations

import pytest

from DTCCore.data.labels import LEFT_ATRIUM, read_table, sidecar_path, write_sidecar
from DTCCore.errors import DTCError
from slicer_harness.fixtures import dtc_module, tiny_model  # noqa: F401  (puts DTCSegmentationLib on sys.path)

# isort: split
# DTCSegmentationLib is importable once slicer_harness.fixtures has put the module folder on sys.path
from DTCSegmentationLib import models  # noqa: E402


def test_import_and_export_keep_the_label_table(tiny_model, tmp_path):
    source = tmp_path / "incoming" / "liver.pt"
    source.parent.mkdir()
    source.write_bytes(tiny_model.read_bytes())
    write_sidecar(source, [LEFT_ATRIUM])
    imported = models.import_model(source, tmp_path / "models")
    assert imported.name == "model.pt" and imported.read_bytes() == source.read_bytes()
    assert read_table(imported, {}, 1) == [LEFT_ATRIUM]
    listed = models.list_models(tmp_path / "models")
    assert listed[0].bundled and [e.path for e in listed[1:]] == [imported]

    exported = models.export_model(imported, tmp_path / "out.pt")
    assert exported.read_bytes() == source.read_bytes() and sidecar_path(exported).exists()
    with pytest.raises(DTCError, match="already exists"):
        models.export_model(imported, tmp_path / "out.pt")
    bundled = models.export_model(models.bundled_model_path(), tmp_path / "la.pt")
    assert (tmp_path / "la.card.json").exists() and read_table(bundled, {}, 1)[0]["name"] == "Left atrium"


def test_import_refuses_what_is_not_a_model(tmp_path):
    fake = tmp_path / "notes.pt"
    fake.write_text("hello")
    with pytest.raises(DTCError, match="not a DTCSegmentation model"):
        models.import_model(fake, tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_describe_says_what_the_model_expects():
    text = models.describe({"title": "LA", "labels": [LEFT_ATRIUM],
                            "plan": {"patch": [80, 80, 48], "spacing": [1.0, 1.0, 1.25]},
                            "data": {"labeled": 16, "unlabeled": 64}, "validation_dice": 0.5293, "mode": "dtc"})
    for part in ("classes: Left atrium", "patch 80x80x48", "spacing [1.0, 1.0, 1.25] mm", "labeled 16",
                 "validation Dice 52.9%", "mode dtc"):
        assert part in text, (part, text)
    assert "thick-slice" not in text
    thick = models.describe({"plan": {"patch": [128, 128, 8], "pools": [4, 4, 3]}})
    assert "thick-slice network (axes x/y/z halved 4/4/3 times)" in thick, thick
    flat = models.describe({"plan": {"patch": [128, 128, 4], "pools": [4, 4, 0], "dims": 2}})
    assert "2-D network (segments slice by slice along the scan's third axis)" in flat and "halved" not in flat, flat
    assert models.describe({"error": "corrupt"}) == "Unreadable: corrupt"
    assert "test Dice" not in text and "largest" not in text
    shipped = models.describe({"test_dice": 0.88064, "config": {"infer": {"largest_component": True}}})
    assert "test Dice 88.06% as Segment runs it" in shipped and "keeps the largest connected component" in shipped


def _disk_full_after(monkeypatch, written: int) -> None:
    """The next file copies stop with ENOSPC after ``written`` bytes (shutil copies with os.sendfile on Linux)."""
    import errno
    import os

    def sendfile(out_fd, in_fd, offset, count):
        data = os.pread(in_fd, written, 0)
        os.write(out_fd, data)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "sendfile", sendfile)


def test_an_interrupted_import_or_export_leaves_no_partial_model(tiny_model, tmp_path, monkeypatch):
    source = tmp_path / "incoming" / "liver.pt"
    source.parent.mkdir()
    source.write_bytes(tiny_model.read_bytes())
    models_folder = tmp_path / "models"
    models_folder.mkdir()
    _disk_full_after(monkeypatch, len(models.MODEL_MAGIC) + 100)  # a model.pt that starts like one
    with pytest.raises((DTCError, OSError)):
        models.import_model(source, models_folder)
    listed = models.list_models(models_folder)
    assert [e for e in listed if not e.bundled] == [], "the model list shows a partial model"
    assert sorted(p.name for p in models_folder.rglob("*")) == []  # no run folder, no temp file
    with pytest.raises((DTCError, OSError)):
        models.export_model(source, tmp_path / "out.pt")
    assert sorted(p.name for p in tmp_path.glob("*out*")) == []
    monkeypatch.undo()
    exported = models.export_model(source, tmp_path / "out.pt")  # the next try succeeds
    assert exported.read_bytes() == source.read_bytes()
