"""``dtc train MANIFEST -o RUN_DIR``: train or fine-tune a dual-task VNet."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..config import AUGMENT_CHOICES, MODES, PRECISIONS, STAGE2_GATE_EVERY, STAGE2_GATE_LAST, DTCConfig
from ..errors import DTCError
from ..planning.dims import SLICE_ANISOTROPY, SLICES_PER_CROP_2D, auto_dims, parse_dims, plane_pools
from ..planning.pools import auto_pools, check_pools
from ..planning.spacing import manifest_auto_spacing, manifest_median_spacing, parse_spacing
from ..protocol import CHECKPOINT_DIR, EVENT_KEY, EXIT_CANCELLED, Event
from ..training.mode_choice import AUTO_MODE, budget_minutes, pick_mode
from ..training.schedule import fit_schedule
from ..training.two_stage_budget import STAGE2_COST_RATIO, STAGE2_COST_RATIO_2D
from . import device_argument, events

# Our choice: a new model's class count is read from its labels, and more classes than this (a 0..255 mask,
# an instance map) is far more likely a label of another kind than a 200-class network: say so instead.
MAX_INFERRED_CLASSES = 32

HELP = """\
Train a dual-task VNet on the scans a manifest names. MANIFEST is JSON:
  {"labeled": [{"image": "a.nrrd", "label": "a_label.nrrd"}, ...], "unlabeled": ["b.nrrd", ...]}
(paths relative to the manifest allowed). RUN_DIR receives config.json, log.jsonl, curves.png,
checkpoints/iter_*.pt and, at the end, model.pt (use it with 'dtc segment --model').
Ctrl-C (or SIGTERM) saves a checkpoint and stops; --resume continues from it.
Defaults are the paper's left-atrium recipe: 6000 iterations, batch 2 labeled + 2 unlabeled,
112x112x80 patches, SGD lr 0.01 (x0.1 at 2500 and 5000). For thick-slice scans (slices several times
farther apart than the pixels), add --pools auto and a thin patch, e.g. --patch 128 128 8, or train a
2-D model (--dims 2 or auto): in-plane convolutions, slice by slice.
Modes: dtc (default) learns from labeled and unlabeled scans; seg, lsf, seg+lsf are the paper's labeled-only
ablations. copy-paste-teacher (BCP, Bai et al. 2023): first labeled crops pasted into each other (stage 1,
--stage1-fraction of the run), then an EMA teacher labels the unlabeled crops and boxes are pasted both ways
between labeled and unlabeled crops (stage 2); the level-set head and DTC's consistency train on the mixed
images too (--no-cp-levelset, --no-cp-consistency turn them off). copy-paste: stage 1 only, labeled-only.
--iterations and --time-limit fit both stages: stage 1 stays its fraction of the run, and a time limit
""" + (f"times each stage's steps (a stage-2 step costs about {STAGE2_COST_RATIO:g} stage-1 steps in 3-D, "
       f"{STAGE2_COST_RATIO_2D:g} in 2-D).\n")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", metavar="MANIFEST", help="JSON file naming labeled pairs and unlabeled scans")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder to create (or resume)")
    p.add_argument("--config", metavar="FILE",
                   help="JSON config (sections network/recipe/train/infer); options below override it")
    p.add_argument("--iterations", type=int, metavar="N",
                   help="total iterations (default 6000, or the --config file's); the schedule is scaled to N and "
                        "keeps its proportions (the recipe's: lr x0.1 at 5/12 and 10/12 of the run, full "
                        "consistency weight at the end)")
    p.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="train for about this long: the schedule (lr steps, consistency ramp) is scaled to the "
                        "iterations that fit, timed on the first iterations")
    p.add_argument("--spacing", nargs="+", metavar="MM",
                   help="grid the model works on: native (each scan's own, default), auto (from the scans' median "
                        "spacing and a CPU budget), S (isotropic mm) or SX SY SZ; scans are resampled once at load")
    p.add_argument("--patch", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="crop size, multiples of 16 (of 2**P per axis with --pools; default 112 112 80)")
    p.add_argument("--pools", nargs="+", metavar="P",
                   help="how many of the network's 4 downsamplings halve axis x, y, z: PX PY PZ (default 4 4 4, "
                        "the paper's VNet) or auto (nnU-Net's rule from the model grid's spacing: a thick-slice "
                        "axis is pooled fewer times, last); the patch must divide by 2**P per axis")
    p.add_argument("--dims", metavar="2|3|auto",
                   help="3 (default): the paper's 3-D VNet; 2: the same network with in-plane convolutions, "
                        "trained on and run over the slices (thick-slice scans; patch X Y N crops N slices); "
                        f"auto: 2 when the model grid's slices are more than {SLICE_ANISOTROPY:g}x farther apart "
                        "than its pixels (nnU-Net's rule), else 3")
    p.add_argument("--base-filters", type=int, metavar="F", help="VNet width (default 16: 9.45 M parameters)")
    p.add_argument("--num-classes", type=int, metavar="C",
                   help="foreground classes of the model (default: a new model takes the label values found in the "
                        "labeled scans, 1..C; a fine-tune keeps its model's)")
    p.add_argument("--mode", choices=(*MODES, AUTO_MODE),
                   help="what to train (default dtc): dtc; the labeled-only ablations of the paper's Table 1 (seg, "
                        "lsf, seg+lsf); copy-paste-teacher or copy-paste (see above); auto: the mode our "
                        "equal-CPU-time studies show wins for the run's length, the model's classes and "
                        "dimensionality and the labeled scans (the panel's default; the choice and its reason are "
                        "printed)")
    p.add_argument("--stage1-fraction", type=float, metavar="F",
                   help="copy-paste-teacher: fraction of the run before the teacher starts (default: 0.118, BCP's "
                        "2000 of 17000 LA iterations, for a one-class model; 0.65 for more classes, chosen on cardiac "
                        "MRI validation scans); scaled with --iterations and --time-limit")
    p.add_argument("--stage2-gate", action=argparse.BooleanOptionalAction, default=None,
                   help="copy-paste-teacher: the teacher starts only once the model finds every class of its labeled "
                        f"crops (checked every {STAGE2_GATE_EVERY} iterations from --stage1-fraction; it starts at "
                        f"{STAGE2_GATE_LAST:g} of the run at the latest; default off; not with --time-limit)")
    p.add_argument("--teacher-lr", choices=("run", "stage2"),
                   help="copy-paste-teacher: where the lr steps fall: run (at their fractions of the whole run; the "
                        "default for a one-class model) or stage2 (the default for more classes: the lr stays at its "
                        "start through stage 1, and the steps fall at the same fractions of stage 2, counted from the "
                        "iteration the teacher starts; with --stage2-gate the lr waits with the teacher)")
    p.add_argument("--cp-levelset", action=argparse.BooleanOptionalAction, default=None,
                   help="copy-paste modes: train the level-set head on the mixed targets too (default on)")
    p.add_argument("--cp-consistency", action=argparse.BooleanOptionalAction, default=None,
                   help="copy-paste modes: DTC's dual-task consistency on the mixed images (default on)")
    p.add_argument("--device", type=device_argument, metavar="auto|cpu|cuda|cuda:N",
                   help="default auto: CUDA when present")
    p.add_argument("--augment", choices=AUGMENT_CHOICES,
                   help="training augmentation (default mirror: flips and 90-degree turns, the scan's own "
                        "orientation included; no-mirror: for labels that depend on side, e.g. left/right "
                        "organs; reference: the paper's RandomRotFlip; none)")
    p.add_argument("--nnunet-augment", action="store_true",
                   help="also nnU-Net's in-plane scaling, noise, brightness, contrast and gamma augmentations")
    p.add_argument("--init-from", metavar="MODEL", help="fine-tune: start from this model's weights")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="forward-pass precision (default auto: bf16 on a GPU with bf16, fp32 on every CPU: "
                        "bf16 training on the CPU can give NaN weight gradients, measured on AVX512-BF16)")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in RUN_DIR")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default 1337)")
    p.add_argument("--workers", type=int, metavar="W", help="batch-loading processes (default 2)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: synchronise BatchNorm statistics across processes (SyncBatchNorm)")
    events.add_options(p, jsonl_help="print progress as JSON lines (for programs) instead of a bar",
                       cancel_help=f"save a checkpoint and stop (exit status {EXIT_CANCELLED}) once this file exists; "
                                   "checked every iteration")
    p.set_defaults(run=run)


def build_config(args: argparse.Namespace) -> DTCConfig:
    config = DTCConfig.load(args.config) if args.config else DTCConfig()
    config.override({
        "train.time_limit_minutes": getattr(args, "time_limit", None),
        "train.patch": tuple(args.patch) if args.patch else None,
        "network.base_filters": args.base_filters,
        "recipe.mode": None if args.mode == AUTO_MODE else args.mode,
        "recipe.cp_stage1_fraction": getattr(args, "stage1_fraction", None),
        "recipe.cp_stage2_gate": getattr(args, "stage2_gate", None),
        "recipe.cp_lr_in_stage2": None if getattr(args, "teacher_lr", None) is None else args.teacher_lr == "stage2",
        "recipe.cp_levelset": getattr(args, "cp_levelset", None),
        "recipe.cp_consistency": getattr(args, "cp_consistency", None),
        "train.device": args.device,
        "train.seed": args.seed,
        "train.num_workers": args.workers,
        "train.augment": getattr(args, "augment", None),
        "train.precision": getattr(args, "precision", None),
        "train.nnunet_augment": True if getattr(args, "nnunet_augment", False) else None,
        "train.sync_batchnorm": True if getattr(args, "sync_bn", False) else None,
    })
    if args.iterations is not None:
        fit_iterations(config, args.iterations)
    if getattr(args, "spacing", None):
        spacing = parse_spacing(args.spacing)
        if spacing == "auto":
            spacing = manifest_auto_spacing(Path(args.manifest))
        config.plan.spacing = spacing  # type: ignore[assignment]
    if getattr(args, "dims", None):
        set_dims(config, args, Path(args.manifest))
    if getattr(args, "pools", None):
        config.network.pools = parse_pools(args.pools, config.plan.spacing, Path(args.manifest))
    if getattr(args, "num_classes", None) is not None:
        config.network.num_classes = args.num_classes  # checked against the labels by set_num_classes
    config.validate()
    return config


def set_num_classes(config: DTCConfig, args: argparse.Namespace, manifest: Path) -> str | None:
    """``config.network.num_classes`` for this run, and one line saying where it came from (None: a resumed
    run, whose checkpoint holds its classes).

    ``--num-classes C`` wins; a fine-tune (``--init-from``) keeps its model's classes; a ``--config`` file that
    names ``network.num_classes`` keeps it; otherwise a new model has as many classes as the largest label
    value found in the labeled scans (0/1 masks: 1). Any label value above the count is refused before training,
    with the file, the value and the fix."""
    if _resumes(args):
        return None
    values = _labeled_values(manifest)
    found = sorted(set().union(*values.values())) if values else []
    explicit = getattr(args, "num_classes", None)
    init_from = getattr(args, "init_from", None)
    if explicit is not None:
        if explicit < 1:
            raise DTCError(f"--num-classes {explicit}: use a whole number of at least 1")
        classes, source, fix = explicit, "--num-classes", "raise --num-classes or remap the label"
    elif init_from:
        from ..model.checkpoint import load_checkpoint

        classes = load_checkpoint(init_from)["config"].network.num_classes
        source = f"those of the model it fine-tunes, {init_from}"
        fix = "a fine-tune keeps its model's classes: remap the label, or train a new model (without --init-from)"
    elif args.config and "num_classes" in json.loads(Path(args.config).read_text(encoding="utf-8")).get("network", {}):
        classes, source, fix = config.network.num_classes, f"--config {args.config}", "raise it or remap the label"
    else:
        if found and found[-1] > MAX_INFERRED_CLASSES and len(found) > 1:
            raise DTCError(f"the labeled scans hold label values {_shown(found)}: more than {MAX_INFERRED_CLASSES} "
                           "classes is unlikely to be a class map; save each structure as 1, 2, 3, ... "
                           "(0 = background), or give --num-classes")
        classes = found[-1] if len(found) > 1 else 1
        source = f"label values {_shown(found)} in {len(values)} labeled scans; --num-classes overrides"
        fix = "binarise it (label > 0)"
    if len(found) > 1 or explicit is not None or init_from:
        for path, vals in values.items():
            unknown = [v for v in vals if v > classes]
            if unknown:
                raise DTCError(f"label {path} holds class {_shown(unknown)}, above the model's {classes} "
                               f"class{'es' if classes > 1 else ''} ({source}) — {fix}")
    config.network.num_classes = classes
    return f"classes: {classes} ({source})"


def set_auto_mode(config: DTCConfig, args: argparse.Namespace, manifest: Path) -> str | None:
    """``--mode auto``: set ``config.recipe.mode`` by the run's length, the model's foreground classes and
    network dimensionality and the manifest's labeled scans (training/mode_choice.py) and return the line that says
    which mode and why; None without ``--mode auto`` or for a resumed run (it keeps its mode).

    Call it once ``config.network.num_classes`` (:func:`set_num_classes`) and ``config.network.dims``
    (:func:`build_config`: ``--dims``, else the ``--config`` file's or 3) are final."""
    if getattr(args, "mode", None) != AUTO_MODE:
        return None
    from ..data.manifest import load_manifest

    scans = load_manifest(manifest, check_files=False)
    mode, reason = pick_mode(budget_minutes(config), len(scans.unlabeled), classes=config.network.num_classes,
                             dims=config.network.dims, labeled=len(scans.labeled))
    config.recipe.mode = mode  # a resumed run keeps its own (trainer._resumed_config); a fresh start takes this
    if _resumes(args):
        return None
    return f"mode: {mode} ({reason})"


def _resumes(args: argparse.Namespace) -> bool:
    """Whether this run resumes (``--resume`` and a checkpoint to resume from, as the trainer decides): it keeps its
    checkpoint's classes and mode."""
    checkpoints = Path(args.output) / CHECKPOINT_DIR
    return bool(getattr(args, "resume", False)) and checkpoints.is_dir() and any(checkpoints.glob("*.pt"))


def _labeled_values(manifest: Path) -> dict[Path, list[int]]:
    """The nonzero values of each labeled scan's label map (an unreadable manifest is left to the trainer)."""
    from ..data.images import label_values
    from ..data.manifest import load_manifest

    return {pair.label: label_values(pair.label) for pair in load_manifest(manifest).labeled}


def _shown(values: list[int]) -> str:
    return "{" + ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "") + "}"


def set_dims(config: DTCConfig, args: argparse.Namespace, manifest: Path) -> None:
    """``--dims``: the network's dimensionality (``auto`` from the model grid: ``config.plan.spacing``, or the
    manifest's median spacing for a native-grid model). A 2-D network pools only in the plane (pools PX PY 0)
    and, without ``--patch``, crops ``SLICES_PER_CROP_2D`` slices."""
    dims = parse_dims(args.dims)
    if dims == "auto":
        spacing = config.plan.spacing if config.plan.spacing is not None else manifest_median_spacing(manifest)
        dims = auto_dims(spacing)
    config.network.dims = int(dims)
    if dims == 2:
        config.network.pools = plane_pools(config.network.pools)
        if not args.patch:
            x, y, _ = config.train.patch
            config.train.patch = (x, y, SLICES_PER_CROP_2D)


def fit_iterations(config: DTCConfig, iterations: int) -> None:
    """``--iterations N``: the run is N iterations long and its schedule (lr steps, consistency ramp) is scaled
    from the config's own length to N (:func:`~DTCCore.training.schedule.fit_schedule`), so a short run still decays
    its learning rate and reaches full consistency weight. With a time limit the scaled schedule is the
    starting point that :class:`~DTCCore.training.schedule.TimeBudget` fits again to what fits in the time; it stays
    unmarked as fitted so that the budget still runs."""
    if iterations < 1:
        raise DTCError(f"--iterations {iterations}: use a whole number of at least 1")
    t = config.train
    if iterations == t.iterations:
        return
    fitted_before = t.schedule_fitted
    fit_schedule(config, iterations)
    if t.time_limit_minutes is not None:
        t.schedule_fitted = fitted_before


def parse_pools(words: list[str], spacing, manifest: Path) -> tuple[int, int, int]:
    """``--pools`` words -> (px, py, pz): three numbers, or ``auto`` from the model grid (``spacing``, or the
    manifest's median spacing for a native-grid model)."""
    if [w.lower() for w in words] == ["auto"]:
        return auto_pools(spacing if spacing is not None else manifest_median_spacing(manifest))
    try:
        pools = tuple(int(w) for w in words)
    except ValueError:
        pools = ()
    if len(pools) != 3:
        raise DTCError(f"--pools {' '.join(words)}: use auto or three whole numbers PX PY PZ in 0..4")
    check_pools(pools)
    return pools  # type: ignore[return-value]


class _Printer:
    """Progress for people (a tqdm bar) or for programs (one JSON object per line)."""

    def __init__(self, jsonl: bool) -> None:
        self.jsonl = jsonl
        self.bar = None

    def __call__(self, record: dict[str, Any]) -> None:
        from .events import detach_output, reader_gone, write_line

        if self.jsonl:
            write_line(json.dumps(record))
            return
        if reader_gone():
            return
        try:
            self._show(record)
        except BrokenPipeError:  # the terminal is gone: stop at the next iteration, checkpoint kept
            detach_output()

    def _show(self, record: dict[str, Any]) -> None:
        event = record[EVENT_KEY]
        if event == Event.START:
            from tqdm import tqdm

            print(f"training on {record['device']}, {record['precision']}: {record['labeled']} labeled, "
                  f"{record['unlabeled']} unlabeled scans", file=sys.stderr)
            self.bar = tqdm(total=record["total"], initial=record["start_iteration"], unit="it", dynamic_ncols=True)
        elif event == Event.PROGRESS and self.bar is not None:
            self.bar.update(record["iteration"] - self.bar.n)
            losses = record["losses"]
            self.bar.set_postfix(loss=f"{losses['total']:.3f}", dice=f"{losses['dice']:.3f}",
                                 lam=f"{record['lambda']:.2f}")
        elif event == Event.MESSAGE:
            (self.bar.write if self.bar is not None else print)(record["text"])
        elif event in (Event.DONE, Event.CANCELLED) and self.bar is not None:
            self.bar.close()
            if event == Event.DONE:
                print(f"model written to {record['model']}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..training.trainer import train
    from .events import cancel_check

    config = build_config(args)
    classes_line = set_num_classes(config, args, Path(args.manifest))
    mode_line = set_auto_mode(config, args, Path(args.manifest))  # after the classes: auto depends on them
    config.validate()
    printer = _Printer(args.jsonl)
    for line in (mode_line, classes_line):
        if line and os.environ.get("RANK", "0") == "0":  # the run's first lines (rank 0 only, as threads:)
            if args.jsonl:
                printer({EVENT_KEY: Event.MESSAGE, "text": line})
            else:
                print(line, file=sys.stderr)
    train(config, Path(args.manifest), Path(args.output), resume=args.resume, init_from=args.init_from,
          progress=printer, cancel=cancel_check(getattr(args, "cancel_file", None)))
    return 0
