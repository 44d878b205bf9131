"""Copy-paste (BCP) pieces against hand-built oracles: the box, the mixed images and targets, the pixel weights,
the pseudo-labels (threshold / argmax + largest component), the EMA teacher and the region-weighted losses."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from DTCCore.config import RecipeConfig
from DTCCore.model.network import DualTaskVNet
from DTCCore.training.copypaste import box_side, draw_box, pixel_weights, pseudo_label, stage1_mix, stage2_mix
from DTCCore.training.copypaste_loss import copy_paste_losses
from DTCCore.training.teacher import ema_update, make_teacher, teacher_forward


@pytest.mark.parametrize("size, side", [(48, 32), (32, 21), (112, 74), (80, 53), (16, 10), (3, 2), (1, 1)])
def test_box_sides_are_two_thirds_of_the_crop(size, side):
    assert box_side(size) == side  # int(2 * size / 3) by hand; at least 1 voxel


def test_box_start_is_uniform_below_size_minus_side_and_drawn_x_y_z():
    # 48 x 48 x 32 crop: sides 32, 32, 21; starts in 0..15, 0..15, 0..10 (the reference's exclusive randint).
    starts = {axis: set() for axis in range(3)}
    for seed in range(600):
        box = draw_box((48, 48, 32), 3, np.random.default_rng(seed))
        assert [s.stop - s.start for s in box] == [32, 32, 21]
        expected = np.random.default_rng(seed)
        assert [s.start for s in box] == [int(expected.integers(0, 16)), int(expected.integers(0, 16)),
                                          int(expected.integers(0, 11))]
        for axis, s in enumerate(box):
            starts[axis].add(s.start)
    assert starts == {0: set(range(16)), 1: set(range(16)), 2: set(range(11))}


def test_a_2d_networks_box_covers_every_slice_and_draws_only_in_the_plane():
    rng = np.random.default_rng(5)
    box = draw_box((48, 36, 4), 2, rng)
    assert box[2] == slice(0, 4) and [s.stop - s.start for s in box[:2]] == [32, 24]
    after = rng.integers(0, 1000)
    again = np.random.default_rng(5)
    again.integers(0, 16), again.integers(0, 12)
    assert after == again.integers(0, 1000)  # two draws (x, y), none for z


def _naive_inside(box, x, y, z) -> bool:
    return all(s.start <= v < s.stop for s, v in zip(box, (x, y, z)))


def test_stage1_pastes_the_second_labeled_crops_box_into_the_first():
    shape = (6, 5, 4)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(size=(4, 1, *shape)).astype(np.float32))
    label = torch.from_numpy(rng.integers(0, 3, size=(4, *shape)))
    box = (slice(1, 5), slice(0, 3), slice(2, 4))
    mixed, target = stage1_mix(image, label, box)
    assert mixed.shape == (2, 1, *shape) and target.shape == (2, *shape)
    for n, x, y, z in itertools.product(range(2), *map(range, shape)):
        source = n + 2 if _naive_inside(box, x, y, z) else n  # crop i outside, crop h + i inside
        assert mixed[n, 0, x, y, z] == image[source, 0, x, y, z]
        assert target[n, x, y, z] == label[source, x, y, z]


def test_stage2_mixes_both_ways_with_ground_truth_and_pseudo_labels_and_their_origin():
    shape = (5, 6, 3)
    h = 2
    image_l = torch.full((2 * h, 1, *shape), 0.0) + torch.arange(2 * h).view(-1, 1, 1, 1, 1)  # crop n has value n
    image_u = torch.full((2 * h, 1, *shape), 10.0) + torch.arange(2 * h).view(-1, 1, 1, 1, 1)  # 10 + n
    label_l = torch.ones((2 * h, *shape), dtype=torch.long)  # ground truth: all 1
    pseudo_u = torch.full((2 * h, *shape), 2, dtype=torch.long)  # pseudo-labels: all 2
    box = (slice(2, 5), slice(1, 3), slice(0, 2))
    images, targets, from_labeled = stage2_mix(image_l, label_l, image_u, pseudo_u, box)
    weights = pixel_weights(from_labeled)
    for n, x, y, z in itertools.product(range(2 * h), *map(range, shape)):
        inside = _naive_inside(box, x, y, z)
        if n < h:  # an unlabeled crop's box in labeled crop n: labeled outside
            labeled_pixel = not inside
            value = 10.0 + n if inside else float(n)
        else:  # labeled crop n's box in unlabeled crop n: labeled inside
            labeled_pixel = inside
            value = float(n) if inside else 10.0 + n
        assert images[n, 0, x, y, z] == value
        assert bool(from_labeled[n, x, y, z]) == labeled_pixel
        assert targets[n, x, y, z] == (1 if labeled_pixel else 2)  # ground truth there, pseudo-label elsewhere
        assert weights[n, x, y, z] == (1.0 if labeled_pixel else 0.5)


def _naive_components(mask: np.ndarray) -> list[list[tuple[int, ...]]]:
    """Connected components of a 3-D bool array with 26-neighbourhood, by breadth-first search, in C order of
    their first voxel."""
    seen = np.zeros(mask.shape, bool)
    out = []
    steps = [d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)]
    for start in itertools.product(*map(range, mask.shape)):
        if not mask[start] or seen[start]:
            continue
        seen[start] = True
        comp, queue = [], deque([start])
        while queue:
            v = queue.popleft()
            comp.append(v)
            for d in steps:
                w = tuple(a + b for a, b in zip(v, d))
                if all(0 <= c < s for c, s in zip(w, mask.shape)) and mask[w] and not seen[w]:
                    seen[w] = True
                    queue.append(w)
        out.append(comp)
    return out


def _naive_largest(mask: np.ndarray) -> np.ndarray:
    comps = _naive_components(mask)
    out = np.zeros(mask.shape, bool)
    if comps:
        best = max(comps, key=len)  # max keeps the first of equal sizes, as the reference's argmax
        for v in best:
            out[v] = True
    return out


def _scipy_largest(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask, structure=np.ones((3,) * mask.ndim))
    if n == 0:
        return np.zeros(mask.shape, bool)
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1


def test_one_class_pseudo_label_is_threshold_half_then_largest_26_connected_component():
    rng = np.random.default_rng(3)
    shape = (9, 8, 7)
    logits = rng.normal(-0.3, 1.0, size=(3, 1, *shape)).astype(np.float32)
    logits[1] = -5.0  # an item with no foreground stays empty
    logits[2, 0, 0, 0, 0] = 0.0  # sigmoid(0) = 0.5 counts as foreground (>= 0.5)
    out = pseudo_label(torch.from_numpy(logits), dims=3).numpy()
    assert out.dtype == np.int64 and out.shape == (3, *shape)
    for n in range(3):
        fg = 1.0 / (1.0 + np.exp(-logits[n, 0].astype(np.float64))) >= 0.5
        assert fg.sum() > 0 or n == 1
        expected = _naive_largest(fg)
        assert np.array_equal(expected, _scipy_largest(fg))
        assert np.array_equal(out[n], expected.astype(np.int64))
    assert not out[1].any() and len(_naive_components(out[0] > 0)) == 1


def test_diagonal_neighbours_join_one_component():
    logits = np.full((1, 1, 4, 4, 4), -4.0, np.float32)
    for v in [(0, 0, 0), (1, 1, 1), (2, 2, 2)]:  # corner-touching only: one 26-connected component of 3
        logits[(0, 0) + v] = 4.0
    logits[0, 0, 3, 0, 3] = 4.0
    logits[0, 0, 0, 3, 0] = 4.0
    out = pseudo_label(torch.from_numpy(logits), dims=3)[0].numpy()
    assert out.sum() == 3 and out[0, 0, 0] == out[1, 1, 1] == out[2, 2, 2] == 1


def test_multiclass_pseudo_label_is_argmax_then_largest_component_per_class():
    rng = np.random.default_rng(7)
    shape = (8, 7, 6)
    logits = rng.normal(size=(2, 3, *shape)).astype(np.float32)
    logits[:, 0] += 1.6  # mostly background: each class falls into several 26-connected pieces
    out = pseudo_label(torch.from_numpy(logits), dims=3).numpy()
    hard = np.argmax(logits, axis=1)  # softmax is monotone: its argmax is the logits'
    for n in range(2):
        expected = np.zeros(shape, np.int64)
        for c in (1, 2):
            expected[_naive_largest(hard[n] == c)] = c
        assert np.array_equal(out[n], expected)
        assert (out[n] != hard[n]).any()  # the smaller components did go (the test can fail)


def test_a_2d_networks_pseudo_label_keeps_the_largest_component_of_each_slice():
    # Slice 0: a 3-pixel blob and a 2-pixel blob; slice 1: only the 2-pixel blob's continuation, which joins the
    # slice-0 pair in 3-D. Per slice: slice 0 keeps its 3 pixels, slice 1 keeps its own blob.
    logits = np.full((1, 1, 6, 6, 2), -4.0, np.float32)
    for x, y in [(0, 0), (0, 1), (1, 0)]:
        logits[0, 0, x, y, 0] = 4.0
    for x, y in [(4, 4), (4, 5)]:
        logits[0, 0, x, y, 0] = 4.0
        logits[0, 0, x, y, 1] = 4.0
    logits[0, 0, 5, 5, 1] = 4.0  # diagonal to (4, 4): 8-connected in the slice
    out2 = pseudo_label(torch.from_numpy(logits), dims=2)[0].numpy()
    for k in range(2):
        sl = 1.0 / (1.0 + np.exp(-logits[0, 0, :, :, k])) >= 0.5
        assert np.array_equal(out2[:, :, k], _naive_largest(sl[:, :, None])[:, :, 0])
    assert out2[:, :, 0].sum() == 3 and out2[:, :, 1].sum() == 3
    out3 = pseudo_label(torch.from_numpy(logits), dims=3)[0].numpy()
    assert out3.sum() == 5  # in 3-D the two 2-slice pixels and their neighbour form the largest component


def test_ema_update_follows_the_hand_formula_for_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    student = DualTaskVNet(base_filters=2)
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        for name, b in student.named_buffers():
            if b.is_floating_point():
                b.add_(torch.rand_like(b))
            else:
                b.fill_(7)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.99)
    after, s = teacher.state_dict(), student.state_dict()
    for k in before:
        if before[k].is_floating_point():
            expected = 0.99 * before[k].double() + 0.01 * s[k].double()
            assert torch.allclose(after[k].double(), expected, rtol=0, atol=1e-6), k
            assert not torch.equal(after[k], before[k]), k
        else:
            assert torch.equal(after[k], s[k]), k


def test_the_teacher_forward_uses_batch_statistics_and_leaves_its_running_statistics():
    torch.manual_seed(1)
    teacher = make_teacher(DualTaskVNet(base_filters=2, dropout=False))
    image = torch.randn(2, 1, 16, 16, 16) * 3 + 5
    buffers = [b.clone() for b in teacher.buffers()]
    seg = teacher_forward(teacher, image)
    assert all(torch.equal(a, b) for a, b in zip(buffers, teacher.buffers()))
    teacher.eval()
    with torch.no_grad():
        eval_seg, _ = teacher(image)
    assert not torch.allclose(seg, eval_seg)  # training mode: the batch's statistics, not the running ones


def _naive_mix_loss(logits: np.ndarray, target: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """LA mask_DiceLoss and masked CE of one region by loops, 1 sigmoid channel: (dice, ce)."""
    dices = []
    for n in range(logits.shape[0]):
        p1 = 1.0 / (1.0 + np.exp(-logits[n, 0].astype(np.float64)))
        for prob, y in ((1.0 - p1, target[n] == 0), (p1, target[n] == 1)):
            inter = sum(prob[v] * y[v] for v in np.ndindex(prob.shape) if region[n][v])
            union = sum(prob[v] + y[v] for v in np.ndindex(prob.shape) if region[n][v])
            dices.append((2 * inter + 1e-5) / (union + 1e-5))
    ce_sum, count = 0.0, 0
    for n in range(logits.shape[0]):
        p1 = 1.0 / (1.0 + np.exp(-logits[n, 0].astype(np.float64)))
        for v in np.ndindex(p1.shape):
            if region[n][v]:
                ce_sum += -np.log(p1[v]) if target[n][v] == 1 else -np.log(1.0 - p1[v])
                count += 1
    return 1.0 - float(np.mean(dices)), ce_sum / (count + 1e-16)


def test_losses_weigh_ground_truth_one_and_pseudo_labels_half_per_direction():
    rng = np.random.default_rng(2)
    shape = (4, 3, 3)
    logits = rng.normal(size=(4, 1, *shape)).astype(np.float32)
    target = rng.integers(0, 2, size=(4, *shape))
    from_labeled = rng.random((4, *shape)) < 0.6
    recipe = RecipeConfig(cp_levelset=False, cp_consistency=False)
    got = copy_paste_losses(torch.from_numpy(logits), torch.zeros(4, 1, *shape), torch.from_numpy(target),
                            torch.from_numpy(from_labeled), [slice(0, 2), slice(2, 4)], 0, recipe, 3)
    dice = ce = 0.0
    for items in (slice(0, 2), slice(2, 4)):
        for region, weight in ((from_labeled[items], 1.0), (~from_labeled[items], 0.5)):
            d, c = _naive_mix_loss(logits[items], target[items], region)
            dice, ce = dice + weight * d, ce + weight * c
    assert float(got["dice"]) == pytest.approx(dice, rel=1e-5)
    assert float(got["ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(got["total"]) == pytest.approx((dice + ce) / 2, rel=1e-5)
    assert float(got["lsf"]) == 0.0 and float(got["lambda"]) == 0.0


def test_stage1_loss_is_las_dice_plus_ce_over_the_whole_mixed_crop():
    rng = np.random.default_rng(4)
    shape = (3, 4, 2)
    logits = rng.normal(size=(1, 1, *shape)).astype(np.float32)
    target = rng.integers(0, 2, size=(1, *shape))
    everywhere = np.ones((1, *shape), bool)
    recipe = RecipeConfig(cp_levelset=False, cp_consistency=False)
    got = copy_paste_losses(torch.from_numpy(logits), torch.zeros(1, 1, *shape), torch.from_numpy(target),
                            torch.from_numpy(everywhere), [slice(0, 1)], 0, recipe, 3)
    dice, ce = _naive_mix_loss(logits, target, everywhere)
    assert float(got["total"]) == pytest.approx((dice + ce) / 2, rel=1e-5)


def test_level_set_and_consistency_terms_switch_on_and_off():
    rng = np.random.default_rng(6)
    shape = (6, 6, 4)
    logits = torch.from_numpy(rng.normal(size=(2, 1, *shape)).astype(np.float32))
    lsf = torch.from_numpy(rng.uniform(-1, 1, size=(2, 1, *shape)).astype(np.float32))
    target = torch.zeros(2, *shape, dtype=torch.long)
    target[:, 1:4, 1:4, 1:3] = 1
    from_labeled = torch.zeros(2, *shape, dtype=torch.bool)
    from_labeled[0] = True  # item 0 all ground truth (weight 1), item 1 all pseudo-label (weight 0.5)
    groups = [slice(0, 2)]
    base = RecipeConfig(cp_levelset=False, cp_consistency=False)
    both = RecipeConfig(cp_levelset=True, cp_consistency=True, consistency_rampup=0.0)
    a = copy_paste_losses(logits, lsf, target, from_labeled, groups, 10, base, 3)
    b = copy_paste_losses(logits, lsf, target, from_labeled, groups, 10, both, 3)
    from DTCCore.model.levelset import inverse_transform, signed_distance

    sdf = signed_distance(target[0].numpy() > 0)  # both items have the same target
    mse = [float(((lsf[n, 0].numpy() - sdf) ** 2).mean()) for n in range(2)]
    assert float(b["lsf"]) == pytest.approx(1.0 * mse[0] + 0.5 * mse[1], rel=1e-5)
    prob = torch.sigmoid(logits)
    cons = float(((inverse_transform(lsf, 1500.0) - prob) ** 2).mean())
    assert float(a["consistency"]) == pytest.approx(cons, rel=1e-5)
    assert float(b["lambda"]) == 1.0
    assert float(b["total"]) == pytest.approx(float(a["total"]) + 0.3 * float(b["lsf"]) + cons, rel=1e-5)
