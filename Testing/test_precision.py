"""Forward-pass precision: the auto rule, CPU feature detection, bf16 against fp32, and what the commands say."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_blob_dataset, tiny_config
from DTCCore.cli import main
from DTCCore.config import DTCConfig
from DTCCore.errors import DTCError
from DTCCore.runtime import precision

# bf16 keeps 8 significant bits (relative rounding 2**-8 = 0.4 %). Measured on the bundled model and the
# bundled sample case (one 48x48x32 window, no mirroring): label Dice 0.9992, probability mean |diff| 0.0002
# and max 0.025, level set max |diff| 0.008 (of its [-1, 1] range). The bounds leave about 4x room.
BF16_MIN_LABEL_DICE = 0.99
BF16_MAX_MEAN_PROBABILITY_DIFF = 0.002
BF16_MAX_PROBABILITY_DIFF = 0.1
BF16_MAX_LEVELSET_DIFF = 0.04


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    assert precision.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert precision.autocast_dtype("auto", "cpu") == (torch.bfloat16 if native else None)
    assert precision.describe_precision("auto", "cpu").startswith("bf16 (auto" if native else "fp32 (auto")
    for forced in ("fp32", "bf16"):  # an explicit choice is kept whatever the CPU
        assert precision.resolve_precision(forced, "cpu") == forced
    assert ("emulated" in precision.describe_precision("bf16", "cpu")) is (not native)
    with pytest.raises(DTCError, match="use one of auto, fp32, bf16"):
        precision.resolve_precision("fp16", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_training_is_fp32_under_auto_and_a_forced_bf16_is_flagged(monkeypatch, native):
    """bf16 weight gradients turned NaN on an AVX512-BF16 CPU (runtime/precision.py): auto trains in fp32 on every CPU,
    and its first line says why where the CPU has native bf16; inference keeps the native rule above."""
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    assert precision.resolve_precision("auto", "cpu", training=True) == "fp32"
    assert precision.autocast_dtype("auto", "cpu", training=True) is None
    said = precision.describe_precision("auto", "cpu", training=True)
    assert said.startswith("fp32 (auto") and (precision.CPU_BF16_TRAINING_NOTE in said) is native
    assert precision.resolve_precision("bf16", "cpu", training=True) == "bf16"  # an explicit choice is kept
    assert precision.CPU_BF16_TRAINING_NOTE in precision.describe_precision("bf16", "cpu", training=True)
    assert precision.CPU_BF16_TRAINING_NOTE not in precision.describe_precision("bf16", "cpu")


def test_native_bf16_detection_reads_cpuinfo_without_torch_checks(monkeypatch, tmp_path):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "CPUINFO", str(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert precision.cpu_native_bf16() is False  # AVX512 alone is not bf16
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert precision.cpu_native_bf16() is True
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert precision.cpu_native_bf16() is True
    monkeypatch.setattr(precision, "CPUINFO", str(tmp_path / "absent"))
    assert precision.cpu_native_bf16() is False  # no way to tell: fp32, never a guess


def test_native_bf16_detection_uses_torch_checks(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.cpu_native_bf16() is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision.cpu_native_bf16() is False


def test_config_precision_and_the_older_amp_key():
    assert DTCConfig().train.precision == "auto" and DTCConfig().infer.precision == "auto"
    old_off = DTCConfig.from_dict({"train": {"amp": False}})  # config.json / checkpoints before --precision
    assert (old_off.train.precision, old_off.infer.precision) == ("fp32", "fp32")
    assert DTCConfig.from_dict({"train": {"amp": True}}).infer.precision == "auto"
    named = DTCConfig.from_dict({"train": {"amp": False}, "infer": {"precision": "bf16"}})
    assert named.infer.precision == "bf16" and named.train.precision == "fp32"
    with pytest.raises(DTCError, match="infer.precision 'half'"):
        DTCConfig.from_dict({"infer": {"precision": "half"}})


def test_bf16_and_fp32_segmentations_agree():
    """The bundled model on one window of the bundled sample case, forced bf16 (emulated where the CPU has
    no native bf16) against fp32."""
    from DTCCore.cli.segment import SAMPLE_IMAGE
    from DTCCore.data.images import read_image
    from DTCCore.inference.predict import predict_volume
    from DTCCore.model.checkpoint import load_model

    image, geometry = read_image(SAMPLE_IMAGE)
    image = image[12:162]  # 93.75 mm in x: one 96 mm window at the model's 2 mm grid
    model, config = load_model(None, torch.device("cpu"))
    config.infer.tta = False
    out = {}
    for choice in ("fp32", "bf16"):
        config.infer.precision = choice
        out[choice] = predict_volume(model, image, config, torch.device("cpu"), spacing=geometry.spacing)
    a, b = out["fp32"], out["bf16"]
    assert b.label.shape == image.shape
    la, lb = a.label > 0, b.label > 0
    assert la.sum() > 1000  # the atrium is in the crop
    assert 2 * (la & lb).sum() / (la.sum() + lb.sum()) >= BF16_MIN_LABEL_DICE
    diff = np.abs(a.probability - b.probability)
    assert diff.mean() <= BF16_MAX_MEAN_PROBABILITY_DIFF and diff.max() <= BF16_MAX_PROBABILITY_DIFF
    assert 0 < np.abs(a.levelset - b.levelset).max() <= BF16_MAX_LEVELSET_DIFF  # > 0: bf16 really ran
    assert a.probability.dtype == b.probability.dtype == np.float32


def test_commands_say_which_precision_they_use(tmp_path, capsys, monkeypatch, tiny_model_file):
    from conftest import blob_volume, write_volume

    src = write_volume(tmp_path / "scan.nrrd", blob_volume(np.random.default_rng(3))[0])
    assert main(["segment", str(src), "-o", str(tmp_path / "auto"), "--model", str(tiny_model_file),
                 "--device", "cpu"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert f"precision: {precision.describe_precision('auto', 'cpu')}" in first  # this CPU's answer, either way
    assert main(["segment", str(src), "-o", str(tmp_path / "forced"), "--model", str(tiny_model_file),
                 "--device", "cpu", "--precision", "bf16"]) == 0
    assert "precision: bf16" in capsys.readouterr().err.splitlines()[0]

    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=1)
    cfg = tmp_path / "cfg.json"
    tiny_config(iterations=2).save(cfg)
    from DTCCore.training import trainer

    used = []  # the dtype each training step's autocast got

    def spy(device, dtype):
        # The steps run in fp32 here: bf16 weight gradients on the CPU can be NaN (runtime/precision.py), and what is
        # tested is that the forced choice reaches every step; bf16 forward passes are tested above.
        used.append(dtype)
        return precision.autocast(device, None)

    monkeypatch.setattr(trainer, "autocast", spy)
    assert main(["train", str(manifest), "-o", str(tmp_path / "run"), "--config", str(cfg), "--jsonl",
                 "--precision", "bf16"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert events[0] == {"event": "message", "text": f"classes: 1 (--config {cfg})"}  # dtc train's first line
    assert events[1]["event"] == "start" and events[1]["precision"].startswith("bf16 (")
    assert precision.CPU_BF16_TRAINING_NOTE in events[1]["precision"]  # the warning, native bf16 or emulated
    assert events[-1]["event"] == "done"
    assert DTCConfig.load(tmp_path / "run" / "config.json").train.precision == "bf16"
    assert used == [torch.bfloat16, torch.bfloat16]
    losses = [e["losses"]["total"] for e in events if e["event"] == "progress"]
    assert len(losses) == 2 and np.all(np.isfinite(losses))


def test_a_bf16_step_with_non_finite_gradients_is_redone_in_fp32(tmp_path, monkeypatch):
    """The NaN guard: a bf16 step whose weight gradients are not all finite is redone in fp32 from the same batch
    and dropout masks, before the weights move. Oracle: a plain fp32 run of the same config, bit for bit."""
    from DTCCore.model import losses
    from DTCCore.model.checkpoint import checkpoint_path, load_checkpoint
    from DTCCore.training import trainer
    from DTCCore.training.runlog import read_log

    manifest = make_blob_dataset(tmp_path / "data", n_labeled=2, n_unlabeled=1)
    used: list = []  # the autocast dtype of every forward pass
    poison_at = {2}  # iterations (0-based) whose bf16 forward gets NaN gradients

    def spy(device, dtype):
        used.append(dtype)  # runs in fp32 either way: what is tested is the guard, not the CPU's bf16 kernels
        return precision.autocast(device, None)

    real_losses = losses.compute_losses

    def poisoned(seg, lsf, label, sdf, labeled_batch, iteration, recipe):
        if used[-1] is torch.bfloat16 and iteration in poison_at:
            seg.register_hook(lambda g: torch.full_like(g, float("nan")))  # NaN weight gradients, finite loss
        return real_losses(seg, lsf, label, sdf, labeled_batch, iteration, recipe)

    monkeypatch.setattr(trainer, "autocast", spy)
    monkeypatch.setattr(losses, "compute_losses", poisoned)
    guarded = trainer.train(tiny_config(iterations=4, precision="bf16"), manifest, tmp_path / "bf16")
    assert used == [torch.bfloat16] * 3 + [None] + [torch.bfloat16]  # step 3: bf16, then its fp32 redo
    used.clear()
    plain = trainer.train(tiny_config(iterations=4, precision="fp32"), manifest, tmp_path / "fp32")
    assert used == [None] * 4
    assert load_checkpoint(guarded)["extra"][trainer.BF16_REDONE_KEY] == 1
    assert trainer.BF16_REDONE_KEY not in load_checkpoint(plain)["extra"]
    # the last checkpoints, not model.pt: its BatchNorm statistics are recomputed in each run's own precision
    a, b = (load_checkpoint(checkpoint_path(tmp_path / run, 4)) for run in ("bf16", "fp32"))
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name  # the redo is exactly the fp32 step
    said = [e.get("text", "") for e in read_log(tmp_path / "bf16") if e.get("event") == "message"]
    assert any("iteration 3: bf16 gave non-finite weight gradients; step redone in fp32 (1 so far)" in t
               for t in said), said
    assert any("1 of 4 bf16 steps" in t for t in said), said


def test_finite_gradients():
    from DTCCore.training.trainer import finite_gradients

    layer = torch.nn.Linear(3, 2)
    assert finite_gradients(layer)  # no gradients yet
    layer(torch.ones(1, 3)).sum().backward()
    assert finite_gradients(layer)
    for bad in (float("inf"), float("nan")):
        layer.bias.grad[0] = bad
        assert not finite_gradients(layer)
