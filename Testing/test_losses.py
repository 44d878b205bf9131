"""Tests of DTCCore.model.losses against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from DTCCore.config import RecipeConfig
from DTCCore.errors import DTCError
from DTCCore.model.losses import compute_losses, consistency_loss, dice_loss, lsf_loss, ramp_weight


def _sig(v: float) -> float:
    if v < 0:  # stable form for large negative v
        return math.exp(v) / (1.0 + math.exp(v))
    return 1.0 / (1.0 + math.exp(-v))


def _hand_dice(p: list[float], y: list[float]) -> float:
    inter = sum(a * b for a, b in zip(p, y))
    return 1.0 - (2 * inter + 1e-5) / (sum(a * a for a in p) + sum(b * b for b in y) + 1e-5)


P8 = [0.9, 0.8, 0.1, 0.6, 0.2, 0.0, 0.3, 0.7]  # a 2x2x2 probability patch
Y8 = [1, 1, 0, 1, 0, 0, 1, 0]


def test_dice_loss_by_hand() -> None:
    p = torch.tensor(P8).view(1, 1, 2, 2, 2)
    y = torch.tensor(Y8, dtype=torch.float32).view(1, 1, 2, 2, 2)
    # by hand: sum(p y) = 2.6, sum(p^2) = 2.44, sum(y^2) = 4 -> 1 - 5.2 / 6.44
    assert dice_loss(p, y).item() == pytest.approx(1 - (5.2 + 1e-5) / (6.44 + 1e-5), abs=1e-6)
    assert dice_loss(p, y).item() == pytest.approx(_hand_dice(P8, Y8), abs=1e-6)
    # two classes: mean of the per-class losses
    p2 = torch.stack([p[0, 0], 1 - p[0, 0]])[None]
    y2 = torch.stack([y[0, 0], 1 - y[0, 0]])[None]
    expected = 0.5 * (_hand_dice(P8, Y8) + _hand_dice([1 - v for v in P8], [1 - v for v in Y8]))
    assert dice_loss(p2, y2).item() == pytest.approx(expected, abs=1e-6)
    assert dice_loss(y, y).item() == pytest.approx(0.0, abs=1e-6)


def test_lsf_and_consistency_by_hand() -> None:
    lsf = torch.tensor([0.5, -0.5, 0.0, 1.0]).view(1, 1, 4, 1, 1)
    sdf = torch.tensor([0.25, -1.0, 0.0, 0.0]).view(1, 1, 4, 1, 1)
    assert lsf_loss(lsf, sdf).item() == pytest.approx((0.0625 + 0.25 + 0 + 1.0) / 4)

    z = torch.tensor([0.0, 0.001, -0.002, 1.0]).view(1, 1, 4, 1, 1)
    prob = torch.tensor([0.2, 0.5, 0.9, 0.0]).view(1, 1, 4, 1, 1)
    inv = [0.5, _sig(-1.5), _sig(3.0), _sig(-1500.0)]
    expected = sum((a - b) ** 2 for a, b in zip(inv, [0.2, 0.5, 0.9, 0.0])) / 4
    assert consistency_loss(prob, z, 1500.0).item() == pytest.approx(expected, abs=1e-6)


def test_ramp_values() -> None:
    r = RecipeConfig()
    assert ramp_weight(0, r) == pytest.approx(math.exp(-5))
    assert ramp_weight(150 * 20, r) == pytest.approx(math.exp(-5 * 0.25))
    assert ramp_weight(150 * 20 + 149, r) == pytest.approx(math.exp(-5 * 0.25))  # integer ramp units
    assert ramp_weight(6000, r) == pytest.approx(1.0)
    assert ramp_weight(10000, r) == pytest.approx(1.0)
    assert ramp_weight(-5, r) == pytest.approx(math.exp(-5))
    assert ramp_weight(0, RecipeConfig(consistency=0.5, consistency_rampup=0.0)) == 0.5
    assert ramp_weight(3000, RecipeConfig(consistency=2.0)) == pytest.approx(2 * math.exp(-1.25))


def _tiny_batch():
    """N = 2 (1 labeled + 1 unlabeled), one class, 2x2x2 voxels; leaves that require grad."""
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0, 0.5, -2.0, 0.0, 1.0],
                           [1.0, 0.0, 0.0, -1.0, 2.0, 0.0, -0.5, 0.5]]).view(2, 1, 2, 2, 2)
    lsf = torch.tensor([[-0.001, -0.002, 0.0, 0.001, 0.5, -0.5, 0.002, 0.0],
                        [0.0, 0.001, -0.001, 0.0, 0.003, -0.004, 0.0, 0.001]]).view(2, 1, 2, 2, 2)
    label = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0]).view(1, 2, 2, 2)
    sdf = torch.tensor([-0.5, -1.0, 0.5, 0.0, 1.0, 0.5, 0.0, 0.25]).view(1, 1, 2, 2, 2)
    return logits.requires_grad_(), lsf.requires_grad_(), label, sdf


def _hand_terms():
    logits, lsf, label, sdf = _tiny_batch()
    lg = logits.detach().flatten(1).tolist()
    ls = lsf.detach().flatten(1).tolist()
    p = [[_sig(v) for v in row] for row in lg]
    dice = _hand_dice(p[0], label.flatten().tolist())
    mse = sum((a - b) ** 2 for a, b in zip(ls[0], sdf.flatten().tolist())) / 8
    cons = sum((_sig(-1500 * z) - q) ** 2 for zr, pr in zip(ls, p) for z, q in zip(zr, pr)) / 16
    return dice, mse, cons


@pytest.mark.parametrize("mode", ["seg", "lsf", "seg+lsf", "dtc"])
def test_compute_losses_modes_by_hand(mode: str) -> None:
    recipe = RecipeConfig(beta=0.3)
    logits, lsf, label, sdf = _tiny_batch()
    out = compute_losses(logits, lsf, label, sdf, 1, 150 * 20, recipe, mode)
    dice, mse, cons = _hand_terms()
    lam = math.exp(-1.25) if mode == "dtc" else 0.0
    expected_total = {"seg": dice, "lsf": 0.3 * mse, "seg+lsf": dice + 0.3 * mse,
                      "dtc": dice + 0.3 * mse + lam * cons}[mode]
    assert set(out) == {"total", "dice", "lsf", "consistency", "lambda"}
    assert all(v.ndim == 0 and v.dtype == torch.float32 for v in out.values())
    assert out["dice"].item() == pytest.approx(dice, abs=1e-6)
    assert out["lsf"].item() == pytest.approx(mse, abs=1e-6)
    assert out["consistency"].item() == pytest.approx(cons, abs=1e-6)
    assert out["lambda"].item() == pytest.approx(lam, abs=1e-6)
    assert out["total"].item() == pytest.approx(expected_total, abs=1e-6)


def test_mode_defaults_to_recipe_and_is_validated() -> None:
    logits, lsf, label, sdf = _tiny_batch()
    out = compute_losses(logits, lsf, label, sdf, 1, 6000, RecipeConfig(mode="seg"))
    assert out["total"].item() == pytest.approx(out["dice"].item())
    with pytest.raises(DTCError, match="mode"):
        compute_losses(logits, lsf, label, sdf, 1, 0, RecipeConfig(), "bogus")


def _grad(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(t) if t.grad is None else t.grad


def test_unlabeled_items_reach_gradients_only_through_consistency() -> None:
    recipe = RecipeConfig()
    for mode in ("seg", "lsf", "seg+lsf"):
        logits, lsf, label, sdf = _tiny_batch()
        compute_losses(logits, lsf, label, sdf, 1, 6000, recipe, mode)["total"].backward()
        g_seg, g_lsf = _grad(logits), _grad(lsf)
        assert torch.all(g_seg[1] == 0) and torch.all(g_lsf[1] == 0), mode
        assert g_seg[0].abs().sum() > 0 or g_lsf[0].abs().sum() > 0, mode

    logits, lsf, label, sdf = _tiny_batch()
    compute_losses(logits, lsf, label, sdf, 1, 6000, recipe, "dtc")["total"].backward()
    assert logits.grad[1].abs().sum() > 0 and lsf.grad[1].abs().sum() > 0  # consistency, no detach
    # ... and the unlabeled gradient is exactly that of lambda * consistency
    lg2, ls2, _, _ = _tiny_batch()
    consistency_loss(torch.sigmoid(lg2), ls2, recipe.k).backward()
    torch.testing.assert_close(logits.grad[1], lg2.grad[1])  # lambda = 1 at iteration 6000
    torch.testing.assert_close(lsf.grad[1], ls2.grad[1])


def test_multiclass_softmax_pairing() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 2, 2, 2)  # background + 2 classes, 3 items (2 labeled)
    lsf = torch.tanh(torch.randn(3, 2, 2, 2, 2)) * 0.01
    label = torch.randint(0, 3, (2, 2, 2, 2))
    sdf = torch.rand(2, 2, 2, 2, 2) * 2 - 1
    out = compute_losses(logits, lsf, label, sdf, 2, 6000, RecipeConfig(), "dtc")
    prob = torch.softmax(logits, dim=1)
    per_class = []
    for c in (1, 2):
        p = prob[:2, c].flatten().tolist()
        y = (label == c).float().flatten().tolist()
        per_class.append(_hand_dice(p, y))
    assert out["dice"].item() == pytest.approx(sum(per_class) / 2, abs=1e-5)
    cons = sum(((torch.sigmoid(-1500 * lsf[:, c - 1]) - prob[:, c]) ** 2).sum().item() for c in (1, 2)) / (3 * 2 * 8)
    assert out["consistency"].item() == pytest.approx(cons, abs=1e-6)
    assert out["lsf"].item() == pytest.approx(((lsf[:2] - sdf) ** 2).mean().item(), abs=1e-6)


def test_fp32_under_autocast() -> None:
    logits, lsf, label, sdf = _tiny_batch()
    lb, sb = logits.detach().bfloat16(), lsf.detach().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compute_losses(lb, sb, label, sdf, 1, 6000, RecipeConfig(), "dtc")
    ref = compute_losses(lb.float(), sb.float(), label, sdf, 1, 6000, RecipeConfig(), "dtc")
    for key in ref:
        assert out[key].dtype == torch.float32
        assert out[key].item() == pytest.approx(ref[key].item(), rel=1e-6, abs=1e-7), key
