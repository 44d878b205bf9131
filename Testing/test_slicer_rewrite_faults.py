"""The Slicer module's rewritten files survive a write that fails partway (real MRML; faults: write_faults.py).

The dataset's ``manifest.json`` as the panel's "Add ... as labeled example" and "Add unlabeled" rewrite it, and
a run folder's ``requested_config.json`` (written again when a fine-tune is resumed). The engine's own
rewritten files are in test_rewrite_faults.py. The previous file must stay byte for byte and list exactly
its old entries, and a case whose manifest entry could not be written leaves no image or label behind.
"""

from __future__ import annotations

import json

import pytest

from slicer_harness.fixtures import dtc_module, slicer_scene  # noqa: F401
from test_slicer_logic import corrected_segmentation, make_volume
from write_faults import FAULTS, folder_state, inject


@pytest.mark.parametrize("fault", FAULTS)
def test_dataset_manifest_keeps_its_cases_when_adding_one_fails(slicer_scene, dtc_module, tmp_path, monkeypatch,
                                                                fault):
    logic, ds = dtc_module.DTCSegmentationLogic(), tmp_path / "ds"
    first, _ = make_volume("Case A")
    logic.addLabeledExample(ds, first, corrected_segmentation(slicer_scene, first)[0])
    unlabeled, _ = make_volume("Case B", seed=1)
    logic.addUnlabeledVolumes(ds, [unlabeled])
    old = json.loads((ds / "manifest.json").read_text())
    assert old == {"labeled": [{"image": "images/Case_A.nrrd", "label": "labels/Case_A.nrrd"}],
                   "unlabeled": ["images/Case_B.nrrd"]}
    files = {sub: folder_state(ds / sub) for sub in ("images", "labels")}
    before = folder_state(ds)

    second, _ = make_volume("Case C", seed=2)
    seg = corrected_segmentation(slicer_scene, second)[0]
    third, _ = make_volume("Case D", seed=3)
    with monkeypatch.context() as m:
        inject(m, fault, ds)
        with pytest.raises((dtc_module.DTCError, OSError)):
            logic.addLabeledExample(ds, second, seg)
        with pytest.raises((dtc_module.DTCError, OSError)):
            logic.addUnlabeledVolumes(ds, [third])
    assert folder_state(ds) == before  # manifest.json (and labels.json) byte for byte, no temp file
    assert json.loads((ds / "manifest.json").read_text()) == old
    assert {sub: folder_state(ds / sub) for sub in ("images", "labels")} == files  # no orphan image or label


@pytest.mark.parametrize("fault", FAULTS)
def test_resumed_fine_tune_keeps_the_requested_config_when_its_write_fails(dtc_module, tmp_path, monkeypatch,
                                                                           fault):
    from DTCSegmentationLib.jobs.trainjob import TrainingJob, TrainingRequest

    class NeverStarted:
        """A process runner that must not be reached: the config is written before the process starts."""

        def start(self, *args, **kwargs) -> None:
            raise AssertionError("the training process started")

    run_dir = tmp_path / "finetune-1"
    first = TrainingRequest(tmp_path / "manifest.json", run_dir, {"train": {"iterations": 40}})
    run_dir.mkdir()
    path = first.config_path
    path.write_text(json.dumps(first.config, indent=2) + "\n")  # what the first start wrote
    before = folder_state(run_dir)
    resumed = TrainingRequest(tmp_path / "manifest.json", run_dir, {"train": {"iterations": 80}}, resume=True)
    with monkeypatch.context() as m:
        inject(m, fault, run_dir)
        with pytest.raises((dtc_module.DTCError, OSError)):
            TrainingJob(resumed, runner=NeverStarted()).start()
    assert folder_state(run_dir) == before
    assert json.loads(path.read_text()) == {"train": {"iterations": 40}}
