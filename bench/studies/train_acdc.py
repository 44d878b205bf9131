"""ACDC multi-class benchmark: DTC vs labeled-only at the same time budget, per-class test metrics.

    python bench/studies/train_acdc.py --data ../shared/data/acdc --out /tmp/acdc --mode dtc --minutes 40
        --json dtc.json
    python bench/studies/train_acdc.py --data ../shared/data/acdc --out /tmp/acdc --mode seg --minutes 40
        --json seg.json
    python bench/studies/train_acdc.py --data ../shared/data/acdc --assess dtc.json
    python bench/studies/train_acdc.py --table dtc.json seg.json [--markdown table.md]   # two: also paired by patient

ACDC (end-diastolic frames, 1 = right-ventricle cavity, 2 = myocardium, 3 = left-ventricle cavity): the
first ``--labeled`` (14 = 20 %) patients of ``train.list`` are labeled, the next ``--unlabeled`` (56) are
unlabeled (``--mode seg``: the labeled-only model, no unlabeled data). The model after the last iteration
first predicts the 10 held-out patients of ``val.list``, which choose the post-processing (each class's
largest connected component kept, or not); then every patient of ``test.list`` is scored once with that
choice (MedPy's dc/jc/asd/hd95 per class; voxel units: the data's spacing is unknown, every header says
1 x 1 x 1; the raw scores are kept beside as ``test_raw``). ``--assess RESULT_JSON`` redoes only that
scoring for an earlier result's model and rewrites the file (or writes ``--json``); with ``--mirror`` the
scores are those of test-time augmentation (the no-mirror models here: their four in-plane turns
averaged, 4x the inference time). ``--minutes`` is DTCCore's time limit: the
schedule (lr steps, consistency ramp) is fitted to the iterations that fit, so both modes get the same
wall-clock budget; ``--minutes 0 --iterations N`` runs exactly N iterations with the schedule fitted to N
the same way (equal iterations: the paper's protocol, where a DTC step costs about twice a labeled-only
one). ``--spacing`` is the model plan in the headers' units (volumes resampled once at load,
predictions returned on the original grid). ``--resume`` continues an interrupted run (same arguments;
the fitted schedule is kept). ``--continue-from RESULT_JSON`` starts a new stage from the weights of an
earlier stage's result (the same arguments otherwise; a new --out), with a fresh schedule fitted to
``--minutes``; the table then counts the iterations and minutes of all stages. A dtc stage may continue
from a seg result (semi-supervised fine-tuning of a labeled-only model; its level-set head starts
untrained there, so keep the ramp). Each stage ramps the
consistency weight up from 0 again unless ``--no-ramp`` (full weight from the start: the weights were
already trained with it). ``--dims 2`` trains the 2-D plan (``dtc train --dims 2``).
``--mode copy-paste`` is labeled-only with BCP's stage-1 copy-paste (one labeled crop's box pasted into another) for
the whole run; ``--mode copy-paste-teacher`` is BCP's two stages (the EMA teacher's pseudo-labels on the unlabeled
patients from ``--stage1-fraction`` of the run on; default BCP's ACDC schedule, 0.25), both with DTC's level-set
head and consistency on the mixed images unless ``--no-cp-levelset`` / ``--no-cp-consistency`` (both off: BCP's
own loss). A copy-paste stage continues only from a result of its own mode (``--continue-from``).
``--no-assess`` only trains (``bench/gpu/device_acdc.sh``: the device machine
has no MedPy); the result is scored later with ``--assess``. ``--tiny`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common

CLASSES = {1: "RV cavity", 2: "myocardium", 3: "LV cavity"}  # ACDC label values (the data's README)
METRICS = ("dice", "jaccard", "asd_vox", "hd95_vox")
MODES = ("dtc", "seg", "copy-paste", "copy-paste-teacher")  # DTCCore.config's modes this study trains
# Stage 1 of BCP's ACDC recipe: 10000 pre-training iterations then 30000 self-training ones (DeepMed-Lab-ECNU/BCP,
# code/ACDC_BCP_train.py: --pre_iterations 10000 read by pre_train, --max_iterations 30000 by self_train).
BCP_ACDC_STAGE1_FRACTION = 10000 / 40000
TTA_NOTE = "test-time turns/flips"  # how tables name results scored with --mirror


def build_manifest(data: Path, labeled: int, unlabeled: int, mode: str, folder: Path) -> Path:
    """Write ``folder/manifest_<mode>.json``: the first ``labeled`` train.list patients with labels, then
    ``unlabeled`` patients as images only (none for the labeled-only modes, ``seg`` and ``copy-paste``)."""
    from DTCCore.config import UNLABELED_MODES

    cases = common.read_list(data, "train.list")
    if labeled + unlabeled > len(cases):
        raise SystemExit(f"error: train.list has {len(cases)} patients; {labeled} + {unlabeled} asked")
    lab = [{"image": str(data / c / "image.nrrd"), "label": str(data / c / "label.nrrd")} for c in cases[:labeled]]
    unl = [str(data / c / "image.nrrd") for c in cases[labeled:labeled + unlabeled]] if mode in UNLABELED_MODES else []
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"manifest_{mode}.json"
    path.write_text(json.dumps({"labeled": lab, "unlabeled": unl}, indent=1))
    return path


def model_of(result_json: Path, result: dict) -> Path:
    """The model file of a result read from ``result_json``: a relative name (``bench/shipping/ship_fp16.py`` writes
    one) lies beside the JSON."""
    model = Path(result["model"])
    return model if model.is_absolute() else Path(result_json).parent / model


def make_config(args):
    from DTCCore.config import TEACHER_MODE, UNLABELED_MODES, DTCConfig
    from DTCCore.planning.dims import plane_pools
    from DTCCore.training.schedule import fit_schedule

    config = DTCConfig()
    config.network.num_classes = len(CLASSES)
    config.network.base_filters = args.base_filters
    config.network.pools = tuple(args.pools)
    config.network.dims = getattr(args, "dims", 3)
    if config.network.dims == 2:  # a 2-D network pools the plane only (planning/dims.py)
        config.network.pools = plane_pools(args.pools)
    config.recipe.mode = args.mode
    config.train.patch = tuple(args.patch)
    config.train.time_limit_minutes = args.minutes or None
    if args.minutes == 0:  # equal iterations: lr steps and ramp scaled from the reference's 6000 as a time limit's
        fit_schedule(config, args.iterations)
    else:
        config.train.iterations = args.iterations
    if getattr(args, "lr_steps", None):
        config.train.lr_steps = tuple(sorted(args.lr_steps))  # a probe's own steps, kept in the result's config
    config.train.augment = args.augment
    config.train.nnunet_augment = args.nnunet_augment
    if args.no_ramp:
        config.recipe.consistency_rampup = 0.0  # losses.ramp_weight: no ramp, full weight from iteration 0
    config.train.num_workers = args.workers
    config.train.device = args.device
    config.train.seed = args.seed
    config.plan.spacing = tuple(args.spacing)
    if args.mode not in UNLABELED_MODES:
        config.train.unlabeled_batch = 0  # labeled-only: the same 2 labeled crops per iteration
    if args.mode == TEACHER_MODE:
        fraction = getattr(args, "stage1_fraction", None)
        config.recipe.cp_stage1_fraction = BCP_ACDC_STAGE1_FRACTION if fraction is None else fraction
        config.recipe.cp_stage2_gate = bool(getattr(args, "stage2_gate", False))
        # the lr steps fitted to the whole run or given (--lr-steps), unless moved into stage 2 (--teacher-lr stage2)
        config.recipe.cp_lr_in_stage2 = getattr(args, "teacher_lr", "run") == "stage2"
    if getattr(args, "no_cp_levelset", False):
        config.recipe.cp_levelset = False
    if getattr(args, "no_cp_consistency", False):
        config.recipe.cp_consistency = False
    if args.tiny:
        config.train.precise_bn_batches = 2  # smoke runs: a token BatchNorm pass
    config.validate()
    return config


def evaluate(model, config, torch_device, data: Path, cases: list[str]) -> dict:
    """Per-class metrics of every case (rows) and their means per class and over classes, for the raw
    prediction (``"raw"``) and with each class's largest component kept (``"lcc"``, same prediction).
    ``model, config``: from ``DTCCore.model.checkpoint.load_model`` (``config.infer.largest_component`` off)."""
    from DTCCore.data.images import read_image, read_label
    from DTCCore.evaluation.metrics import evaluate_multiclass
    from DTCCore.inference.postprocess import largest_component_per_class
    from DTCCore.inference.predict import predict_volume

    rows: dict[str, list[dict]] = {"raw": [], "lcc": []}
    t0 = time.perf_counter()
    for case in cases:
        image, geometry = read_image(data / case / "image.nrrd")
        truth = read_label(data / case / "label.nrrd", geometry, image.shape, len(CLASSES))
        pred = predict_volume(model, image, config, torch_device, spacing=geometry.spacing).label
        for which, label in (("raw", pred), ("lcc", largest_component_per_class(pred, len(CLASSES)))):
            for c, m in evaluate_multiclass(label, truth, len(CLASSES)).items():
                rows[which].append({"case": case, "class": c, **{k: m[k] for k in METRICS}})
        print(f"  {case}: Dice " + " / ".join(f"{100 * r['dice']:.1f}" for r in rows["raw"][-len(CLASSES):]),
              file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    return {which: {"cases": len(cases), "eval_seconds": seconds, "means": _means(r), "rows": r}
            for which, r in rows.items()}


def _means(rows: list[dict]) -> dict:
    means = {c: {k: float(np.nanmean([r[k] for r in rows if r["class"] == c])) for k in METRICS} for c in CLASSES}
    means["mean"] = {k: float(np.mean([means[c][k] for c in CLASSES])) for k in METRICS}
    return means


def assess(model_path: Path, data: Path, args) -> dict:
    """Choose the post-processing on ``val.list`` (held out from training; largest component per class
    kept only if it raises the mean Dice there), then score ``test.list`` once with that choice.
    Returns ``{"validation": ..., "test": chosen, "test_raw": raw}`` to merge into a result."""
    from DTCCore.model.checkpoint import load_model
    from DTCCore.runtime.devices import resolve_device

    torch_device = resolve_device(args.device)
    model, config = load_model(model_path, torch_device)
    config.infer.largest_component = False  # both variants are scored from the same raw prediction
    config.infer.tta = bool(args.mirror)  # test-time flips, or turns of a no-mirror model (DTCCore.inference.tta)
    val_cases = common.read_list(data, "val.list")[: args.test_cases or None]
    print(f"validation ({len(val_cases)} patients of val.list):", file=sys.stderr, flush=True)
    val = evaluate(model, config, torch_device, data, val_cases)
    dice = {w: val[w]["means"]["mean"]["dice"] for w in val}
    lcc = dice["lcc"] > dice["raw"]
    print(f"test.list, largest component per class {'on' if lcc else 'off'}:", file=sys.stderr, flush=True)
    test = evaluate(model, config, torch_device, data,
                    common.read_list(data, "test.list")[: args.test_cases or None])
    validation = {"cases": val_cases, "dice_raw": dice["raw"], "dice_lcc": dice["lcc"], "largest_component": lcc}
    return {"validation": validation, "test": test["lcc" if lcc else "raw"], "test_raw": test["raw"],
            "test_time_augmentation": bool(args.mirror)}


def run(args) -> dict:
    from DTCCore.config import COPY_PASTE_MODES, UNLABELED_MODES
    from DTCCore.training.trainer import train

    data, out = Path(args.data).resolve(), Path(args.out)  # the manifest resolves paths against its folder
    manifest = build_manifest(data, args.labeled, args.unlabeled, args.mode, out)
    config = make_config(args)
    t0 = time.perf_counter()
    events: list[dict] = []

    def progress(record: dict) -> None:
        if record["event"] in ("start", "message", "done"):
            print(json.dumps(record), file=sys.stderr, flush=True)
        events.append(record)

    earlier: list[dict] = []
    init_from = None
    if args.continue_from:
        before = json.loads(Path(args.continue_from).read_text())
        if before["mode"] != args.mode and {before["mode"], args.mode} & set(COPY_PASTE_MODES):
            raise SystemExit(f"error: {args.continue_from} is a {before['mode']} run; this one is {args.mode} "
                             "(a copy-paste stage continues only from a result of its own mode)")
        # DTC may fine-tune a labeled-only model (the product's semi-supervised fine-tuning); the other way
        # round would throw away the level-set head's training without saying so
        if before["mode"] != args.mode and not (before["mode"] == "seg" and args.mode == "dtc"):
            raise SystemExit(f"error: {args.continue_from} is a {before['mode']} run; this one is {args.mode} "
                             "(only a dtc stage may continue from a seg one)")
        init_from = str(model_of(args.continue_from, before))
        earlier = before.get("stages", []) + [{k: before[k] for k in ("model", "mode", "iterations", "train_seconds")}]
    model = train(config, manifest, out / f"run_{args.mode}", resume=args.resume, init_from=init_from,
                  progress=progress)
    finished = [e for e in events if e["event"] == "done"]
    train_seconds = finished[-1].get("elapsed_s", time.perf_counter() - t0) if finished else time.perf_counter() - t0
    done = [e for e in events if e["event"] == "progress"]
    result = {
        "mode": args.mode, "date": time.strftime("%Y-%m-%d %H:%M"), "model": str(model), "resumed": args.resume,
        "device": common.device_name(args.device), "labeled": args.labeled,
        "unlabeled": args.unlabeled if args.mode in UNLABELED_MODES else 0, "train_seconds": train_seconds,
        # the done event's iteration: a run resumed from its final checkpoint logs no progress
        "iterations": finished[-1]["iteration"] if finished else done[-1]["iteration"] if done else 0,
        "config": config.to_dict(), "stages": earlier,
    }
    if not args.no_assess:
        result.update(assess(model, data, args))
    return result


def table(results: list[dict]) -> str:
    """Markdown: per model, one row per class and one for the mean over the 3 classes; Dice and Jaccard
    in %, ASD and 95HD in voxels."""
    header = ["model", "class", "Dice %", "Jaccard %", "ASD (vox)", "95HD (vox)"]
    rows = []
    for r in results:
        if "test" not in r:
            raise SystemExit(f"error: the {r['mode']} result of {r['date']} is not scored (--no-assess): "
                             "score it with --data ACDC --assess RESULT_JSON first")
        label = _model_label(r)
        pools = r["config"]["network"].get("pools", [4, 4, 4])
        if r["config"]["network"].get("dims", 3) == 2:
            patch = "x".join(str(v) for v in r["config"]["train"]["patch"])
            label += f", 2-D (patch {patch}, base {r['config']['network']['base_filters']})"
        elif list(pools) != [4, 4, 4]:
            patch = "x".join(str(v) for v in r["config"]["train"]["patch"])
            label += f", slice axis pooled {pools[2]}x (patch {patch})"
        if r["config"]["train"].get("nnunet_augment"):
            label += ", + nnU-Net scaling/intensity aug."
        if r.get("test_time_augmentation"):
            label += f", {TTA_NOTE}"
        if r.get("validation", {}).get("largest_component"):
            label += ", largest component per class (chosen on val.list)"
        stages = r.get("stages", [])
        iterations = _total_iterations(r)
        minutes = (r["train_seconds"] + sum(st["train_seconds"] for st in stages)) / 60
        label += f", {iterations} it, {minutes:.0f} min" + (f" in {len(stages) + 1} stages" if stages else "")
        seg_stages = _from_labeled_only(r)
        label += f" ({seg_stages})" if seg_stages else ""
        for key, name in [(str(c), n) for c, n in CLASSES.items()] + [("mean", "**mean**")]:
            m = r["test"]["means"][key]
            rows.append([label, name, 100 * m["dice"], 100 * m["jaccard"], m["asd_vox"], m["hd95_vox"]])
    return common.markdown_table(header, rows)


def _model_label(result: dict) -> str:
    """The table's name of a result's model: its mode and training data (copy-paste modes: the recipe's switches)."""
    mode, lab, unl = result["mode"], result["labeled"], result["unlabeled"]
    if mode == "dtc":
        return f"DTC, {lab} labeled + {unl} unlabeled"
    if mode == "seg":
        return f"labeled only ({lab})"
    recipe = result["config"].get("recipe", {})
    if mode == "copy-paste":
        label = f"labeled only + copy-paste ({lab})"
    else:
        label = (f"copy-paste teacher, {lab} labeled + {unl} unlabeled, stage 1 "
                 f"{recipe['cp_stage1_fraction']:.3g} of the run")
    return label + "".join(_switches_off(result))


def _switches_off(result: dict) -> list[str]:
    """``", no level set"`` / ``", no consistency"`` for a copy-paste result trained without them."""
    recipe = result["config"].get("recipe", {})
    return [f", no {name}" for key, name in (("cp_levelset", "level set"), ("cp_consistency", "consistency"))
            if not recipe.get(key, True)]


def mode_name(result: dict) -> str:
    """The short name of a result's mode in a paired comparison: DTC, labeled-only, labeled-only + copy-paste,
    copy-paste teacher (with "no level set" / "no consistency" where off)."""
    name = {"dtc": "DTC", "seg": "labeled-only", "copy-paste": "labeled-only + copy-paste",
            "copy-paste-teacher": "copy-paste teacher"}[result["mode"]]
    return name + "".join(_switches_off(result))


def _total_iterations(result: dict) -> int:
    """Iterations of a result and of every earlier stage it continued from."""
    return result["iterations"] + sum(st["iterations"] for st in result.get("stages", []))


def _from_labeled_only(result: dict) -> str:
    """``"stage 1 labeled-only"`` (or ``"stages 1-n labeled-only"``) for a DTC result fine-tuned from a
    labeled-only model, else ``""``. A stage record without a ``mode`` (written before modes could mix)
    has the mode of the next record that has one, or the result's own."""
    modes, later = [], result["mode"]
    for st in reversed(result.get("stages", [])):
        later = st.get("mode", later)
        modes.append(later)
    seg = [i for i, mode in enumerate(reversed(modes), 1) if mode != result["mode"]]
    if not seg:
        return ""
    return f"stage {seg[0]} labeled-only" if len(seg) == 1 else f"stages {seg[0]}-{seg[-1]} labeled-only"


def _patient_dice(result: dict) -> dict[str, float]:
    """Each test patient's Dice averaged over the classes (0-1) of a result's post-processed test scores."""
    per: dict[str, list[float]] = {}
    for row in result["test"]["rows"]:
        per.setdefault(row["case"], []).append(row["dice"])
    return {case: float(np.mean(dice)) for case, dice in per.items()}


def paired_stats(da: dict[str, float], db: dict[str, float]) -> dict:
    """Patient-by-patient ``a - b`` of two ``{patient: Dice (0-1)}``: ``{"n", "mean"}`` (points), ``"higher"`` /
    ``"lower"`` (patients where a is above / below b) and the two-sided Wilcoxon signed-rank ``"p"``."""
    from scipy.stats import wilcoxon

    if sorted(da) != sorted(db):
        raise SystemExit("error: the two results scored different test patients; pass results of the same "
                         "test.list (and the same --test-cases)")
    diff = np.array([da[c] - db[c] for c in sorted(da)])
    p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    return {"n": len(diff), "mean": float(100 * diff.mean()), "higher": int(np.sum(diff > 0)),
            "lower": int(np.sum(diff < 0)), "p": p}


def paired(a: dict, b: dict) -> str:
    """One line comparing two results patient by patient on the same test patients: the mean of the
    per-patient differences of mean Dice (``a - b``, points), how many patients each wins, and the
    two-sided Wilcoxon signed-rank p (does the gap hold across patients, or come from a few?)."""
    s = paired_stats(_patient_dice(a), _patient_dice(b))

    def name(r: dict) -> str:
        tta = TTA_NOTE if r.get("test_time_augmentation") else ""
        notes = [f"{_total_iterations(r)} it", _from_labeled_only(r), tta]
        return f"{mode_name(r)} ({', '.join(n for n in notes if n)})"

    return (f"Paired over the {s['n']} test patients (each patient's mean Dice over the classes): "
            f"{name(a)} minus {name(b)} = {s['mean']:+.2f} points; higher on {s['higher']}, "
            f"lower on {s['lower']}; Wilcoxon signed-rank {common.p_text(s['p'])}")


def parser() -> argparse.ArgumentParser:
    """The command line's parser (bench/speed/mode_step_cost.py builds this study's configs from it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="ACDC folder: <patient>/image.nrrd, label.nrrd, train.list, test.list")
    p.add_argument("--out", type=Path, help="folder for manifests and run folders (outside the repository)")
    p.add_argument("--mode", choices=MODES, default="dtc",
                   help="dtc; seg = labeled-only; copy-paste = labeled-only with BCP's stage-1 copy-paste; "
                        "copy-paste-teacher = BCP's two stages (+ DTC's level set and consistency unless switched off)")
    p.add_argument("--stage1-fraction", type=float, metavar="F",
                   help=f"copy-paste-teacher: fraction of the run before the teacher starts (default "
                        f"{BCP_ACDC_STAGE1_FRACTION:g}, BCP's ACDC 10000 of 40000)")
    p.add_argument("--stage2-gate", action="store_true",
                   help="copy-paste-teacher: the teacher waits until the model finds every class of its labeled crops "
                        "(dtc train --stage2-gate)")
    p.add_argument("--teacher-lr", choices=("run", "stage2"), default="run",
                   help="copy-paste-teacher: the lr steps at their fractions of the whole run (run), or lr 0.01 "
                        "until the teacher starts and the steps at those fractions of stage 2 (stage2: dtc train "
                        "--teacher-lr stage2; with --stage2-gate the lr waits with the teacher)")
    p.add_argument("--lr-steps", type=int, nargs="+", metavar="N",
                   help="iterations where the learning rate drops x0.1, instead of the fitted 5/12 and 10/12 "
                        "of the run (e.g. a teacher run that keeps lr 0.01 through stage 1)")
    p.add_argument("--no-cp-levelset", action="store_true",
                   help="copy-paste modes: no level-set head training on the mixed targets")
    p.add_argument("--no-cp-consistency", action="store_true",
                   help="copy-paste modes: no dual-task consistency on the mixed images")
    p.add_argument("--labeled", type=int, default=14)
    p.add_argument("--unlabeled", type=int, default=56)
    p.add_argument("--minutes", type=float, default=40.0,
                   help="training time limit (schedule fitted to it); 0: no limit, exactly --iterations with the "
                        "schedule fitted to them (equal iterations for both modes: the paper's protocol)")
    p.add_argument("--iterations", type=int, default=6000,
                   help="iterations with --minutes 0 (a time limit runs the iterations that fit)")
    p.add_argument("--spacing", type=float, nargs=3, default=[2.0, 2.0, 1.0], help="model plan (header units)")
    p.add_argument("--patch", type=int, nargs=3, default=[96, 96, 16])
    p.add_argument("--base-filters", type=int, default=8)
    p.add_argument("--pools", type=int, nargs=3, default=[4, 4, 4], metavar=("PX", "PY", "PZ"),
                   help="downsamplings per axis (network.pools): ACDC slices are 5-10 mm apart against "
                        "about 1.5 mm pixels, which the headers do not say (all 1 x 1 x 1)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=3,
                   help="2: the 2-D plan (in-plane network over the slices; --patch X Y N crops N slices, "
                        "pools PX PY 0)")
    p.add_argument("--augment", default="no-mirror", help="the right ventricle lies on one side of the left")
    p.add_argument("--nnunet-augment", action="store_true", help="also nnU-Net's scaling/intensity augmentations")
    p.add_argument("--no-ramp", action="store_true",
                   help="DTC: consistency weight at its maximum from the first iteration instead of ramped up "
                        "over the run (for a --continue-from stage whose weights were trained with it)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--test-cases", type=int, default=0, help="evaluate the first N of test.list (0 = all)")
    p.add_argument("--tiny", action="store_true", help="smoke run: seconds, meaningless numbers")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--continue-from", type=Path, metavar="RESULT_JSON",
                   help="new stage from the weights of this earlier result (same mode, or a dtc stage from "
                        "a seg result: semi-supervised fine-tuning), fresh schedule")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--no-assess", action="store_true",
                   help="train only (a device machine without MedPy); score later with --assess RESULT_JSON")
    p.add_argument("--table", type=Path, nargs="+", metavar="RESULT_JSON",
                   help="only print the table of these (of two: also their patient-by-patient comparison)")
    p.add_argument("--assess", type=Path, metavar="RESULT_JSON",
                   help="only re-score this result's model (val.list choice, then test.list) and rewrite it "
                        "(or write the re-scored result to --json)")
    p.add_argument("--mirror", action="store_true",
                   help="score with test-time augmentation (infer.tta): the model's training flips, or the "
                        "in-plane turns of a no-mirror model such as these, averaged")
    p.add_argument("--markdown", type=Path, help="with --table: also write the table here")
    return p


def main(argv: list[str] | None = None) -> dict | str:
    p = parser()
    args = p.parse_args(argv)
    if args.table:
        results = [json.loads(Path(f).read_text()) for f in args.table]
        text = table(results) + ("\n\n" + paired(*results) if len(results) == 2 else "")
        print(text)
        if args.markdown:
            args.markdown.write_text(text + "\n")
        return text
    if args.assess:
        if args.data is None:
            p.error("--assess needs --data")
        result = json.loads(args.assess.read_text())
        model = model_of(args.assess, result)
        result.update(assess(model, args.data, args))
        if args.json and args.json.resolve() != args.assess.resolve():
            result["model"] = str(model.resolve())  # the new file may lie elsewhere: no relative name
        common.write_json(args.json or args.assess, result)
        return result
    if args.data is None or args.out is None:
        p.error("--data and --out are needed to train")
    if args.mode not in ("copy-paste", "copy-paste-teacher") and (args.no_cp_levelset or args.no_cp_consistency):
        p.error("--no-cp-levelset and --no-cp-consistency apply to the copy-paste modes only")
    if args.mode != "copy-paste-teacher" and (args.stage1_fraction is not None or args.stage2_gate):
        p.error("--stage1-fraction and --stage2-gate apply to --mode copy-paste-teacher only")
    if args.tiny:
        args.labeled, args.unlabeled, args.iterations, args.minutes = 2, 2, 3, None
        args.patch, args.base_filters, args.spacing, args.test_cases = [32, 32, 16], 2, [4.0, 4.0, 1.0], 2
    result = run(args)
    if args.json:
        common.write_json(args.json, result)
    if args.no_assess:
        print(f"{args.mode}: {result['iterations']} iterations in {result['train_seconds'] / 60:.1f} min; not scored "
              "(--no-assess): score with --assess RESULT_JSON")
        return result
    means = result["test"]["means"]
    print(f"{args.mode}: {result['iterations']} iterations in {result['train_seconds'] / 60:.1f} min; test Dice "
          + ", ".join(f"{CLASSES[c]} {100 * means[str(c) if str(c) in means else c]['dice']:.1f}" for c in CLASSES)
          + f", mean {100 * means['mean']['dice']:.1f}")
    return result


if __name__ == "__main__":
    main()
