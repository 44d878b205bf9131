"""Two engine jobs at once: a Segment of the bundled sample while a ``dtc train`` runs (issue 25).

For each setting, the same run: start ``dtc train`` on a small synthetic manifest (the bundled model's
network and patch: base 16, 48x48x32, batch 2 + 2, no loader processes), wait for its first iterations,
time ``dtc segment --sample`` (the bundled model, its own settings) beside it, note the trainer's
iterations per second during the Segment and alone afterwards, then cancel the trainer.

- ``default``: both jobs with torch's default threads (one per core each), as before ``--threads``;
- ``split``: the Slicer panel's split (DTCSegmentation/DTCSegmentationLib/cores.py): the trainer
  ``train_threads(cores)``, the Segment the cores it leaves.

    python bench/speed/two_jobs.py [--modes alone default split] [--json OUT.json]

Say what else loaded the CPU when reporting: the numbers are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
from DTCCore.runtime.threads import available_cores

sys.path.insert(0, str(common.REPO / "DTCSegmentation"))
from DTCSegmentationLib.cores import job_threads, train_threads  # noqa: E402

WARM_ITERATIONS = 3  # progress events before timing starts (data loaded, first steps done)
ALONE_S = 10.0  # seconds of training alone before the Segment, for the trainer's solo rate


def synthetic_manifest(root: Path, n_labeled: int = 2, n_unlabeled: int = 2, shape=(64, 64, 48)) -> Path:
    """Blob volumes (X, Y, Z) at 1 mm with their labels, and the manifest naming them."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    entries, unlabeled = [], []
    for i in range(n_labeled + n_unlabeled):
        centre = np.array(shape) / 2 + rng.uniform(-6, 6, 3)
        blob = (((grid - centre[:, None, None, None]) / 12.0) ** 2).sum(0) <= 1
        image = (100 + 60 * blob + rng.normal(0, 10, shape)).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(image.transpose(2, 1, 0)), str(root / f"case{i}.nrrd"))
        if i < n_labeled:
            sitk.WriteImage(sitk.GetImageFromArray(blob.astype(np.uint8).transpose(2, 1, 0)),
                            str(root / f"case{i}_label.nrrd"))
            entries.append({"image": f"case{i}.nrrd", "label": f"case{i}_label.nrrd"})
        else:
            unlabeled.append(f"case{i}.nrrd")
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"labeled": entries, "unlabeled": unlabeled}))
    config = {"network": {"base_filters": 16}, "train": {"patch": [48, 48, 32], "iterations": 100000,
              "log_every": 1, "checkpoint_every": 100000, "num_workers": 0, "device": "cpu",
              "labeled_batch": 2, "unlabeled_batch": 2, "precise_bn_batches": 0}}
    (root / "config.json").write_text(json.dumps(config))
    return manifest


def dtc(*args: str) -> list[str]:
    return [sys.executable, "-m", "DTCCore", *args]


def with_threads(threads: int | None) -> list[str]:
    return [] if threads is None else ["--threads", str(threads)]


class Trainer:
    """A ``dtc train --jsonl`` process; ``progress`` = [(receipt time, iteration)]."""

    def __init__(self, manifest: Path, run_dir: Path, threads: int | None) -> None:
        self.cancel = run_dir.parent / f"{run_dir.name}.cancel"
        self.process = subprocess.Popen(
            dtc("train", str(manifest), "-o", str(run_dir), "--config", str(manifest.parent / "config.json"),
                "--jsonl", "--cancel-file", str(self.cancel), *with_threads(threads)),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=common.REPO)
        self.progress: list[tuple[float, int]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "progress":
                    self.progress.append((time.monotonic(), int(event["iteration"])))

    def iteration_at(self, when: float) -> int:
        """The newest iteration reported by ``when`` (0 before any)."""
        return max([i for t, i in self.progress if t <= when], default=0)

    def rate(self, start: float, end: float) -> float:
        """Iterations per second over [start, end] (to the trainer's reporting step, one iteration)."""
        return round((self.iteration_at(end) - self.iteration_at(start)) / max(end - start, 1e-9), 3)

    def stop(self) -> None:
        self.cancel.touch()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()


def segment_seconds(out: Path, threads: int | None) -> float:
    t0 = time.monotonic()
    subprocess.run(dtc("segment", "--sample", "-o", str(out), "--overwrite", "--device", "cpu",
                       *with_threads(threads)), check=True, capture_output=True, cwd=common.REPO, timeout=900)
    return round(time.monotonic() - t0, 2)


def one_setting(work: Path, manifest: Path, name: str, train_t: int | None, seg_t: int | None) -> dict:
    trainer = Trainer(manifest, work / f"run_{name}", train_t)
    deadline = time.monotonic() + 600
    while len(trainer.progress) < WARM_ITERATIONS and time.monotonic() < deadline and trainer.process.poll() is None:
        time.sleep(0.2)
    warm = time.monotonic()
    time.sleep(ALONE_S)
    start = time.monotonic()
    alone = trainer.rate(warm, start)
    seconds = segment_seconds(work / f"seg_{name}", seg_t)
    end = time.monotonic()
    trainer.stop()
    return {"setting": name, "train_threads": train_t, "segment_threads": seg_t, "segment_s": seconds,
            "train_it_s_during_segment": trainer.rate(start, end), "train_it_s_alone": alone}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", default=["alone", "default", "split"], choices=["alone", "default", "split"],
                   help="settings in the order run (repeat one to see the noise)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    cores = available_cores()
    split_train = train_threads(cores)
    split_segment = job_threads("segment", {"train": SimpleNamespace(threads=split_train)}, cores)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dtc-two-jobs-") as tmp:
        work = Path(tmp)
        manifest = synthetic_manifest(work / "data")
        for n, mode in enumerate(args.modes):
            if mode == "alone":
                rows.append({"setting": "alone", "segment_threads": None,
                             "segment_s": segment_seconds(work / f"seg_alone{n}", None)})
            elif mode == "default":
                rows.append(one_setting(work, manifest, f"default{n}", None, None) | {"setting": "default"})
            else:
                rows.append(one_setting(work, manifest, f"split{n}", split_train, split_segment) | {"setting": "split"})
    result = {"cores": cores, "cpu": common.device_name("cpu"), "rows": rows}
    mean = {s: float(np.mean([r["segment_s"] for r in rows if r["setting"] == s])) for s in set(args.modes)}
    if "default" in mean and "split" in mean:
        result["segment_speedup_split_vs_default"] = round(mean["default"] / mean["split"], 2)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
