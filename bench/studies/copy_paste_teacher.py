"""The copy-paste teacher study of copy_paste_la.py's ``teacher`` action (its docstring): the teacher's pseudo-label
Dice on unlabeled LA training scans (their labels exist, training never sees them) at each checkpoint, and a replay
of training batches scoring the pasted targets. Written to ``<arm>/teacher_dice.json``. The replay's parts
(:func:`replayed_batch`, :func:`teacher_pseudo_labels`) serve the ACDC study too (copy_paste_teacher_acdc.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
import la_eval


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def unlabeled_truth(manifest_path: Path, config) -> tuple[list, list]:
    """The run's labeled cases and its unlabeled cases with their labels (as LabeledCase, the images exactly as
    training loads them; ``label.nrrd`` beside each unlabeled image, as in LA2018 and ACDC folders)."""
    from DTCCore.data.manifest import LabeledPair, Manifest, load_manifest
    from DTCCore.training.batches import load_cases

    manifest = load_manifest(manifest_path)
    pairs = [LabeledPair(Path(p), Path(p).parent / "label.nrrd") for p in manifest.unlabeled]
    classes, spacing, dims = int(config.network.num_classes), config.plan.spacing, config.network.dims
    labeled, _ = load_cases(Manifest(manifest.labeled, []), classes, spacing=spacing, dims=dims)
    truth, _ = load_cases(Manifest(pairs, []), classes, spacing=spacing, dims=dims)
    return labeled, truth


def training_batches(config, labeled: list, truth: list, start: int = 0, count: int | None = None):
    """The run's TrainBatches (its seed), the unlabeled cases without their labels as in training."""
    from DTCCore.training.batches import TrainBatches, UnlabeledCase

    t = config.train
    extra = {} if count is None else {"start_iteration": start, "num_iterations": count}
    return TrainBatches(labeled, [UnlabeledCase(c.name, c.image) for c in truth], t, config.recipe, seed=t.seed,
                        **extra)


def replayed_batch(config, batches, labeled: list, truth: list, i: int):
    """Training batch ``i`` and the true labels of its unlabeled crops (int64 (Ub, X, Y, Z)); SystemExit when the
    replayed crops are not the batch's."""
    import torch

    from DTCCore.training.batches import CROP_STREAM, LABELED_ORDER, UNLABELED_ORDER, stream_rng

    t = config.train
    batch = batches[i]
    rng = stream_rng(t.seed, 0, CROP_STREAM, i)  # the same draws as batches[i]: labeled crops first, then unlabeled
    for c in batches.picks(LABELED_ORDER, i):
        batches._crop({"image": labeled[c].image}, rng)
    crops = [batches._crop({"image": truth[c].image, "label": truth[c].label}, rng)
             for c in batches.picks(UNLABELED_ORDER, i)]
    if not all(np.array_equal(c["image"], batch["image"][t.labeled_batch + k, 0].numpy()) for k, c in enumerate(crops)):
        raise SystemExit("error: the replayed unlabeled crops differ from the training batch's")
    return batch, torch.from_numpy(np.stack([c["label"] for c in crops]).astype(np.int64))


def teacher_pseudo_labels(config, teacher, batch, i: int):
    """The pseudo-labels the teacher made at step ``i`` (training mode, that step's dropout seed): int64
    (Ub, X, Y, Z)."""
    import torch

    from DTCCore.training.copypaste import pseudo_label
    from DTCCore.training.copypaste_step import TEACHER_SEED_OFFSET
    from DTCCore.training.teacher import teacher_forward
    from DTCCore.training.trainer import SEED_STRIDE

    t = config.train
    torch.manual_seed(t.seed * SEED_STRIDE + i + TEACHER_SEED_OFFSET)
    return pseudo_label(teacher_forward(teacher, batch["image"][t.labeled_batch:]), config.network.dims)


def replay(config, labeled: list, truth: list, teacher, iteration: int, count: int) -> list[dict]:
    """Pseudo-label and pasted-target Dice of the training batches ``iteration .. iteration + count - 1``."""
    from DTCCore.training.copypaste import draw_box, stage2_mix
    from DTCCore.training.copypaste_step import box_rng

    t = config.train
    batches = training_batches(config, labeled, truth)
    n_lab, rows = t.labeled_batch, []
    for i in range(iteration, iteration + count):
        batch, true_u = replayed_batch(config, batches, labeled, truth, i)
        pseudo = teacher_pseudo_labels(config, teacher, batch, i)
        box = draw_box(tuple(t.patch), config.network.dims, box_rng(t.seed, 0, i))
        image_l, image_u = batch["image"][:n_lab], batch["image"][n_lab:]
        _, mixed, from_labeled = stage2_mix(image_l, batch["label"], image_u, pseudo, box)
        _, truth_mixed, _ = stage2_mix(image_l, batch["label"], image_u, true_u, box)
        pseudo_part = ~from_labeled.numpy()
        rows.append({"iteration": i,
                     "crop_dice": [_dice(p > 0, q > 0) for p, q in zip(pseudo.numpy(), true_u.numpy())],
                     "mixed_dice": [_dice(p > 0, q > 0) for p, q in zip(mixed.numpy(), truth_mixed.numpy())],
                     "pseudo_part_dice": [_dice((p > 0) & m, (q > 0) & m) for p, q, m
                                          in zip(mixed.numpy(), truth_mixed.numpy(), pseudo_part)]})
    return rows


def teacher_study(run_dir: Path, data: Path, cases: int, count: int) -> dict:
    """Teacher and student Dice over a copy-paste-teacher run's checkpoints (module docstring)."""
    import torch

    from DTCCore.data.manifest import load_manifest
    from DTCCore.inference.postprocess import largest_component
    from DTCCore.model.checkpoint import list_checkpoints, load_checkpoint
    from DTCCore.model.network import build_network

    saved = sorted(list_checkpoints(run_dir))
    newest = load_checkpoint(saved[-1][1])
    config, manifest_path = newest["config"], Path(newest["extra"]["manifest"])
    labeled, truth = unlabeled_truth(manifest_path, config)
    unlabeled_cases = [Path(p).parent.name for p in load_manifest(manifest_path).unlabeled]  # LA2018 case folders
    pick = sorted({int(round(k)) for k in np.linspace(0, len(truth) - 1, min(cases, len(truth)))})
    spacing = tuple(config.plan.spacing) if config.plan.spacing is not None else None
    scans = {unlabeled_cases[k]: la_eval.load_case(data, unlabeled_cases[k], spacing) for k in pick}
    out: dict = {"run": str(run_dir), "cases": list(scans), "checkpoints": []}
    for it, path in saved:
        payload = load_checkpoint(path)
        if payload.get("teacher") is None:
            continue
        row: dict = {"iteration": it}
        for who, state in (("teacher", payload["teacher"]), ("student", payload["model"])):
            net = build_network(config.network)
            net.load_state_dict(state)
            net.eval()
            row[f"{who}_scan_dice"] = {name: _dice(largest_component(_predict(net, config, image, grid)), label)
                                       for name, (image, label, grid) in scans.items()}
            row[f"{who}_scan_mean"] = float(np.mean(list(row[f"{who}_scan_dice"].values())))
        teacher = build_network(config.network)
        teacher.load_state_dict(payload["teacher"])
        with torch.no_grad():
            row["replay"] = replay(config, labeled, truth, teacher, it, count)
        for key in ("crop_dice", "mixed_dice", "pseudo_part_dice"):
            row[f"replay_{key}_mean"] = float(np.mean([v for r in row["replay"] for v in r[key]]))
        print(f"  {run_dir.name} iteration {it}: teacher {100 * row['teacher_scan_mean']:.2f}, student "
              f"{100 * row['student_scan_mean']:.2f} on {len(scans)} unlabeled scans; replay crops "
              f"{100 * row['replay_crop_dice_mean']:.2f}, pasted targets {100 * row['replay_mixed_dice_mean']:.2f}",
              flush=True)
        out["checkpoints"].append(row)
    common.write_json(run_dir / "teacher_dice.json", out)
    return out


def _predict(net, config, image: np.ndarray, spacing) -> np.ndarray:
    """The network's foreground (bool, the image's grid) on a scan of ``spacing`` mm."""
    from DTCCore.inference.predict import predict_volume

    return predict_volume(net, image, config, "cpu", spacing=spacing).label > 0
