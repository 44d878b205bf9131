"""Tests of DTCCore.data.manifest: format, relative paths, validation errors, add_labeled/add_unlabeled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from DTCCore.data.manifest import LabeledPair, Manifest, add_labeled, add_unlabeled, load_manifest, save_manifest
from DTCCore.errors import DTCError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def _dataset(root: Path, n_labeled=2, n_unlabeled=2) -> dict:
    data = {"labeled": [], "unlabeled": []}
    for i in range(n_labeled):
        _touch(root / f"c{i}" / "image.nrrd")
        _touch(root / f"c{i}" / "label.nrrd")
        data["labeled"].append({"image": f"c{i}/image.nrrd", "label": f"c{i}/label.nrrd"})
    for i in range(n_unlabeled):
        _touch(root / f"u{i}.nii.gz")
        data["unlabeled"].append(f"u{i}.nii.gz")
    return data


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_load_relative_paths(tmp_path, monkeypatch):
    data = _dataset(tmp_path)
    path = _write(tmp_path / "manifest.json", data)
    monkeypatch.chdir("/")  # relative to the manifest's folder, not to the working directory
    m = load_manifest(path)
    assert m.path == path
    assert m.labeled == [LabeledPair(tmp_path / f"c{i}" / "image.nrrd", tmp_path / f"c{i}" / "label.nrrd")
                         for i in range(2)]
    assert m.unlabeled == [tmp_path / "u0.nii.gz", tmp_path / "u1.nii.gz"]


def test_absolute_paths_and_no_unlabeled(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    img, lab = _touch(elsewhere / "a.nrrd"), _touch(elsewhere / "a_label.nrrd")
    (tmp_path / "ds").mkdir()
    path = _write(tmp_path / "ds" / "m.json", {"labeled": [{"image": str(img), "label": str(lab)}], "unlabeled": []})
    m = load_manifest(path)
    assert m.labeled == [LabeledPair(img, lab)] and m.unlabeled == []
    without_unlabeled = _write(tmp_path / "ds" / "n.json", {"labeled": [{"image": str(img), "label": str(lab)}]})
    assert load_manifest(without_unlabeled).unlabeled == []


def test_save_round_trip_relative_inside_absolute_outside(tmp_path):
    data = _dataset(tmp_path / "ds")
    outside = _touch(tmp_path / "other" / "v.nrrd")
    m = load_manifest(_write(tmp_path / "ds" / "manifest.json", data))
    m.unlabeled.append(outside)
    target = tmp_path / "ds" / "saved.json"
    save_manifest(m, target)
    raw = json.loads(target.read_text())
    assert raw["labeled"][1] == {"image": "c1/image.nrrd", "label": "c1/label.nrrd"}
    assert raw["unlabeled"] == ["u0.nii.gz", "u1.nii.gz", str(outside)]
    again = load_manifest(target)
    assert again.labeled == m.labeled and again.unlabeled == m.unlabeled and m.path == target
    assert not [p for p in (tmp_path / "ds").iterdir() if p.name.startswith(".")]  # no temp file left


def test_missing_manifest_and_folder(tmp_path):
    with pytest.raises(DTCError, match=r"manifest .*nope\.json does not exist"):
        load_manifest(tmp_path / "nope.json")
    with pytest.raises(DTCError, match="is a folder"):
        load_manifest(tmp_path)


def test_bad_json_gives_line_and_column(tmp_path):
    path = _write(tmp_path / "m.json", '{\n  "labeled": [\n    {"image": "a", "label": "b"},,\n  ]\n}')
    with pytest.raises(DTCError, match=r"not valid JSON .*line 3, column 34") as info:
        load_manifest(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "must be a JSON object"),
        ({"labelled": []}, r"unknown key\(s\) \['labelled'\]"),
        ({"labeled": {"image": "a"}}, "'labeled' must be a list"),
        ({"labeled": [{"image": "a"}]}, r"'labeled'\[0\] must be an object with exactly the keys"),
        ({"labeled": [{"image": "a", "label": 3}]}, r"'labeled'\[0\] 'image' and 'label' must be non-empty"),
        ({"labeled": [], "unlabeled": "u.nrrd"}, "'unlabeled' must be a list"),
        ({"labeled": [], "unlabeled": [7]}, r"'unlabeled'\[0\] must be a non-empty path"),
    ],
)
def test_wrong_structure(tmp_path, data, message):
    with pytest.raises(DTCError, match=message):
        load_manifest(_write(tmp_path / "m.json", data))


def test_missing_files_listed_up_to_five(tmp_path):
    data = {"labeled": [{"image": f"i{i}.nrrd", "label": f"l{i}.nrrd"} for i in range(4)], "unlabeled": ["u.nrrd"]}
    _touch(tmp_path / "i0.nrrd")
    with pytest.raises(DTCError, match=r"lists 8 missing file\(s\): .*l0\.nrrd, .*i1\.nrrd.* and 3 more; fix") as info:
        load_manifest(_write(tmp_path / "m.json", data))
    assert str(info.value).count(".nrrd") == 5
    assert "i0.nrrd" not in str(info.value)


def test_duplicates(tmp_path):
    data = _dataset(tmp_path)
    dup_unlabeled = dict(data, unlabeled=data["unlabeled"] + ["./u0.nii.gz"])
    with pytest.raises(DTCError, match=r"u0\.nii\.gz twice .*only once"):
        load_manifest(_write(tmp_path / "a.json", dup_unlabeled))
    both = dict(data, unlabeled=["c0/image.nrrd"])
    with pytest.raises(DTCError, match=r"twice \(as labeled image and as unlabeled image\)"):
        load_manifest(_write(tmp_path / "b.json", both))
    same_label = dict(data, labeled=data["labeled"] + [{"image": "u0.nii.gz", "label": "c0/label.nrrd"}], unlabeled=[])
    with pytest.raises(DTCError, match=r"label\.nrrd twice"):
        load_manifest(_write(tmp_path / "c.json", same_label))
    (tmp_path / "link.nrrd").symlink_to(tmp_path / "c1" / "image.nrrd")
    via_link = dict(data, unlabeled=["link.nrrd"])
    with pytest.raises(DTCError, match="twice"):
        load_manifest(_write(tmp_path / "d.json", via_link))


def test_no_labeled_pairs(tmp_path):
    data = _dataset(tmp_path, n_labeled=0)
    with pytest.raises(DTCError, match=r"no labeled pairs; training needs at least 1"):
        load_manifest(_write(tmp_path / "m.json", data))
    assert len(load_manifest(tmp_path / "m.json", require_labeled=False).unlabeled) == 2


def test_add_labeled_and_unlabeled(tmp_path):
    ds = tmp_path / "ds"
    img, lab = _touch(ds / "a" / "image.nrrd"), _touch(ds / "a" / "label.nrrd")
    manifest_path = ds / "manifest.json"
    m = add_unlabeled(manifest_path, _touch(ds / "u.nrrd"))  # creates the manifest
    assert m.unlabeled == [ds / "u.nrrd"] and m.labeled == []
    m = add_labeled(manifest_path, img, lab)
    assert m.labeled == [LabeledPair(img, lab)]
    raw = json.loads(manifest_path.read_text())
    assert raw == {"labeled": [{"image": "a/image.nrrd", "label": "a/label.nrrd"}], "unlabeled": ["u.nrrd"]}
    assert load_manifest(manifest_path).labeled == m.labeled
    with pytest.raises(DTCError, match="already in manifest"):
        add_labeled(manifest_path, img, lab)
    with pytest.raises(DTCError, match="already in manifest"):
        add_unlabeled(manifest_path, img)
    with pytest.raises(DTCError, match="already in manifest"):
        add_unlabeled(manifest_path, ds / "u.nrrd")
    with pytest.raises(DTCError, match=r"label .*missing\.nrrd does not exist"):
        add_labeled(manifest_path, _touch(ds / "b.nrrd"), ds / "missing.nrrd")
    assert json.loads(manifest_path.read_text()) == raw  # failed adds change nothing


def test_a_labeled_pair_replaces_the_unlabeled_scan_it_labels(tmp_path):
    """The annotation loop: a ranked unlabeled scan, corrected, becomes labeled and leaves the unlabeled list in
    the same write (never both, never ranked again); the pair may reuse the unlabeled image file itself."""
    ds = tmp_path / "ds"
    manifest_path = ds / "manifest.json"
    for name in ("u1", "u2", "u3"):
        add_unlabeled(manifest_path, _touch(ds / "images" / f"{name}.nrrd"))
    m = add_labeled(manifest_path, ds / "images" / "u2.nrrd", _touch(ds / "labels" / "u2.nrrd"),
                    replaces=ds / "images" / ".." / "images" / "u2.nrrd")  # matched on the resolved path
    assert m.unlabeled == [ds / "images" / "u1.nrrd", ds / "images" / "u3.nrrd"]
    assert m.labeled == [LabeledPair(ds / "images" / "u2.nrrd", ds / "labels" / "u2.nrrd")]
    m = add_labeled(manifest_path, _touch(ds / "new" / "image.nrrd"), _touch(ds / "new" / "label.nrrd"),
                    replaces=ds / "images" / "u3.nrrd")  # written as a new case: the old file is left alone
    assert m.unlabeled == [ds / "images" / "u1.nrrd"] and (ds / "images" / "u3.nrrd").is_file()
    raw = manifest_path.read_text()
    with pytest.raises(DTCError, match=r"u3\.nrrd is not an unlabeled volume of manifest"):
        add_labeled(manifest_path, _touch(ds / "c.nrrd"), _touch(ds / "c_label.nrrd"),
                    replaces=ds / "images" / "u3.nrrd")
    assert manifest_path.read_text() == raw
    assert load_manifest(manifest_path).unlabeled == [ds / "images" / "u1.nrrd"]


def test_manifest_defaults():
    m = Manifest()
    assert m.labeled == [] and m.unlabeled == [] and m.path is None
