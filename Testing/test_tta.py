"""Test-time mirroring and turns (DTCCore.tta, infer.mirror, dtc segment --mirror)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import blob_volume, tiny_config, write_volume
from DTCCore.inference import predict_volume
from DTCCore.network import build_network
from DTCCore.sliding_window import sliding_window
from DTCCore.tta import MirroredModel, flip_sets, mirror_axes, probabilities_to_logits, tta_turns

PATCH = (32, 32, 16)  # = the image in the exactness tests: one window, so flips commute with the windowing


class Pointwise(nn.Module):
    """A flip-equivariant model: 1x1x1 convolutions, so flipping the input flips the output."""

    def __init__(self, seg_channels: int, lsf_channels: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.seg = nn.Conv3d(1, seg_channels, 1)
        self.lsf = nn.Conv3d(1, lsf_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.seg(x), torch.tanh(self.lsf(x))


def test_axes_follow_the_training_augmentation():
    assert mirror_axes("mirror") == (0, 1) and mirror_axes("reference") == (0, 1) and mirror_axes(True) == (0, 1)
    assert mirror_axes("no-mirror") == () and mirror_axes("none") == () and mirror_axes(False) == ()
    assert flip_sets((0, 1)) == [(), (0,), (1,), (0, 1)]
    with pytest.raises(ValueError):
        MirroredModel(Pointwise(1, 1), (0, 3))
    for turns in [(), (0, 4), (1, 1)]:
        with pytest.raises(ValueError, match="quarter turns"):
            MirroredModel(Pointwise(1, 1), (), turns)


def test_turns_follow_the_training_augmentation():
    """Only a model without flips gets turns, and only those data.augment drew (quarter turns on a square
    patch whose x and y share a size multiple)."""
    assert tta_turns("no-mirror", (32, 32, 16), (4, 4, 4)) == (0, 1, 2, 3)
    assert tta_turns("no-mirror", (48, 32, 16), (4, 4, 4)) == (0, 2)  # non-square: rot 0/180 only
    assert tta_turns("no-mirror", (32, 32, 16), (4, 3, 4)) == (0, 2)  # a quarter turn would break the multiples
    for augment in ("mirror", "reference", "none", True, False):
        assert tta_turns(augment, (32, 32, 16), (4, 4, 4)) == (0,)


@pytest.mark.parametrize("channels", [(1, 1), (3, 2)])
def test_equivariant_model_is_unchanged_and_logits_round_trip(channels):
    model = Pointwise(*channels).eval()
    image = torch.randn(1, 1, 20, 18, 12)
    plain = sliding_window(model, image, (16, 16, 8))
    mirrored = sliding_window(MirroredModel(model, (0, 1, 2)), image, (16, 16, 8))
    turned = sliding_window(MirroredModel(model, (), (0, 1, 2, 3)), image, (16, 16, 8))
    for a, b, c in zip(plain, mirrored, turned):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6)
        torch.testing.assert_close(c, a, rtol=0, atol=2e-6)
    prob = torch.softmax(torch.randn(2, channels[0], 4, 4, 4), dim=1) if channels[0] > 1 else torch.rand(2, 1, 4, 4, 4)
    back = probabilities_to_logits(prob)
    again = torch.sigmoid(back) if channels[0] == 1 else torch.softmax(back, dim=1)
    torch.testing.assert_close(again, prob, rtol=0, atol=1e-6)


def _tiny_model(num_classes: int) -> tuple[nn.Module, object]:
    config = tiny_config(augment="mirror", patch=PATCH)
    config.network.num_classes = num_classes
    config.validate()
    torch.manual_seed(1)
    model = build_network(config.network)
    with torch.no_grad():  # make the random model clearly not flip-symmetric
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.out_conv.weight.mul_(8.0)  # larger logits: averaging them instead of probabilities would show
    return model.eval(), config


@pytest.mark.parametrize("num_classes", [1, 2])
def test_mirrored_prediction_is_the_mean_of_flipped_predictions(num_classes):
    model, config = _tiny_model(num_classes)
    image, _ = blob_volume(np.random.default_rng(4), PATCH)
    manual_prob, manual_lsf = [], []
    for flips in flip_sets((0, 1)):
        pred = predict_volume(model, np.flip(image, flips).copy() if flips else image, config)
        channel = 0 if num_classes == 1 else 1  # spatial axis a is array axis a (+1 with a channel axis)
        manual_prob.append(np.flip(pred.probability, [a + channel for a in flips]))
        manual_lsf.append(np.flip(pred.levelset, [a + channel for a in flips]))
    expected_prob, expected_lsf = np.mean(manual_prob, axis=0), np.mean(manual_lsf, axis=0)
    assert np.abs(manual_prob[0] - manual_prob[1]).max() > 1e-3  # the flips really change the output
    config.infer.mirror = True
    got = predict_volume(model, image, config)
    np.testing.assert_allclose(got.probability, expected_prob, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.levelset, expected_lsf, rtol=0, atol=1e-5)
    if num_classes == 1:
        np.testing.assert_array_equal(got.label, (expected_prob > 0.5).astype(np.uint8))
    else:
        np.testing.assert_array_equal(got.label, expected_prob.argmax(axis=0))


@pytest.mark.parametrize("num_classes", [1, 2])
def test_no_mirror_model_averages_over_its_turns(num_classes):
    """A model trained with "no-mirror" (turns, never a flip) averages over its four quarter turns: the
    mean of the predictions of the turned scans, turned back (an oracle outside MirroredModel)."""
    model, config = _tiny_model(num_classes)
    config.train.augment = "no-mirror"
    image, _ = blob_volume(np.random.default_rng(5), PATCH)
    channel = 0 if num_classes == 1 else 1
    plane = (channel, channel + 1)
    preds = [predict_volume(model, np.rot90(image, k, (0, 1)).copy(), config) for k in range(4)]
    probs = [np.rot90(p.probability, -k, plane) for k, p in enumerate(preds)]
    lsfs = [np.rot90(p.levelset, -k, plane) for k, p in enumerate(preds)]
    assert np.abs(probs[0] - probs[1]).max() > 1e-3  # the turns really change the output
    config.infer.mirror = True
    got = predict_volume(model, image, config)
    np.testing.assert_allclose(got.probability, np.mean(probs, axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.levelset, np.mean(lsfs, axis=0), rtol=0, atol=1e-5)
    # never a flip: the x-mirrored scan's turn-average is not the mirror image of this one
    flipped = predict_volume(model, np.flip(image, 0).copy(), config)
    assert np.abs(np.flip(flipped.levelset, channel) - got.levelset).max() > 1e-3


def test_nothing_averaged_for_models_trained_without_augmentation():
    model, config = _tiny_model(1)
    config.train.augment = "none"
    image, _ = blob_volume(np.random.default_rng(5), PATCH)
    plain = predict_volume(model, image, config)
    config.infer.mirror = True
    mirrored = predict_volume(model, image, config)
    np.testing.assert_array_equal(mirrored.probability, plain.probability)
    np.testing.assert_array_equal(mirrored.levelset, plain.levelset)


def test_segment_cli_mirror_option(tmp_path, tiny_model_file):
    from DTCCore.checkpoint import load_model
    from DTCCore.cli import main
    from DTCCore.io import read_image

    image, _ = blob_volume(np.random.default_rng(6), (40, 36, 24))
    path = write_volume(tmp_path / "scan.nrrd", image)
    assert main(["segment", str(path), "-o", str(tmp_path / "out"), "--model", str(tiny_model_file), "--mirror"]) == 0
    model, config = load_model(tiny_model_file)
    plain = predict_volume(model, image, config)
    config.infer.mirror = True
    expected = predict_volume(model, image, config)
    got, _ = read_image(tmp_path / "out" / "scan_levelset.nrrd")
    np.testing.assert_allclose(got, expected.levelset, rtol=0, atol=1e-6)
    assert np.abs(got - plain.levelset).max() > 1e-4  # --mirror changed the output
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "scan_seg.nrrd")[0], expected.label)


def test_segment_cli_no_mirror_overrides_a_model_that_mirrors(tmp_path, tiny_model_file):
    import torch

    from DTCCore.checkpoint import load_checkpoint, load_model, save_checkpoint
    from DTCCore.cli import main
    from DTCCore.io import read_image

    model, config = load_model(tiny_model_file)
    config.infer.mirror = True  # a model whose own setting is mirroring, like the bundled one
    mirroring = save_checkpoint(tmp_path / "mirroring.pt", model, None, 0, config,
                                load_checkpoint(tiny_model_file)["extra"])
    image, _ = blob_volume(np.random.default_rng(7), (40, 36, 24))
    path = write_volume(tmp_path / "scan.nrrd", image)
    outputs = {}
    for flag in ("", "--no-mirror"):
        out = tmp_path / f"out{flag}"
        assert main(["segment", str(path), "-o", str(out), "--model", str(mirroring)] + ([flag] if flag else [])) == 0
        outputs[flag] = read_image(out / "scan_levelset.nrrd")[0]
    with torch.no_grad():
        config.infer.mirror = False
        plain = predict_volume(model, image, config).levelset
        config.infer.mirror = True
        mirrored = predict_volume(model, image, config).levelset
    np.testing.assert_allclose(outputs[""], mirrored, rtol=0, atol=1e-6)  # the model's own setting
    np.testing.assert_allclose(outputs["--no-mirror"], plain, rtol=0, atol=1e-6)
    assert np.abs(mirrored - plain).max() > 1e-4
