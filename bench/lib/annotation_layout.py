"""Where an annotation-loop study keeps everything (bench/studies/annotation_loop.py writes it, its report reads
it): the study's settings (``<out>/study.json``), its arms, and the folder of each round of each arm.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import common

INITIAL_LABELED = 4  # issue 24: the first 4 of train.list labeled, the other 76 unlabeled


@dataclass(frozen=True)
class Arm:
    """One way of running the loop: how it picks (``rank`` | ``random`` | ``follow``) and trains (``--mode``)."""

    name: str
    picker: str
    mode: str
    seed: int = 0


def study_arms(seeds: list[int]) -> list[Arm]:
    """The arms, in the order a round runs them (the ranking arm first: ``follow`` copies its picks)."""
    return ([Arm("disagreement", "rank", "dtc")] + [Arm(f"random-s{s}", "random", "dtc", s) for s in seeds]
            + [Arm("labeled-only", "follow", "seg")])


@dataclass
class Study:
    """The settings of one study folder, stored in ``<out>/study.json`` (a rerun must use the same)."""

    data: str
    rounds: int
    k: int
    seeds: list
    initial_budget: dict  # {"minutes": M} (--time-limit) or {"iterations": N} (schedule fitted to N)
    finetune_budget: dict
    train_args: list = field(default_factory=list)  # last on the line: plan overrides (smoke), --precision...

    @property
    def arms(self) -> list[Arm]:
        return study_arms(self.seeds)


def load_study(out: Path) -> Study:
    path = out / "study.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; run 'annotation_loop.py run --out {out}' first")
    return Study(**json.loads(path.read_text()))


def save_or_check_study(out: Path, study: Study) -> None:
    """Write ``study.json`` once; a later run with other settings is refused (it would mix two studies)."""
    path = out / "study.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != asdict(study):
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in asdict(study).items() if old.get(k) != v)
            raise SystemExit(f"error: {out} holds a study with other settings ({diff}); "
                             "use the same options or another --out folder")
    else:
        common.write_json(path, asdict(study))


# ---- where everything lives ----
def round_dir(out: Path, arm: Arm | None, r: int) -> Path:
    """Stage folder of round ``r`` of ``arm`` (round 0 is the shared first model: ``<out>/initial``)."""
    return out / "initial" if r == 0 else out / arm.name / f"round_{r}"


def model_path(out: Path, arm: Arm | None, r: int) -> Path:
    return round_dir(out, arm, r) / "run" / "model.pt"


def labeled_cases(out: Path, study: Study, arm: Arm | None, r: int) -> list[str]:
    """Labeled case names after round ``r`` (round 0: the first INITIAL_LABELED of train.list)."""
    if r == 0:
        return train_cases(study)[:INITIAL_LABELED]
    return json.loads((round_dir(out, arm, r) / "picks.json").read_text())["labeled"]


def train_cases(study: Study) -> list[str]:
    return common.read_list(Path(study.data), "train.list")
