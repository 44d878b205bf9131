"""predict_volume: shapes, dtypes, derived outputs, ROI, multi-class, lsf mode, OOM fallback, devices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.special
import torch
from torch import nn

from DTCCore.config import DTCConfig
from DTCCore.errors import DTCError
from DTCCore.inference.predict import Prediction, predict_volume
from DTCCore.runtime.devices import describe_device, resolve_device

PATCH = (16, 16, 16)
K = 1500.0  # paper: inverse transform sigmoid(-k z)


def make_config(num_classes: int = 1, **infer) -> DTCConfig:
    cfg = DTCConfig()
    cfg.network.num_classes = num_classes
    cfg.network.base_filters = 2
    cfg.train.patch = PATCH
    for key, value in infer.items():
        setattr(cfg.infer, key, value)
    return cfg


class Voxelwise(nn.Module):
    """Per-voxel model: seg logits = gain * x (classes: shifted copies), lsf = -0.001 * x. Exact under blending."""

    def __init__(self, num_classes: int = 1, gain: float = 4.0, max_windows: int | None = None,
                 oom_off_cpu: bool = False, message: str | None = None) -> None:
        super().__init__()
        self.num_classes, self.gain = num_classes, gain
        self.max_windows, self.oom_off_cpu, self.message = max_windows, oom_off_cpu, message
        self.batches: list[tuple[int, str]] = []

    def forward(self, x):
        self.batches.append((x.shape[0], x.device.type))
        too_many = self.max_windows is not None and x.shape[0] > self.max_windows
        if too_many or (self.oom_off_cpu and x.device.type != "cpu"):
            if self.message:
                raise RuntimeError(self.message)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.num_classes == 1:
            return self.gain * x, -0.001 * x
        seg = torch.cat([self.gain * (x - c) * (1 if c else -1) for c in range(self.num_classes + 1)], 1)
        lsf = torch.cat([-0.001 * (x - c) for c in range(1, self.num_classes + 1)], 1)
        return seg, lsf


def zscore(a: np.ndarray) -> np.ndarray:
    return ((a - a.mean()) / a.std()).astype(np.float32)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(100.0, 20.0, (24, 20, 18)).astype(np.float32)


def test_shapes_dtypes_and_derived_outputs_with_the_real_network(volume):
    from DTCCore.model.network import DualTaskVNet

    torch.manual_seed(0)
    model = DualTaskVNet(1, 1, base_filters=2)
    events = []
    pred = predict_volume(model, volume, make_config(), "cpu", progress=lambda d, t: events.append((d, t)))
    assert isinstance(pred, Prediction) and pred.device == "cpu"
    for name in ("probability", "levelset", "levelset_probability", "disagreement"):
        arr = getattr(pred, name)
        assert arr.shape == volume.shape and arr.dtype == np.float32, name
    assert pred.label.shape == volume.shape and pred.label.dtype == np.uint8
    assert 0 <= pred.probability.min() and pred.probability.max() <= 1
    assert np.abs(pred.levelset).max() <= 1  # tanh head
    np.testing.assert_allclose(pred.levelset_probability, scipy.special.expit(-K * pred.levelset.astype(np.float64)),
                               atol=1e-6)
    np.testing.assert_allclose(pred.disagreement, np.abs(pred.probability - pred.levelset_probability), atol=1e-6)
    np.testing.assert_array_equal(pred.label, (pred.probability > 0.5).astype(np.uint8))
    assert events and events[-1][0] == events[-1][1]


def test_voxelwise_model_gives_exact_sigmoid_of_normalised_image(volume):
    pred = predict_volume(Voxelwise(gain=3.0), volume, make_config(blend="gaussian"))
    expected = scipy.special.expit(3.0 * zscore(volume).astype(np.float64))
    np.testing.assert_allclose(pred.probability, expected, atol=1e-5)
    np.testing.assert_allclose(pred.levelset, -0.001 * zscore(volume), atol=1e-6)


@pytest.mark.parametrize("mode", ["dtc", "lsf"])
def test_a_probability_of_exactly_one_half_is_background(volume, mode):
    class HalfOrInside(nn.Module):  # logit and level set 0 (probability exactly 0.5) where x <= 0
        def forward(self, x):
            inside = (x > 0).to(x.dtype)
            return 3.0 * inside, -0.01 * inside

    cfg = make_config(blend="gaussian")
    cfg.recipe.mode = mode
    pred = predict_volume(HalfOrInside(), volume, cfg)
    source = pred.probability if mode == "dtc" else pred.levelset_probability
    assert (source == 0.5).mean() > 0.3  # the blend keeps 0.5 exact
    np.testing.assert_array_equal(pred.label, (zscore(volume) > 0).astype(np.uint8))  # reference: > 0.5


def test_roi_restricts_outputs_and_matches_cropped_prediction(volume):
    from DTCCore.model.network import DualTaskVNet

    torch.manual_seed(1)
    model = DualTaskVNet(1, 1, base_filters=2)
    cfg = make_config(blend="uniform")
    roi = (slice(3, 21), slice(2, 19), slice(1, 15))
    pred = predict_volume(model, volume, cfg, roi=roi)
    cropped = predict_volume(model, volume[roi].copy(), cfg)
    outside = np.ones(volume.shape, bool)
    outside[roi] = False
    assert (pred.probability[outside] == 0).all() and (pred.label[outside] == 0).all()
    assert (pred.levelset[outside] == 1).all() and (pred.disagreement[outside] == 0).all()
    for name in ("probability", "levelset", "levelset_probability", "disagreement"):
        np.testing.assert_allclose(getattr(pred, name)[roi], getattr(cropped, name), atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(pred.label[roi], cropped.label)


def test_roi_normalises_over_the_crop_only():
    image = np.zeros((20, 20, 20), np.float32)
    image[:10] = 1000.0  # outside the ROI: would dominate a whole-volume z-score
    image[10:] = np.random.default_rng(2).normal(0.0, 1.0, (10, 20, 20))
    roi = (slice(10, 20), slice(0, 20), slice(0, 20))
    pred = predict_volume(Voxelwise(gain=1.0), image, make_config(), roi=roi)
    np.testing.assert_allclose(pred.probability[roi], scipy.special.expit(zscore(image[roi])), atol=1e-5)


def test_multiclass_shapes_and_argmax():
    from DTCCore.model.network import DualTaskVNet

    image = np.random.default_rng(3).normal(size=(18, 17, 16)).astype(np.float32)
    torch.manual_seed(2)
    model = DualTaskVNet(1, 2, base_filters=2)
    roi = (slice(0, 18), slice(1, 17), slice(0, 16))
    pred = predict_volume(model, image, make_config(num_classes=2), roi=roi)
    assert pred.probability.shape == (3, 18, 17, 16) and pred.probability.dtype == np.float32
    assert pred.levelset.shape == (2, 18, 17, 16) and pred.levelset_probability.shape == (2, 18, 17, 16)
    assert pred.disagreement.shape == (18, 17, 16) and pred.label.shape == (18, 17, 16)
    np.testing.assert_allclose(pred.probability.sum(0), 1.0, atol=1e-5)
    inside = pred.probability[:, :, 1:]
    np.testing.assert_array_equal(pred.label[:, 1:], inside.argmax(0))
    expected = np.abs(inside[1:] - pred.levelset_probability[:, :, 1:]).max(0)
    np.testing.assert_allclose(pred.disagreement[:, 1:], expected, atol=1e-6)
    assert (pred.probability[1:, :, 0] == 0).all() and (pred.label[:, 0] == 0).all()


def test_lsf_mode_takes_the_label_from_the_level_set(volume):
    class Opposite(nn.Module):  # seg head says "inside" where the level set says "outside"
        def forward(self, x):
            return 5.0 * x, 0.01 * x

    cfg = make_config()
    cfg.recipe.mode = "lsf"
    pred = predict_volume(Opposite(), volume, cfg)
    np.testing.assert_array_equal(pred.label, (pred.levelset_probability > 0.5).astype(np.uint8))
    np.testing.assert_array_equal(pred.label, (zscore(volume) < 0).astype(np.uint8))
    cfg.recipe.mode = "dtc"
    np.testing.assert_array_equal(predict_volume(Opposite(), volume, cfg).label, (zscore(volume) > 0).astype(np.uint8))


def test_largest_component_keeps_only_the_biggest_blob():
    image = np.zeros((24, 24, 20), np.float32)
    image[2:12, 2:12, 2:12] = 10.0  # 1000 voxels
    image[18:22, 18:22, 14:18] = 10.0  # 64 voxels, separate
    cfg = make_config(largest_component=True)
    pred = predict_volume(Voxelwise(), image, cfg)
    labels, n = scipy.ndimage.label(image > 0)
    assert n == 2
    np.testing.assert_array_equal(pred.label, (labels == labels[5, 5, 5]).astype(np.uint8))
    cfg.infer.largest_component = False
    np.testing.assert_array_equal(predict_volume(Voxelwise(), image, cfg).label, (image > 0).astype(np.uint8))


@pytest.mark.parametrize("message", [None, "CUDA out of memory. Tried to allocate 1.00 GiB"])
def test_oom_halves_windows_per_pass_down_to_one(volume, message):
    model = Voxelwise(max_windows=1, message=message)
    logs: list[str] = []
    pred = predict_volume(model, volume, make_config(batch_windows=4), log=logs.append)
    assert logs == [
        "CPU out of memory with 4 windows per pass; retrying with 2",
        "CPU out of memory with 2 windows per pass; retrying with 1",
    ]
    assert model.batches[0][0] == 4 and model.batches[-1][0] == 1
    reference = predict_volume(Voxelwise(), volume, make_config(batch_windows=1))
    np.testing.assert_allclose(pred.probability, reference.probability, atol=1e-6)
    np.testing.assert_array_equal(pred.label, reference.label)


def test_oom_on_an_accelerator_falls_back_to_the_cpu(volume):
    # "meta" stands in for a GPU here: the fake model runs out of memory anywhere but on the CPU.
    model = Voxelwise(oom_off_cpu=True)
    logs: list[str] = []
    pred = predict_volume(model, volume, make_config(batch_windows=2), device="meta", log=logs.append)
    assert logs == [
        "GPU out of memory with 2 windows per pass; retrying with 1",
        "GPU out of memory with 1 window per pass; retrying on the CPU (slower)",
    ]
    assert pred.device == "cpu" and model.batches[-1] == (1, "cpu")
    np.testing.assert_allclose(pred.probability, scipy.special.expit(4.0 * zscore(volume)), atol=1e-5)


def test_oom_on_the_cpu_with_one_window_is_a_user_error(volume):
    with pytest.raises(DTCError, match="out of memory on the CPU"):
        predict_volume(Voxelwise(max_windows=0), volume, make_config(batch_windows=2), log=lambda m: None)


def test_other_errors_are_not_swallowed(volume):
    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict_volume(Voxelwise(max_windows=0, message="shape mismatch"), volume, make_config())


def test_bad_inputs_are_user_errors(volume):
    with pytest.raises(DTCError, match="3-D"):
        predict_volume(Voxelwise(), volume[None], make_config())
    with pytest.raises(DTCError, match="empty"):
        predict_volume(Voxelwise(), volume, make_config(), roi=(slice(5, 5), slice(None), slice(None)))
    with pytest.raises(DTCError, match="num_classes"):
        predict_volume(Voxelwise(num_classes=2), volume, make_config(num_classes=1))


def test_resolve_and_describe_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert describe_device("cpu") == f"CPU ({torch.get_num_threads()} threads)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DTCError, match="no CUDA GPU was found.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(DTCError, match="device .gpu.: use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


def test_inference_copy_is_reused_until_the_weights_change():
    import torch

    from DTCCore.inference.predict import inference_copy
    from DTCCore.model.network import DualTaskVNet

    torch.manual_seed(0)
    model = DualTaskVNet(base_filters=4).eval()
    first = inference_copy(model)
    assert inference_copy(model) is first  # nothing changed: the folded copy is reused
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        before = first(x)[0].clone()
        next(model.parameters()).mul_(3.0)  # an in-place change, as an optimizer step makes
    second = inference_copy(model)
    assert second is not first
    with torch.no_grad():
        assert not torch.allclose(second(x)[0], before)
        assert torch.allclose(second(x)[0], model(x)[0], atol=1e-5)  # the new copy follows the weights
    model.load_state_dict(DualTaskVNet(base_filters=4).state_dict())
    assert inference_copy(model) is not second
