"""A model loaded in advance (a spare's ``--model``) is used once, only for the same unchanged file on the CPU."""

from __future__ import annotations

import os

import pytest
import torch

from DTCCore.model import checkpoint, preload


@pytest.fixture(autouse=True)
def nothing_held():
    yield
    preload._held.clear()


def _weights(model) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def test_the_preloaded_model_is_the_files_and_used_once(tiny_model_file):
    assert preload.preload(tiny_model_file)
    held = preload._held["loaded"][0]
    model, config, extra = checkpoint.load_model_with_extra(tiny_model_file, "cpu")
    assert model is held  # not loaded again
    fresh, fresh_config, fresh_extra = checkpoint.load_model_with_extra(tiny_model_file, "cpu")  # nothing held now
    assert fresh is not model
    assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(fresh)))
    assert config.to_dict() == fresh_config.to_dict() and extra == fresh_extra
    assert not model.training and extra["path"] == str(tiny_model_file)


def test_take_gives_the_held_model_only_for_the_same_unchanged_file_on_the_cpu(tiny_model_file, tmp_path):
    assert preload.preload(tiny_model_file)
    held = preload._held["loaded"][0]
    assert preload.take(tiny_model_file, "cpu")[0] is held
    assert preload.take(tiny_model_file, "cpu") is None  # used once
    assert preload.preload(tiny_model_file)
    assert preload.take(tiny_model_file, torch.device("cuda")) is None  # a GPU command loads its own
    assert preload.preload(tiny_model_file)
    other = tmp_path / "other.pt"
    other.write_bytes(tiny_model_file.read_bytes())
    assert preload.take(other, "cpu") is None  # another file, even with the same bytes
    assert preload.preload(tiny_model_file)
    stat = tiny_model_file.stat()
    os.utime(tiny_model_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten since
    assert preload.take(tiny_model_file, "cpu") is None


def test_an_unreadable_model_is_not_preloaded(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert not preload.preload(bad) and not preload._held
    assert not preload.preload(tmp_path / "absent.pt")
