"""Checkpoints: round trip, fp16 storage, and clear refusals of foreign, corrupt or truncated files."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from DTCCore.errors import DTCError
from DTCCore.model.checkpoint import (
    checkpoint_path,
    find_latest_checkpoint,
    load_checkpoint,
    load_model,
    read_model_info,
    save_checkpoint,
)
from DTCCore.model.network import build_network


def _model(filters: int = 2):
    cfg = tiny_config()
    cfg.network.base_filters = filters
    torch.manual_seed(3)
    return build_network(cfg.network), cfg


def test_round_trip_keeps_weights_config_and_optimizer(tmp_path):
    model, cfg = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 1, 32, 32, 16))[0].sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.pt", model, opt, 7, cfg, {"labeled": 3})
    payload = load_checkpoint(path)
    assert payload["iteration"] == 7 and payload["extra"]["labeled"] == 3
    assert payload["config"].to_dict() == cfg.to_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(payload["model"][k], v)
    assert payload["optimizer"]["state"], "momentum buffers must be saved"
    info = read_model_info(path)
    assert info["iteration"] == 7 and info["config"]["network"]["base_filters"] == 2
    assert not list(tmp_path.glob(".*tmp")), "no temp file left behind"


def test_half_precision_storage_loads_as_float32(tmp_path):
    model, cfg = _model()
    path = save_checkpoint(tmp_path / "h.pt", model, None, 0, cfg, half=True)
    loaded, _ = load_model(path)
    for k, v in loaded.state_dict().items():
        if v.is_floating_point():
            assert v.dtype == torch.float32
            assert torch.allclose(v, model.state_dict()[k], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[: len(raw) // 2], "corrupt or truncated"),
        (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "corrupt or truncated"),
        (lambda raw: b"PK\x03\x04 not ours" + raw[20:], "not a DTCSegmentation checkpoint"),
        (lambda raw: b"", "not a DTCSegmentation checkpoint"),
    ],
)
def test_damaged_files_are_refused_clearly(tmp_path, damage, message):
    model, cfg = _model()
    path = save_checkpoint(tmp_path / "c.pt", model, None, 0, cfg)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DTCError, match=message):
        load_model(path)


def test_plain_torch_file_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(DTCError, match="not a DTCSegmentation checkpoint"):
        load_model(path)


def test_missing_and_folder_paths(tmp_path):
    with pytest.raises(DTCError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(DTCError, match="is a folder"):
        load_model(tmp_path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    small, cfg = _model(2)
    big, _ = _model(4)
    # a checkpoint whose config says 2 filters but whose weights are of a 4-filter network
    path = save_checkpoint(tmp_path / "c.pt", big, None, 0, cfg)
    with pytest.raises(DTCError, match="another architecture"):
        load_model(path)


def test_latest_checkpoint_skips_a_broken_newest_file(tmp_path):
    model, cfg = _model()
    save_checkpoint(checkpoint_path(tmp_path, 2), model, None, 2, cfg)
    broken = checkpoint_path(tmp_path, 4)
    save_checkpoint(broken, model, None, 4, cfg)
    broken.write_bytes(broken.read_bytes()[:100])
    warnings = []
    path, payload = find_latest_checkpoint(tmp_path, warn=warnings.append)
    assert payload["iteration"] == 2 and path.name == "iter_000002.pt"
    assert warnings and "iter_000004.pt" in warnings[0]
    assert find_latest_checkpoint(tmp_path / "empty") is None
