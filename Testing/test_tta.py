"""Test-time augmentation: flips and turns (DTCCore.inference.tta, infer.tta, dtc segment --tta / its old
name --mirror)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import blob_volume, tiny_config, write_volume
from DTCCore.inference.predict import ProbabilityOutputs, predict_volume
from DTCCore.inference.sliding_window import sliding_window
from DTCCore.inference.tta import FlipTurnAverage, flip_sets, tta_flip_axes, tta_turns
from DTCCore.model.network import build_network

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
    assert tta_flip_axes("mirror") == (0, 1) and tta_flip_axes("reference") == (0, 1) and tta_flip_axes(True) == (0, 1)
    assert tta_flip_axes("no-mirror") == () and tta_flip_axes("none") == () and tta_flip_axes(False) == ()
    assert flip_sets((0, 1)) == [(), (0,), (1,), (0, 1)]
    with pytest.raises(ValueError):
        FlipTurnAverage(Pointwise(1, 1), (0, 3))
    for turns in [(), (0, 4), (1, 1)]:
        with pytest.raises(ValueError, match="quarter turns"):
            FlipTurnAverage(Pointwise(1, 1), (), turns)


def test_turns_follow_the_training_augmentation():
    """Only a model without flips gets turns, and only those data.augment drew (quarter turns on a square
    patch whose x and y share a size multiple)."""
    assert tta_turns("no-mirror", (32, 32, 16), (4, 4, 4)) == (0, 1, 2, 3)
    assert tta_turns("no-mirror", (48, 32, 16), (4, 4, 4)) == (0, 2)  # non-square: rot 0/180 only
    assert tta_turns("no-mirror", (32, 32, 16), (4, 3, 4)) == (0, 2)  # a quarter turn would break the multiples
    for augment in ("mirror", "reference", "none", True, False):
        assert tta_turns(augment, (32, 32, 16), (4, 4, 4)) == (0,)


@pytest.mark.parametrize("channels", [(1, 1), (3, 2)])
def test_equivariant_model_is_unchanged(channels):
    model = ProbabilityOutputs(Pointwise(*channels).eval())
    image = torch.randn(1, 1, 20, 18, 12)
    plain = sliding_window(model, image, (16, 16, 8))
    mirrored = sliding_window(FlipTurnAverage(model, (0, 1, 2)), image, (16, 16, 8))
    turned = sliding_window(FlipTurnAverage(model, (), (0, 1, 2, 3)), image, (16, 16, 8))
    for a, b, c in zip(plain, mirrored, turned):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6)
        torch.testing.assert_close(c, a, rtol=0, atol=2e-6)


class Mixing(nn.Module):
    """Neither flip- nor turn-equivariant: a 3x3x3 convolution with random weights, and logits large enough
    that the mean of the probabilities and the probability of the mean logit differ clearly."""

    def __init__(self, seg_channels: int) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv3d(1, seg_channels + 1, 3, padding=1)
        self.seg_channels = seg_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = 20.0 * self.conv(x)
        return out[:, : self.seg_channels], torch.tanh(out[:, self.seg_channels :])


def _copies_back(model: nn.Module, image: np.ndarray, axes, turns, activation: bool):
    """Oracle in NumPy: each (turn, flips) copy of ``image`` (B, 1, X, Y, Z) through ``model``, its outputs
    flipped and turned back, the seg output through sigmoid / softmax when ``activation``."""
    segs, lsfs = [], []
    for k in turns:
        for flips in flip_sets(axes):
            dims = tuple(a + 2 for a in flips)
            x = np.rot90(image, k, (2, 3))
            x = np.flip(x, dims) if dims else x
            with torch.no_grad():
                seg, lsf = model(torch.from_numpy(x.copy()))
            seg, lsf = seg.double().numpy(), lsf.double().numpy()
            if activation:
                e = np.exp(seg)
                seg = 1.0 / (1.0 + np.exp(-seg)) if seg.shape[1] == 1 else e / e.sum(1, keepdims=True)
            if dims:
                seg, lsf = np.flip(seg, dims), np.flip(lsf, dims)
            segs.append(np.rot90(seg, -k, (2, 3)))
            lsfs.append(np.rot90(lsf, -k, (2, 3)))
    return np.mean(segs, axis=0), np.mean(lsfs, axis=0)


@pytest.mark.parametrize("seg_channels", [1, 3])
@pytest.mark.parametrize("axes,turns", [((0, 1), (0,)), ((), (0, 1, 2, 3)), ((2,), (0, 2))])
def test_average_is_the_mean_of_the_copies_transformed_back(seg_channels, axes, turns):
    """FlipTurnAverage averages in the space its model gives: around ProbabilityOutputs (as predict_volume
    runs it) the mean of the probabilities of the copies, transformed back; around the bare network the
    mean of its logits (nnU-Net's space). The level sets are averaged directly in both."""
    net = Mixing(seg_channels).eval()
    image = np.random.default_rng(3).standard_normal((2, 1, 8, 8, 6)).astype(np.float32)
    tensor = torch.from_numpy(image)
    with torch.no_grad():
        prob, lsf = FlipTurnAverage(ProbabilityOutputs(net), axes, turns)(tensor)
        logit, lsf_raw = FlipTurnAverage(net, axes, turns)(tensor)
    want_prob, want_lsf = _copies_back(net, image, axes, turns, activation=True)
    want_logit, _ = _copies_back(net, image, axes, turns, activation=False)
    assert prob.dtype == torch.float32 and prob.shape == (2, seg_channels) + image.shape[2:]
    np.testing.assert_allclose(prob.numpy(), want_prob, rtol=0, atol=1e-6)
    np.testing.assert_allclose(lsf.numpy(), want_lsf, rtol=0, atol=1e-6)
    np.testing.assert_allclose(logit.numpy(), want_logit, rtol=0, atol=2e-5)  # logits up to ~60: float32 rounding
    np.testing.assert_allclose(lsf_raw.numpy(), want_lsf, rtol=0, atol=1e-6)
    # the spaces differ: the probability of the mean logit is not the mean probability
    probability_of_mean = 1.0 / (1.0 + np.exp(-want_logit)) if seg_channels == 1 else (
        np.exp(want_logit) / np.exp(want_logit).sum(1, keepdims=True))
    assert np.abs(probability_of_mean - want_prob).max() > 0.05


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
    config.infer.tta = True
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
    mean of the predictions of the turned scans, turned back (an oracle outside FlipTurnAverage)."""
    model, config = _tiny_model(num_classes)
    config.train.augment = "no-mirror"
    image, _ = blob_volume(np.random.default_rng(5), PATCH)
    channel = 0 if num_classes == 1 else 1
    plane = (channel, channel + 1)
    preds = [predict_volume(model, np.rot90(image, k, (0, 1)).copy(), config) for k in range(4)]
    probs = [np.rot90(p.probability, -k, plane) for k, p in enumerate(preds)]
    lsfs = [np.rot90(p.levelset, -k, plane) for k, p in enumerate(preds)]
    assert np.abs(probs[0] - probs[1]).max() > 1e-3  # the turns really change the output
    config.infer.tta = True
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
    config.infer.tta = True
    mirrored = predict_volume(model, image, config)
    np.testing.assert_array_equal(mirrored.probability, plain.probability)
    np.testing.assert_array_equal(mirrored.levelset, plain.levelset)


def test_segment_cli_mirror_option(tmp_path, tiny_model_file):
    from DTCCore.cli import main
    from DTCCore.data.images import read_image
    from DTCCore.model.checkpoint import load_model

    image, _ = blob_volume(np.random.default_rng(6), (40, 36, 24))
    path = write_volume(tmp_path / "scan.nrrd", image)
    assert main(["segment", str(path), "-o", str(tmp_path / "out"), "--model", str(tiny_model_file), "--mirror"]) == 0
    model, config = load_model(tiny_model_file)
    plain = predict_volume(model, image, config)
    config.infer.tta = True
    expected = predict_volume(model, image, config)
    got, _ = read_image(tmp_path / "out" / "scan_levelset.nrrd")
    np.testing.assert_allclose(got, expected.levelset, rtol=0, atol=1e-6)
    assert np.abs(got - plain.levelset).max() > 1e-4  # --mirror changed the output
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "scan_seg.nrrd")[0], expected.label)


def test_segment_cli_no_mirror_overrides_a_model_that_mirrors(tmp_path, tiny_model_file):
    import torch

    from DTCCore.cli import main
    from DTCCore.data.images import read_image
    from DTCCore.model.checkpoint import load_checkpoint, load_model, save_checkpoint

    model, config = load_model(tiny_model_file)
    config.infer.tta = True  # a model whose own setting is mirroring, like the bundled one
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
        config.infer.tta = False
        plain = predict_volume(model, image, config).levelset
        config.infer.tta = True
        mirrored = predict_volume(model, image, config).levelset
    np.testing.assert_allclose(outputs[""], mirrored, rtol=0, atol=1e-6)  # the model's own setting
    np.testing.assert_allclose(outputs["--no-mirror"], plain, rtol=0, atol=1e-6)
    assert np.abs(mirrored - plain).max() > 1e-4


def test_tta_option_and_its_old_name_mirror_set_the_same():
    """dtc segment --tta / --no-tta, and the old names --mirror / --no-mirror (the Slicer module passes
    them), all set the same option; neither leaves the model's own setting (None)."""
    from DTCCore.cli import build_parser

    parser = build_parser()
    base = ["segment", "scan.nrrd", "-o", "out"]
    parsed = {flag: parser.parse_args(base + ([flag] if flag else [])).tta
              for flag in ("", "--tta", "--mirror", "--no-tta", "--no-mirror")}
    assert parsed == {"": None, "--tta": True, "--mirror": True, "--no-tta": False, "--no-mirror": False}


def test_first_line_names_flips_or_turns():
    from DTCCore.cli.segment import describe_plan

    config = tiny_config(augment="mirror", patch=PATCH)
    assert "test-time" not in describe_plan(config)
    config.infer.tta = True
    assert describe_plan(config).endswith(", test-time augmentation (flips)")
    config.train.augment = "no-mirror"
    assert describe_plan(config).endswith(", test-time augmentation (turns)")
    config.train.augment = "none"  # nothing to average over: not announced
    assert "test-time" not in describe_plan(config)
