"""A config is typed at the boundary: every JSON value is checked and converted against its field's type."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from DTCCore.config import DTCConfig, check_device
from DTCCore.errors import DTCError

WRONG = [
    ({"train": {"iterations": "10"}}, "train.iterations must be a whole number"),
    ({"train": {"lr": "0.1"}}, "train.lr must be a number"),
    ({"train": {"iterations": 10.5}}, "train.iterations must be a whole number"),
    ({"train": {"amp": 1}}, "train.amp must be true or false"),
    ({"train": {"patch": [112, 112]}}, "train.patch must hold 3 values"),
    ({"train": {"patch": [112, "112", 80]}}, r"train.patch\[1\] must be a whole number"),
    ({"train": {"lr_steps": 2500}}, "train.lr_steps must be a list"),
    ({"network": {"dropout": "yes"}}, "network.dropout must be true or false"),
    ({"recipe": {"mode": 3}}, "recipe.mode must be a string"),
    ({"plan": {"spacing": [1, 1]}}, "plan.spacing must hold 3 values"),
    ({"infer": {"stride": [18, 18, "4"]}}, r"infer.stride\[2\] must be a whole number"),
    ({"train": {"time_limit_minutes": "20"}}, "train.time_limit_minutes must be a number"),
]


@pytest.mark.parametrize("data, message", WRONG)
def test_wrong_types_are_refused_by_name(data, message):
    with pytest.raises(DTCError, match=message):
        DTCConfig.from_dict(data)


def test_values_are_converted_to_the_field_types():
    config = DTCConfig.from_dict({"train": {"iterations": 10.0, "lr": 1, "patch": [32, 32, 16], "lr_steps": [5]},
                                  "plan": {"spacing": [2, 2, 2]}, "infer": {"stride": None}})
    assert config.train.iterations == 10 and isinstance(config.train.iterations, int)
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.train.patch == (32, 32, 16) and config.train.lr_steps == (5,)
    assert config.plan.spacing == (2.0, 2.0, 2.0) and all(isinstance(v, float) for v in config.plan.spacing)
    assert DTCConfig.from_dict({"train": {"augment": True}}).train.augment == "reference"  # older configs


def test_validate_does_not_change_the_config():
    config = DTCConfig()
    config.train.patch = [32, 32, 16]  # type: ignore[assignment]
    config.train.augment = False  # type: ignore[assignment]
    before = copy.deepcopy(config)
    config.validate()
    assert config == before


def test_one_device_vocabulary():
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert check_device(name) == name
    for name in ("gpu", "cuda:", "cuda:x", "CPU0"):
        with pytest.raises(DTCError, match="cuda:N"):
            check_device(name)
    assert DTCConfig.from_dict({"train": {"device": "cuda:1"}}).train.device == "cuda:1"


def test_cli_wrong_type_config_is_one_error_line(tmp_path, blob_manifest):
    for data, message in WRONG[:4]:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(data))
        out = subprocess.run([sys.executable, "-m", "DTCCore", "train", str(blob_manifest), "-o", str(tmp_path / "run"),
                              "--config", str(path)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: config ") and "Traceback" not in out.stderr
        assert not (tmp_path / "run").exists()


def test_cli_device_names(tmp_path):
    cmd = [sys.executable, "-m", "DTCCore", "segment", "--sample", "-o", str(tmp_path), "--device", "gpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "cuda:N" in out.stderr


def test_override_sets_given_options_only():
    config = DTCConfig()
    config.override({"train.seed": 7, "infer.tta": False, "train.patch": None, "recipe.mode": None})
    assert (config.train.seed, config.infer.tta) == (7, False)
    assert config.train.patch == DTCConfig().train.patch and config.recipe.mode == "dtc"  # None: not given
    with pytest.raises(KeyError, match="train.sede"):
        config.override({"train.sede": 1})


def test_old_name_of_test_time_augmentation_is_read_as_tta():
    """Configs saved before the rename store infer.mirror; they load with the same meaning as infer.tta."""
    for value in (True, False):
        old = DTCConfig().to_dict()
        del old["infer"]["tta"]
        old["infer"]["mirror"] = value
        assert DTCConfig.from_dict(old).infer.tta is value
    both = DTCConfig().to_dict()
    both["infer"]["mirror"] = True
    with pytest.raises(DTCError, match="infer.mirror is the old name of infer.tta"):
        DTCConfig.from_dict(both)


def test_the_bundled_model_loads_with_its_stored_test_time_augmentation():
    """The bundled model predates the name tta: its checkpoint stores infer.mirror, and its card (default.json,
    written by bench/shipping/make_default_model.py) says test-time mirroring is on. Loaded, the setting survives."""
    from DTCCore.model.checkpoint import load_checkpoint
    from DTCCore.protocol import DEFAULT_MODEL

    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text(encoding="utf-8"))
    assert card["validation"]["mirror"] is True and card["config"]["infer"]["mirror"] is True
    assert load_checkpoint(DEFAULT_MODEL)["config"].infer.tta is True
