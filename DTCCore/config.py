"""Configuration of a DTC run: network, recipe, training schedule and inference.

Every constant carries its source. "reference" is the authors' code (github.com/HiLab-git/DTC,
``train_la_dtc.py``); "paper" is Luo et al., AAAI 2021. Lengths are in voxels, iterations count
optimizer steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import DTCError
from .planning.dims import check_dims
from .planning.pools import check_patch

# "seg", "lsf", "seg+lsf": the paper's Table 1 ablations (labeled only); "dtc" is the full method (model/losses.py).
DTC_MODES = ("seg", "lsf", "seg+lsf", "dtc")
# The copy-paste modes follow BCP (Bai et al., CVPR 2023, "Bidirectional Copy-Paste"; training/copypaste.py):
# "copy-paste" = labeled only, a box of one labeled crop pasted into another (BCP's stage 1) for the whole run;
# "copy-paste-teacher" = that for the first recipe.cp_stage1_fraction of the run, then an EMA teacher's
# pseudo-labels on unlabeled crops pasted both ways with labeled ones (BCP's stage 2). recipe.cp_levelset and
# recipe.cp_consistency add DTC's level-set head and dual-task consistency on the mixed images.
TEACHER_MODE = "copy-paste-teacher"
COPY_PASTE_MODES = ("copy-paste", TEACHER_MODE)
MODES = DTC_MODES + COPY_PASTE_MODES
UNLABELED_MODES = ("dtc", TEACHER_MODE)  # the modes that train on unlabeled scans
# Device names, the same in the config, every CLI command and the Slicer panel: "auto" (CUDA when present),
# "cpu", "cuda" (the current GPU) or "cuda:N" (GPU number N).
DEVICE_CHOICES = ("auto", "cuda", "cpu")  # this order in the panel's device list
_CUDA_INDEXED = re.compile(r"cuda:\d+")
# Forward-pass precision (train.precision, infer.precision; runtime/precision.py): "auto" = bf16 where the hardware
# runs it natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX), else fp32; "fp32"; "bf16" (forced).
PRECISIONS = ("auto", "fp32", "bf16")
LEGACY_TTA = "mirror"  # infer.mirror of configs before test-time augmentation was named "tta" (same meaning)
LEGACY_AMP = "amp"  # train.amp of configs before --precision: false meant fp32 everywhere, true what "auto" means


def check_precision(name: str, where: str = "precision") -> str:
    """``name`` normalised if it is one of PRECISIONS, else DTCError naming ``where`` and the choices."""
    value = str(name).strip().lower()
    if value not in PRECISIONS:
        raise DTCError(f"{where} {name!r}: use one of {', '.join(PRECISIONS)}")
    return value


def check_device(name: str) -> str:
    """``name`` if it is a device name (DEVICE_CHOICES or cuda:N), else DTCError naming the choices."""
    if isinstance(name, str) and (name in DEVICE_CHOICES or _CUDA_INDEXED.fullmatch(name)):
        return name
    raise DTCError(f"device {name!r}: use auto, cpu, cuda or cuda:N")

# Training augmentation (train.augment), saved with the model. All act in the x-y plane only (z untouched),
# with the same transform for a case's image, label and signed distance (data.augment).
# "reference": the reference code's RandomRotFlip (dataloaders/la_heart.py): rot90 by k in 0..3, then
#   ALWAYS a flip along x or y. Every draw is a reflection: the scan's own orientation is never shown.
#   The paper's protocol; kept to reproduce its numbers.
# "mirror": nnU-Net-style mirroring (nnU-Net's MirrorTransform: each axis flipped independently with
#   probability 0.5) plus rot90 by k in 0..3 where the x-y patch is square. Draws the identity (1/8 of
#   draws on a square patch, 1/4 otherwise). Our default for new models.
# "no-mirror": rotations only (rot90 by k where square, else rot 0/180): they keep handedness, so a left
#   structure stays left. For labels that depend on side (TotalSegmentator trains its left/right
#   structures without mirroring for this reason).
# "none": no augmentation (exact comparisons in tests).
AUGMENT_REFERENCE, AUGMENT_MIRROR, AUGMENT_NO_MIRROR, AUGMENT_NONE = "reference", "mirror", "no-mirror", "none"
AUGMENT_CHOICES = (AUGMENT_MIRROR, AUGMENT_NO_MIRROR, AUGMENT_REFERENCE, AUGMENT_NONE)
# Axes (x = 0, y = 1) that an augmentation may flip: the flips test-time mirroring averages over.
AUGMENT_FLIP_AXES = {AUGMENT_REFERENCE: (0, 1), AUGMENT_MIRROR: (0, 1), AUGMENT_NO_MIRROR: (), AUGMENT_NONE: ()}


def augment_choice(value: Any) -> str:
    """The augmentation name for a ``train.augment`` value; the booleans of older configs and
    checkpoints map to what they meant: True -> "reference" (RandomRotFlip), False -> "none"."""
    if isinstance(value, bool):
        return AUGMENT_REFERENCE if value else AUGMENT_NONE
    if value not in AUGMENT_CHOICES:
        raise DTCError(f"augmentation {value!r}: use one of {', '.join(AUGMENT_CHOICES)}")
    return str(value)


@dataclass
class NetworkConfig:
    in_channels: int = 1
    num_classes: int = 1  # foreground classes; 1 -> single sigmoid channel as in the reference
    base_filters: int = 16  # reference VNet n_filters=16 -> 9,448,866 parameters (paper: 9.44 M)
    dropout: bool = True  # reference has_dropout=True: Dropout3d(0.5) on bottleneck and last features
    # How many of the 4 downsamplings halve axis x, y, z (model/network.py). (4, 4, 4) is the reference VNet;
    # thick-slice scans pool the slice axis fewer times, later (nnU-Net's anisotropic plans; pools.auto_pools).
    pools: tuple[int, int, int] = (4, 4, 4)
    # 3: the paper's VNet (3x3x3 convolutions); 2: the same network with in-plane (3x3) convolutions, trained on
    # and run over the slices of the third axis, for thick-slice scans (planning/dims.py; nnU-Net's 2d configuration).
    # A 2-D network never pools z: its pools are (PX, PY, 0).
    dims: int = 3


# The copy-paste teacher's recipe when recipe.cp_stage1_fraction / recipe.cp_lr_in_stage2 are left None, by the model's
# foreground classes (stage1_fraction, lr_in_stage2). One class: BCP's LA recipe, LA_BCP_train.py --pre_max_iteration
# 2000 then --self_max_iteration 15000 (2000 / 17000 = 0.118), our lr steps at fractions of the whole run; it beat
# labeled-only + copy-paste by 6.3 and 7.5 points on LA, 4 labeled, 90 CPU minutes (bench/results/
# copy-paste-teacher.md). More classes: ACDC Stage 13's (bench/results/copy-paste-teacher-acdc.md), chosen on
# validation scans of 2-D ACDC (7 labeled): stage 1 at 0.65 of the run with lr 0.01 through it, 82.6 % against
# 35.2 % for BCP's ACDC fraction (10000 / 40000 = 0.25) with whole-run steps, whose teacher started before the
# model found any class and marked them all absent.
BINARY_STAGE1_FRACTION = 2000 / 17000
MULTICLASS_STAGE1_FRACTION = 0.65


# recipe.cp_stage2_gate (ours, a choice, not tuned): one check of the model on its labeled crops every 50 steps (a
# forward pass of 2 crops: under 0.1 % of the steps' time); stage 2 starts by 0.8 of the run whatever the check
# says, so the teacher gets at least a fifth of it (BCP: 0.75 on ACDC, 0.88 on LA).
STAGE2_GATE_EVERY = 50
STAGE2_GATE_LAST = 0.8


@dataclass
class RecipeConfig:
    mode: str = "dtc"
    beta: float = 0.3  # reference: loss_sdf weight 0.3 (paper eq. 7 writes 1)
    k: float = 1500.0  # paper and reference: T^-1(z) = sigmoid(-k z), k = 1500
    consistency: float = 1.0  # reference --consistency 1.0: lambda's maximum
    consistency_rampup: float = 40.0  # reference --consistency_rampup 40.0 (in ramp units)
    ramp_unit: int = 150  # reference: sigmoid_rampup(iter_num // 150, 40) -> full weight at 6000
    # How T is normalised: "volume" = each side of the signed distance divided by its maximum over the
    # whole volume, computed once per labeled volume (our default; see model/levelset.py for why);
    # "patch" = the reference's per-patch min-max (recomputed per batch; for comparison only).
    sdf_normalization: str = "volume"
    # Copy-paste modes (training/copypaste.py). Fraction of the run that is stage 1 (labeled crops pasted into labeled
    # crops) before the EMA teacher starts (copy-paste-teacher only). A fraction, so --iterations and --time-limit
    # scale both stages together. None: by the model's classes (:func:`stage1_fraction`).
    cp_stage1_fraction: float | None = None
    # Ours, off by default (on ACDC validation scans it matched the fixed 0.65, not more: ACDC Stage 15): stage 2
    # waits past the fraction until the model finds every class of its labeled crops, checked every
    # STAGE2_GATE_EVERY iterations, at the latest at STAGE2_GATE_LAST of the run (or the fraction, if later;
    # training/copypaste_step.py); not with a time limit. A teacher that starts before the model finds a class marks
    # it absent on every unlabeled crop (bench/results/copy-paste-teacher-acdc.md, ACDC Stage 13).
    cp_stage2_gate: bool = False
    # Where the lr steps fall in a "copy-paste-teacher" run: False: at their fractions of the whole run (BCP's LA code
    # restarts its schedule for stage 2; ours is one schedule); True: lr stays train.lr through stage 1 (BCP's ACDC
    # stage 1 keeps base_lr, ACDC_BCP_train.py pre_train) and the run's lr steps move into stage 2 at the same
    # fractions of it, from the iteration the teacher starts (train.stage2_began; with cp_stage2_gate the lr waits
    # with the teacher). None: by the model's classes (:func:`lr_in_stage2`).
    cp_lr_in_stage2: bool | None = None
    # Our additions on the mixed images, both stages: the level-set head trains on the signed distance of the
    # mixed targets (weighted as the segmentation terms), and DTC's dual-task consistency (weight lambda(t) as in
    # "dtc"). Off and off is BCP's own recipe.
    cp_levelset: bool = True
    cp_consistency: bool = True


@dataclass
class TrainConfig:
    iterations: int = 6000  # reference max_iterations
    lr: float = 0.01  # reference base_lr
    momentum: float = 0.9  # reference SGD momentum
    weight_decay: float = 1e-4  # reference SGD weight_decay
    lr_steps: tuple[int, ...] = (2500, 5000)  # reference: lr x0.1 every 2500 iterations
    lr_gamma: float = 0.1  # reference
    labeled_batch: int = 2  # reference labeled_bs
    unlabeled_batch: int = 2  # reference batch_size 4 - labeled_bs 2
    patch: tuple[int, int, int] = (112, 112, 80)  # reference patch_size for LA (x, y, z)
    seed: int = 1337  # reference seed
    checkpoint_every: int = 500  # our choice: a cancel or crash loses at most this many iterations
    log_every: int = 10  # iterations between progress events in log.jsonl
    num_workers: int = 2  # background batch producers (0 = in the training process)
    device: str = "auto"  # DEVICE_CHOICES or cuda:N
    precision: str = "auto"  # one of PRECISIONS, for the training forward passes (see runtime/precision.py)
    deterministic: bool = False  # True: deterministic algorithms (slower; used by resume tests)
    sync_batchnorm: bool = False  # DDP only: SyncBatchNorm across processes
    # Batches over which model.pt's BatchNorm statistics are recomputed for the final weights when training
    # ends at a high learning rate (trainer.PRECISE_BN_ABOVE_LR; 0: never, as the reference). See model/batchnorm.py.
    precise_bn_batches: int = 25
    # Wall-clock budget (minutes) for the whole run: the schedule (iterations, lr steps, consistency ramp) is
    # scaled to the iterations that fit, measured on the first iterations (schedule.TimeBudget) and stored
    # in the checkpoints, so a resume keeps it. None: ``iterations`` as given.
    time_limit_minutes: float | None = None
    schedule_fitted: bool = False  # set by the trainer once the schedule is scaled to the time limit
    # set by the trainer: the iteration at which a "copy-paste-teacher" run's teacher started (None: not yet; a new run
    # starts with None), so a resumed run keeps recipe.cp_lr_in_stage2's lr steps where they were
    stage2_began: int | None = None
    checkpoint_minutes: float = 10.0  # our choice: also checkpoint this often, so a slow CPU loses little
    augment: str = AUGMENT_MIRROR  # one of AUGMENT_CHOICES (above); old configs' True/False also load
    # True: also nnU-Net's in-plane scaling, noise, brightness, contrast and gamma (training/augment.py).
    nnunet_augment: bool = False


@dataclass
class InferConfig:
    overlap: float = 0.5  # fraction of the patch shared by neighbouring windows (MONAI's default style)
    stride: tuple[int, int, int] | None = None  # explicit stride overrides overlap; reference LA: (18, 18, 4)
    blend: str = "gaussian"  # gaussian | uniform (reference: uniform average)
    batch_windows: int = 4  # windows per forward pass
    threshold: float = 0.5  # reference: probability > 0.5
    largest_component: bool = False  # reference keeps the largest connected component (README numbers)
    # True: one forward pass over the whole volume padded to a multiple of 16 (the network is fully
    # convolutional) instead of patch windows, when it has at most sliding_window.WHOLE_VOLUME_MAX_VOXELS
    # voxels (else, or on out-of-memory, the windows). ~4-8x faster on a CPU for an LA case; the output
    # differs from the 50%-overlap windows near window borders (bench/RESULTS.md). Off: the paper's windows.
    whole_volume: bool = False
    # True: test-time augmentation (inference/tta.py): average the probabilities and level sets over the flips
    # the model was trained with (AUGMENT_FLIP_AXES of its train.augment), nnU-Net's test-time mirroring; a
    # "no-mirror" model averages over its in-plane turns instead (tta.tta_turns), "none" over nothing. Up
    # to 4x the time. Set by dtc segment --tta (old name --mirror). Configs saved before the name was
    # "tta" (the bundled model's among them) store it as infer.mirror: from_dict reads that (LEGACY_TTA).
    tta: bool = False
    precision: str = "auto"  # one of PRECISIONS, for the inference forward passes (see runtime/precision.py)


# The model plan: the grid a model works on. nnU-Net's "3d_lowres" idea: a coarser spacing than the scans
# fits the whole structure in a few patches and makes a CPU budget go far. Measured on 8 LA test cases
# (label -> signed distance -> coarse grid -> back to 0.625 mm -> threshold), the best Dice a model could
# reach: 97.9 % at 1.0 mm, 97.3 % at 1.25 mm, 97.2 % at 1.5 mm, 96.7 % at 2.0 mm.
NORMALIZATIONS = ("zscore",)  # per-volume z-score (the reference LA preprocessing)


@dataclass
class PlanConfig:
    # Spacing (mm per axis x, y, z) of the grid the model trains and predicts on; None = each scan's own
    # grid, unresampled (the paper's protocol). Set by ``dtc train --spacing`` (see planning/spacing.py for "auto").
    spacing: tuple[float, float, float] | None = None
    normalization: str = "zscore"


@dataclass
class DTCConfig:
    plan: PlanConfig = field(default_factory=PlanConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DTCConfig":
        """Build a config from a (possibly partial) nested dict; unknown keys are an error."""
        if not isinstance(d, dict):
            raise DTCError("config must be a JSON object with sections network/recipe/train/infer")
        out = cls()
        d = _migrate_lr_placement(_migrate_tta(_migrate_amp(d, out)))
        for section, value in d.items():
            if section not in _SECTIONS:
                raise DTCError(f"unknown config section {section!r}; expected one of {sorted(_SECTIONS)}")
            if not isinstance(value, dict):
                raise DTCError(f"config section {section!r} must be a JSON object")
            sub = getattr(out, section)
            names = {f.name: f for f in dataclasses.fields(sub)}
            for key, v in value.items():
                if key not in names:
                    raise DTCError(f"unknown config key {section}.{key}; expected one of {sorted(names)}")
                annotation = names[key].type
                assert isinstance(annotation, str)  # a string under 'from __future__ import annotations'
                setattr(sub, key, coerce_value(f"{section}.{key}", annotation, v))
        out.validate()
        return out

    def override(self, values: dict[str, Any]) -> None:
        """Set ``{"section.key": value}`` in place, skipping None (an option not given): the one way the
        commands apply their options to a config. An unknown name is a programming error (KeyError)."""
        for name, value in values.items():
            section, key = name.split(".")
            sub = getattr(self, section)
            if key not in {f.name for f in dataclasses.fields(sub)}:
                raise KeyError(f"no config field {name}")
            if value is not None:
                setattr(sub, key, value)

    def validate(self) -> None:
        """Raise DTCError on values that cannot work."""
        if self.plan.spacing is not None:
            spacing = tuple(float(v) for v in self.plan.spacing)
            if len(spacing) != 3 or not all(0 < v < 100 for v in spacing):
                raise DTCError(f"plan spacing {spacing} must be 3 sizes in mm, each in (0, 100)")
        if self.plan.normalization not in NORMALIZATIONS:
            raise DTCError(f"plan normalization {self.plan.normalization!r}: use one of {', '.join(NORMALIZATIONS)}")
        if self.train.time_limit_minutes is not None and not self.train.time_limit_minutes > 0:
            raise DTCError(f"time limit {self.train.time_limit_minutes} minutes must be positive")
        if self.recipe.mode not in MODES:
            raise DTCError(f"unknown mode {self.recipe.mode!r}; use one of {', '.join(MODES)}")
        if self.recipe.sdf_normalization not in ("volume", "patch"):
            raise DTCError("recipe.sdf_normalization must be 'volume' or 'patch'")
        if self.network.num_classes < 1 or self.network.in_channels < 1 or self.network.base_filters < 1:
            raise DTCError("network.num_classes, in_channels and base_filters must be >= 1")
        check_patch(self.train.patch, self.network.pools)
        if check_dims(self.network.dims) == 2:
            if int(self.network.pools[2]) != 0:
                raise DTCError(f"network pools {tuple(self.network.pools)}: a 2-D network does not pool the slice "
                               "axis; use pools PX PY 0 (dtc train --dims 2 sets it)")
            if self.recipe.sdf_normalization != "volume":
                raise DTCError("recipe.sdf_normalization 'patch' (the reference's 3-D per-patch level set) has no 2-D "
                               "form; use 'volume' with a 2-D network (each slice normalised on its own)")
        if self.train.iterations < 1:
            raise DTCError("iterations must be >= 1")
        if self.train.labeled_batch < 1 or self.train.unlabeled_batch < 0:
            raise DTCError("labeled_batch must be >= 1 and unlabeled_batch >= 0")
        self._validate_copy_paste()
        for where, value in (("train.precision", self.train.precision), ("infer.precision", self.infer.precision)):
            if check_precision(value, where) != value:  # a saved config holds the normalised name
                raise DTCError(f"{where} {value!r}: use one of {', '.join(PRECISIONS)} (lower case)")
        augment_choice(self.train.augment)  # raises on an unknown name; old booleans are accepted
        check_device(self.train.device)
        if not 0.0 <= self.infer.overlap < 1.0:
            raise DTCError(f"overlap {self.infer.overlap} must be in [0, 1)")
        if self.infer.blend not in ("gaussian", "uniform"):
            raise DTCError(f"blend {self.infer.blend!r}: use gaussian or uniform")
        if self.infer.stride is not None:
            stride = tuple(int(s) for s in self.infer.stride)
            if len(stride) != 3 or any(s < 1 for s in stride):
                raise DTCError(f"stride {stride} must be 3 positive sizes")

    def _validate_copy_paste(self) -> None:
        """The copy-paste modes pair the first half of the labeled crops with the second half (BCP's img_a / img_b)
        and, with the teacher, each half with as many unlabeled crops (unimg_a / unimg_b)."""
        mode, t = self.recipe.mode, self.train
        if self.recipe.cp_stage1_fraction is not None and not 0.0 <= self.recipe.cp_stage1_fraction <= 1.0:
            raise DTCError(f"recipe.cp_stage1_fraction {self.recipe.cp_stage1_fraction} must be in [0, 1]")
        if self.train.stage2_began is not None and self.train.stage2_began < 0:
            raise DTCError(f"train.stage2_began {self.train.stage2_began} must be an iteration (0 or more) or null")
        if mode not in COPY_PASTE_MODES:
            return
        if mode == TEACHER_MODE and self.recipe.cp_stage2_gate and t.time_limit_minutes is not None:
            raise DTCError("--stage2-gate cannot be combined with --time-limit yet: the time budget plans stage 2 at "
                           "--stage1-fraction, and a teacher that starts later could overrun the limit; give "
                           "--iterations instead")
        if t.labeled_batch % 2:
            raise DTCError(f"--mode {mode} pastes one labeled crop into another: labeled_batch {t.labeled_batch} "
                           "must be even (2, 4, ...)")
        if mode == TEACHER_MODE and t.unlabeled_batch != t.labeled_batch:
            raise DTCError(f"--mode {mode} pairs each labeled crop with an unlabeled one: unlabeled_batch "
                           f"{t.unlabeled_batch} must equal labeled_batch {t.labeled_batch}")

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DTCConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DTCError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DTCError(f"config file {path} is not valid JSON ({exc}); fix or remove it") from None
        return cls.from_dict(data)


_SECTIONS = {f.name for f in dataclasses.fields(DTCConfig)}


def _migrate_tta(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with an older config's ``infer.mirror`` renamed ``infer.tta`` (both given: an error naming them)."""
    infer = d.get("infer")
    if not isinstance(infer, dict) or LEGACY_TTA not in infer:
        return d
    if "tta" in infer:
        raise DTCError(f"config infer.{LEGACY_TTA} is the old name of infer.tta; give only infer.tta")
    return {**d, "infer": {("tta" if k == LEGACY_TTA else k): v for k, v in infer.items()}}


def _migrate_lr_placement(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with ``recipe.cp_lr_in_stage2: false`` when its recipe gives a stage-1 fraction and no lr placement:
    every config saved before the option did (its fraction, the lr steps in the whole run), so a saved run resumes
    as it began; a config that leaves both out gets the default pair for its classes (:func:`lr_in_stage2`)."""
    recipe = d.get("recipe")
    if not isinstance(recipe, dict) or recipe.get("cp_stage1_fraction") is None or "cp_lr_in_stage2" in recipe:
        return d
    return {**d, "recipe": {**recipe, "cp_lr_in_stage2": False}}


def _migrate_amp(d: dict[str, Any], out: DTCConfig) -> dict[str, Any]:
    """``d`` without an older config's ``train.amp``; ``amp: false`` sets both precisions to fp32 on ``out``
    (unless ``d`` names them), ``amp: true`` keeps "auto" (bf16 on CUDA, as it was)."""
    train = d.get("train")
    if not isinstance(train, dict) or LEGACY_AMP not in train:
        return d
    amp = train[LEGACY_AMP]
    if not isinstance(amp, bool):
        raise DTCError(f"config train.{LEGACY_AMP} must be true or false, not {amp!r}")
    if not amp:
        out.train.precision = out.infer.precision = "fp32"
    return {**d, "train": {k: v for k, v in train.items() if k != LEGACY_AMP}}


def stage1_fraction(config: DTCConfig) -> float:
    """The fraction of a "copy-paste-teacher" run that is stage 1: ``recipe.cp_stage1_fraction``, or when None
    :data:`BINARY_STAGE1_FRACTION` for a one-class model and :data:`MULTICLASS_STAGE1_FRACTION` for more."""
    if config.recipe.cp_stage1_fraction is not None:
        return float(config.recipe.cp_stage1_fraction)
    return BINARY_STAGE1_FRACTION if config.network.num_classes == 1 else MULTICLASS_STAGE1_FRACTION


def lr_in_stage2(config: DTCConfig) -> bool:
    """Whether a "copy-paste-teacher" run's lr steps fall in its stage 2 (``recipe.cp_lr_in_stage2``; when None:
    for models of more than one class, ACDC Stage 13's recipe with :data:`MULTICLASS_STAGE1_FRACTION`). A config
    saved before the option reads as False (:func:`_migrate_lr_placement`)."""
    if config.recipe.cp_lr_in_stage2 is not None:
        return bool(config.recipe.cp_lr_in_stage2)
    return config.network.num_classes > 1


def coerce_value(where: str, annotation: str, value: Any) -> Any:
    """A JSON value checked and converted to a config field's type (its annotation string, e.g.
    ``"tuple[int, int, int] | None"``); DTCError naming the field and the expected type otherwise.

    Ints stay ints (a float with an integral value is accepted), floats accept ints, booleans are only
    ``true``/``false`` (never numbers or strings), lists become tuples. ``train.augment`` also takes the
    booleans of older configs (see :func:`augment_choice`).
    """
    if annotation.endswith(" | None"):
        return None if value is None else coerce_value(where, annotation[: -len(" | None")], value)
    if annotation.startswith("tuple["):
        inner = annotation[len("tuple["):-1].split(", ")
        if not isinstance(value, (list, tuple)):
            raise DTCError(f"config {where} must be a list ({annotation}), not {value!r}")
        if inner[-1] != "...":
            if len(value) != len(inner):
                raise DTCError(f"config {where} must hold {len(inner)} values, not {len(value)}")
            return tuple(coerce_value(f"{where}[{i}]", t, v) for i, (t, v) in enumerate(zip(inner, value)))
        return tuple(coerce_value(f"{where}[{i}]", inner[0], v) for i, v in enumerate(value))
    if annotation == "bool":
        if not isinstance(value, bool):
            raise DTCError(f"config {where} must be true or false, not {value!r}")
        return value
    if annotation == "str":
        if where == "train.augment" and isinstance(value, bool):
            return augment_choice(value)
        if not isinstance(value, str):
            raise DTCError(f"config {where} must be a string, not {value!r}")
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation == "int":
        if number and float(value).is_integer():
            return int(value)
        raise DTCError(f"config {where} must be a whole number, not {value!r}")
    if annotation == "float":
        if number:
            return float(value)
        raise DTCError(f"config {where} must be a number, not {value!r}")
    raise TypeError(f"config field {where} has an annotation coerce_value does not know: {annotation}")


def check_batchnorm_batch(config: DTCConfig, has_unlabeled: bool) -> None:
    """DTCError when a training step would leave BatchNorm one value per channel (torch's own error, "Expected more
    than 1 value per channel", names neither the cause nor the fix): the smallest batch a step of the mode feeds
    the network, times the voxels of its coarsest level (the patch halved ``pools`` times per axis; a 2-D
    network's slices join its batch, the same product), must exceed 1. ``has_unlabeled``: the manifest lists
    unlabeled scans (without them a dtc step has only its labeled crops). A training check, not part of
    :meth:`DTCConfig.validate`: a trained model is never refused for it, and SyncBatchNorm over several
    processes (``train.sync_batchnorm``) pools the values of every process, so it is not checked then."""
    t, mode = config.train, config.recipe.mode
    if t.sync_batchnorm:
        return
    # copy-paste modes: stage 1 runs the student on half the labeled crops (copypaste_step.forward_backward)
    smallest = {"dtc": t.labeled_batch + (t.unlabeled_batch if has_unlabeled else 0),
                "copy-paste": max(1, t.labeled_batch // 2), TEACHER_MODE: max(1, t.labeled_batch // 2)
                }.get(mode, t.labeled_batch)
    coarsest = [int(size) >> int(k) for size, k in zip(t.patch, config.network.pools)]
    if smallest * math.prod(coarsest) <= 1:
        raise DTCError(f"mode {mode} feeds the network {smallest} crop at a time and patch "
                       f"{' x '.join(map(str, t.patch))} shrinks to 1 voxel at its coarsest level: BatchNorm needs "
                       "more than one value; use a larger patch or a larger labeled batch")
