"""The bundled model's card, ``dtc info`` and the README state what ``dtc segment`` gives with the shipped settings.

The card's test numbers were measured with ``dtc segment`` (no option) and ``dtc evaluate`` on the 20 LA
test scans (bench/results/la-model.md, 2026-12-04); these tests cannot read that data, so they tie the card to the
shipped model: its post-processing is the one the card was scored with and the one chosen on validation,
and every place a user reads the test Dice shows the card's number.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import REPO, SAMPLE_IMAGE, bench_module
from DTCCore.cli import main
from DTCCore.config import DTCConfig
from DTCCore.model.checkpoint import DEFAULT_MODEL, read_model_info

CARD = REPO / "DTCCore" / "models" / "default.json"
CONNECTIVITY_26 = np.ones((3, 3, 3), bool)  # postprocess.largest_component's connectivity


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shipped() -> dict:
    return read_model_info(DEFAULT_MODEL)


def test_shipped_post_processing_is_the_one_chosen_on_validation(card, shipped):
    assert card["sha256"] == hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()  # the card is of this file
    assert card["size_bytes"] == DEFAULT_MODEL.stat().st_size
    infer = shipped["config"]["infer"]
    # the card predates the name infer.tta (it stores infer.mirror): read it as a saved config is read
    assert infer == DTCConfig.from_dict(card["config"]).to_dict()["infer"]
    assert infer["largest_component"] is card["validation"]["largest_component"]
    assert infer["tta"] is card["validation"]["mirror"]


def test_card_headline_is_the_shipped_settings_score(card, shipped):
    """The headline test Dice is the mean of the per-case scores of the post-processing that ships."""
    which = "lcc" if shipped["config"]["infer"]["largest_component"] else "raw"
    rows = card["test"]["per_case"]
    assert len(rows) == card["test"]["cases"] == 20
    assert card["test"]["mean"]["dice"] == pytest.approx(np.mean([r[which]["dice"] for r in rows]), abs=1e-9)
    other = "raw" if which == "lcc" else "lcc"
    assert card["test"]["mean"]["dice"] != pytest.approx(np.mean([r[other]["dice"] for r in rows]), abs=1e-6)


def test_dtc_info_model_card_and_readme_state_the_card_number(card, capsys):
    dice = card["test"]["mean"]["dice"]
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out.splitlines()[0])
    assert info["test_dice"] == pytest.approx(dice, abs=1e-12)
    render_card = bench_module("make_default_model").render_card
    assert (REPO / "DTCCore" / "models" / "MODEL_CARD.md").read_text(encoding="utf-8") == render_card(card)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    stated = f"{100 * dice:.2f} %"
    assert readme.count(stated) >= 2, f"README should state the bundled model's test Dice as {stated}"
    raw = card["test"]["mean_without_postprocessing"]["dice"]
    assert f"{100 * raw:.2f} % with `--no-largest-component`" in readme


def _components(path) -> int:
    return ndimage.label(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0, CONNECTIVITY_26)[1]


def test_dtc_segment_applies_the_models_post_processing_unless_told(tmp_path, shipped):
    """Two atria side by side: by default the bundled model keeps one, ``--no-largest-component`` both."""
    assert shipped["config"]["infer"]["largest_component"] is True
    sample = sitk.ReadImage(str(SAMPLE_IMAGE))
    array = sitk.GetArrayFromImage(sample)  # (z, y, x)
    twin = sitk.GetImageFromArray(np.concatenate([array, array], axis=2))
    twin.SetSpacing(sample.GetSpacing())
    twin.SetOrigin(sample.GetOrigin())
    twin.SetDirection(sample.GetDirection())
    scan = tmp_path / "twin.nrrd"
    sitk.WriteImage(twin, str(scan))
    common = ["segment", str(scan), "--device", "cpu", "--no-mirror"]  # mirroring is not what this test is about
    assert main([*common, "-o", str(tmp_path / "default")]) == 0
    assert main([*common, "-o", str(tmp_path / "all"), "--no-largest-component"]) == 0
    assert _components(tmp_path / "all" / "twin_seg.nrrd") >= 2
    assert _components(tmp_path / "default" / "twin_seg.nrrd") == 1

