"""What a copy-paste-teacher run on ACDC knew at each checkpoint: the student's and the teacher's validation Dice per
class, and the teacher's pseudo-labels against the unlabeled patients' labels (training never sees them).

    python bench/studies/copy_paste_teacher_acdc.py RUN_DIR --data ../shared/data/acdc [--replay 6] [--every 1]
    python bench/studies/copy_paste_teacher_acdc.py RUN_DIR --report

RUN_DIR: a train_acdc.py run folder (``run_copy-paste-teacher``, or a control's ``run_copy-paste``: then only the
student). For every checkpoint (stage 1 too):

- the student on ``val.list`` (raw argmax, Dice per class), with the checkpoint's BatchNorm statistics and with them
  recomputed for its weights over ``PRECISE_BN_BATCHES`` training batches: a checkpoint keeps the running averages,
  which lag the weights at lr 0.01 (DTCCore/model/batchnorm.py), so both are shown;
- from stage 2 on, the teacher the same way, and its pseudo-labels on ``--replay`` training batches from that
  iteration (copy_paste_teacher.py's replay: the batch's unlabeled crops, the teacher in training mode with the step's
  dropout seed): Dice per class against the crops' true labels (a class absent from both is skipped), and the
  voxels of each class predicted and true.

Written to ``RUN_DIR/teacher_dice_acdc.json``; ``--report`` prints the table.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
import copy_paste_teacher
import train_acdc

OUT = "teacher_dice_acdc.json"
PRECISE_BN_BATCHES = 25  # as the trainer's final pass (DTCCore.config train.precise_bn_batches default)


def class_dice(pred: np.ndarray, truth: np.ndarray, classes: int) -> dict[int, float]:
    """Dice per class 1..classes of two label maps; NaN where the class is in neither."""
    out = {}
    for c in range(1, classes + 1):
        a, b = pred == c, truth == c
        total = int(a.sum() + b.sum())
        out[c] = float("nan") if total == 0 else 2.0 * float((a & b).sum()) / total
    return out


def with_recomputed_bn(net, config, labeled: list, truth: list, start: int):
    """A copy of ``net`` in evaluation mode, its BatchNorm statistics recomputed over the training batches
    ``start .. start + PRECISE_BN_BATCHES - 1`` (labeled and unlabeled crops, as the trainer's final pass)."""
    from DTCCore.model.batchnorm import recompute_batchnorm_stats

    net = copy.deepcopy(net)
    batches = copy_paste_teacher.training_batches(config, labeled, truth, start, PRECISE_BN_BATCHES)
    recompute_batchnorm_stats(net, (batches[i]["image"] for i in batches.indices()))
    return net.eval()


def validation_dice(net, config, data: Path, cases: list[str]) -> dict[str, float]:
    """Raw validation Dice per class (keys "1".."C") and their ``"mean"`` (train_acdc.evaluate)."""
    import torch

    means = train_acdc.evaluate(net, config, torch.device("cpu"), data, cases)["raw"]["means"]
    return {**{str(c): means[c]["dice"] for c in train_acdc.CLASSES}, "mean": means["mean"]["dice"]}


def pseudo_label_quality(config, labeled: list, truth: list, teacher, iteration: int, count: int) -> dict:
    """Per class: mean Dice of the teacher's pseudo-labels over the replayed unlabeled crops (crops where the class
    is in neither skipped; NaN when it is in none), predicted and true voxels summed."""
    classes = int(config.network.num_classes)
    batches = copy_paste_teacher.training_batches(config, labeled, truth)
    dice: dict[int, list[float]] = {c: [] for c in range(1, classes + 1)}
    voxels = {c: [0, 0] for c in range(1, classes + 1)}
    for i in range(iteration, iteration + count):
        batch, true_u = copy_paste_teacher.replayed_batch(config, batches, labeled, truth, i)
        pseudo = copy_paste_teacher.teacher_pseudo_labels(config, teacher, batch, i).numpy()
        for p, q in zip(pseudo, true_u.numpy()):
            for c, d in class_dice(p, q, classes).items():
                dice[c].append(d)
                voxels[c][0] += int((p == c).sum())
                voxels[c][1] += int((q == c).sum())
    return {str(c): {"dice": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"),
                     "predicted_voxels": voxels[c][0], "true_voxels": voxels[c][1]} for c, v in dice.items()}


def study(run_dir: Path, data: Path, count: int, every: int = 1) -> dict:
    """The rows of every ``every``-th checkpoint of ``run_dir`` (module docstring), written to ``run_dir/OUT``."""
    import torch

    from DTCCore.model.checkpoint import list_checkpoints, load_checkpoint
    from DTCCore.model.network import build_network

    saved = sorted(list_checkpoints(run_dir))
    if not saved:
        raise SystemExit(f"error: {run_dir} has no checkpoints (checkpoints/iter_*.pt); "
                         "give a train_acdc.py run folder")
    newest = load_checkpoint(saved[-1][1])
    config = newest["config"]
    config.infer.largest_component = False
    labeled, truth = copy_paste_teacher.unlabeled_truth(Path(newest["extra"]["manifest"]), config)
    cases = common.read_list(data, "val.list")
    out: dict = {"run": run_dir.name, "val_cases": cases, "checkpoints": []}
    for it, path in saved[::-1][::every][::-1]:  # the last checkpoint always
        payload = load_checkpoint(path)
        row: dict = {"iteration": it, "stage": 2 if payload.get("teacher") is not None else 1}
        for who in ("student", "teacher"):
            state = payload["model"] if who == "student" else payload.get("teacher")
            if state is None:
                continue
            net = build_network(config.network)
            net.load_state_dict(state)
            row[f"{who}_val_stored_bn"] = validation_dice(copy.deepcopy(net).eval(), config, data, cases)
            recomputed = with_recomputed_bn(net, config, labeled, truth, it)
            row[f"{who}_val"] = validation_dice(recomputed, config, data, cases)
            if who == "teacher":
                with torch.no_grad():
                    row["pseudo_labels"] = pseudo_label_quality(config, labeled, truth, net, it, count)
        print(f"  iteration {it}: {_line(row)}", flush=True)
        out["checkpoints"].append(row)
    common.write_json(run_dir / OUT, out)
    return out


def _pct(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{100 * value:.1f}"


def _line(row: dict) -> str:
    keys = [str(c) for c in train_acdc.CLASSES]
    text = "student " + " / ".join(_pct(row["student_val"][k]) for k in keys)
    if "teacher_val" in row:
        text += "; teacher " + " / ".join(_pct(row["teacher_val"][k]) for k in keys)
        text += "; pseudo-labels " + " / ".join(_pct(row["pseudo_labels"][k]["dice"]) for k in keys)
    return text


def table(result: dict) -> str:
    """Markdown: one row per checkpoint; Dice % per class RV / myo / LV."""
    keys = [str(c) for c in train_acdc.CLASSES]

    def three(d: dict | None) -> str:
        return "" if d is None else " / ".join(_pct(d[k]) for k in keys)

    lines = ["| iteration | stage | student val (stored BN) | student val | teacher val | pseudo-labels | "
             "pseudo : true voxels |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["checkpoints"]:
        pseudo = row.get("pseudo_labels") or {}
        dice = " / ".join(_pct(pseudo[k]["dice"]) for k in keys) if pseudo else ""
        voxels = " / ".join(f"{pseudo[k]['predicted_voxels']}:{pseudo[k]['true_voxels']}" for k in keys
                            ) if pseudo else ""
        lines.append(f"| {row['iteration']} | {row['stage']} | {three(row['student_val_stored_bn'])} | "
                     f"{three(row['student_val'])} | {three(row.get('teacher_val'))} | {dice} | {voxels} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a train_acdc.py run folder (run_copy-paste-teacher)")
    p.add_argument("--data", type=Path, default=common.REPO.parent / "shared" / "data" / "acdc",
                   help="ACDC folder (val.list, the patients' labels)")
    p.add_argument("--replay", type=int, default=6, help="training batches replayed per checkpoint with a teacher")
    p.add_argument("--every", type=int, default=1, help="every N-th checkpoint, counted back from the last")
    p.add_argument("--report", action="store_true", help="only print the table of an earlier study")
    args = p.parse_args(argv)
    if args.every < 1:
        p.error("--every must be 1 or more")
    if args.report:
        import json

        result = json.loads((args.run_dir / OUT).read_text())
    else:
        result = study(args.run_dir, args.data, args.replay, args.every)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
