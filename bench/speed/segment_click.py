"""Click to result: Segment of the bundled sample from ``logic.startSegment`` to the result nodes in the scene,
today's one-shot engine process against the spare started in advance (issue 41), in one run.

    QT_QPA_PLATFORM=offscreen python bench/speed/segment_click.py [--clicks 4] [--data FOLDER --cases 20] [--json F]

The module's real Logic on the real MRML of the test harness (``Testing/slicer_harness``), as the panel's
Segment button calls it: ``startSegment`` (the scan written for the engine, the engine process started or
handed its command), the job's end, ``writeResults`` (segmentation, level set and disagreement nodes).
Arms, interleaved click by click so that a loaded machine slows them alike:

- ``one-shot, float32 copy``: today's path: a cold ``python -m DTCCore segment`` per click, the scan written
  as before this issue (two copies, float32, uncompressed);
- ``one-shot``: a cold process, the scan in its own voxel type straight from the node's array;
- ``spare``: the same, run by the spare process (``jobs/spare.py``). Its first click comes right after the
  spare was started (the module just entered: the spare is still importing); before each following click the
  bench waits until the next spare is ready, as a user looking at the result would (the wait is reported).

Also measured: writing the scan (float32 copy, own type, own type zlib-compressed) plus reading it back as the
engine does (``read_image``), which decides ``sceneio.SCAN_COMPRESSION``. ``--data``: also a loop over LA cases
(``<data>/<case>/image.nrrd`` of ``test.list``), one click per case of today's path and of the spare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers
from common import REPO, markdown_table, read_list, write_json  # noqa: E402

sys.path.insert(0, str(REPO / "Testing"))
READY_TIMEOUT_S = 300.0  # a spare's imports on a loaded machine
JOB_TIMEOUT_S = 900.0
IO_REPEATS = 5  # scan write + read repetitions per variant (the median is reported)
ARMS = ("one-shot, float32 copy", "one-shot", "spare")
LOOP_ARMS = (ARMS[0], ARMS[2])  # the LA loop: today's path against the spare (the scan's I/O is the sample's)


def legacy_write(volume, path) -> None:
    """How ``startSegment`` wrote the scan before issue 41: an (X, Y, Z) float32 copy, then write_image's copy."""
    from DTCCore.data.images import write_image
    from DTCSegmentationLib import sceneio

    image, geometry = sceneio.volume_to_array(volume)
    write_image(path, image, geometry, compress=False)


def load_volume(path: Path, name: str):
    import slicer

    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(volume):
        raise SystemExit(f"error: cannot read {path}")
    return volume


def click(logic, volume, arm: str, sceneio, own_write) -> dict:
    """One Segment, start to result nodes; seconds and where they went."""
    sceneio.write_volume_file = legacy_write if arm == ARMS[0] else own_write
    t0 = time.perf_counter()
    job = logic.startSegment(volume, device="cpu")
    started = time.perf_counter()
    events = job.wait(JOB_TIMEOUT_S)
    if job.state != "done":
        raise SystemExit(f"error: Segment {job.state}: {job.error}")
    ended = time.perf_counter()
    logic.writeResults(volume, job.result, job.labels)
    t1 = time.perf_counter()
    engine = next(e["seconds"] for e in events if e["event"] == "case-done")
    return {"arm": arm, "seconds": t1 - t0, "start_s": started - t0, "nodes_s": t1 - ended,
            "engine_case_s": engine, "warm": bool(getattr(job.runner, "warm", False))}


def scan_io(volume) -> list[list]:
    """Median seconds to write the scan and read it back as the engine does, per variant."""
    from DTCCore.data.images import read_image
    from DTCSegmentationLib import sceneio

    variants = {"float32 copy, raw (before)": legacy_write,
                "own type, raw": lambda v, p: sceneio.write_volume_file(v, p, compress=False),
                "own type, zlib": lambda v, p: sceneio.write_volume_file(v, p, compress=True)}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, write in variants.items():
            writes, reads = [], []
            for i in range(IO_REPEATS):
                path = Path(folder) / f"scan{i}.nrrd"
                t0 = time.perf_counter()
                write(volume, path)
                t1 = time.perf_counter()
                read_image(path)
                writes.append(t1 - t0)
                reads.append(time.perf_counter() - t1)
            size = path.stat().st_size / 1e6
            rows.append([name, f"{size:.2f}", f"{statistics.median(writes):.3f}", f"{statistics.median(reads):.3f}",
                         f"{statistics.median(writes) + statistics.median(reads):.3f}"])
    return rows


def run(args: argparse.Namespace) -> dict:
    from slicer_harness import scene
    from slicer_harness.fixtures import MODULE_FILE

    scene.new_scene()
    module = scene.import_module_file(MODULE_FILE)
    from DTCSegmentationLib import sceneio

    own_write = sceneio.write_volume_file
    volume = load_volume(REPO / "DTCCore" / "sample" / "la_sample_image.nrrd", "DTCLeftAtriumMRI")
    cold = module.DTCSegmentationLogic()
    warm = module.DTCSegmentationLogic()
    clicks: list[dict] = []
    try:
        for arm in ARMS:  # first clicks: the spare arm's right after the spare was started
            logic = warm if arm == "spare" else cold
            if arm == "spare":
                warm.spare.start(warm.modelFile(""))  # as the panel's enter(): the chosen model, the bundled one
            clicks.append({**click(logic, volume, arm, sceneio, own_write), "click": 1, "case": "sample"})
            print(clicks[-1], flush=True)
        for n in range(2, args.clicks + 1):
            for arm in ARMS:
                logic, waited = (warm if arm == "spare" else cold), 0.0
                if arm == "spare":
                    t = time.perf_counter()
                    if not warm.spare.wait_ready(READY_TIMEOUT_S):
                        raise SystemExit("error: the spare did not get ready")
                    waited = time.perf_counter() - t
                clicks.append({**click(logic, volume, arm, sceneio, own_write), "click": n, "case": "sample",
                               "waited_for_spare_s": waited})
                print(clicks[-1], flush=True)
        if args.data:
            for case in read_list(Path(args.data), "test.list")[: args.cases]:
                case_volume = load_volume(Path(args.data) / case / "image.nrrd", case)
                for arm in LOOP_ARMS:
                    if arm == "spare" and not warm.spare.wait_ready(READY_TIMEOUT_S):
                        raise SystemExit("error: the spare did not get ready")
                    clicks.append({**click(warm if arm == "spare" else cold, case_volume, arm, sceneio, own_write),
                                   "click": 0, "case": case})
                    print(clicks[-1], flush=True)
    finally:
        sceneio.write_volume_file = own_write
        warm.spare.stop()
    return {"clicks": clicks, "scan_io": scan_io(volume), "load": os.getloadavg(), "cpus": os.cpu_count()}


def report(result: dict) -> str:
    clicks = result["clicks"]

    def seconds(arm, first, case="sample"):
        return [c["seconds"] for c in clicks if c["arm"] == arm and c["case"] == case and (c["click"] == 1) == first]

    def engine(arm, first):
        return [c["engine_case_s"] for c in clicks if c["arm"] == arm and c["case"] == "sample"
                and (c["click"] == 1) == first]

    def overhead(arm, first):  # the click less the engine's own segmenting: what the spare can save
        return [c["seconds"] - c["engine_case_s"] for c in clicks if c["arm"] == arm and c["case"] == "sample"
                and (c["click"] == 1) == first]

    base = statistics.median(seconds(ARMS[0], False))
    base_overhead = statistics.median(overhead(ARMS[0], False))
    rows = []
    for arm in ARMS:
        following = seconds(arm, False)
        rows.append([arm, f"{seconds(arm, True)[0]:.2f}", " / ".join(f"{s:.2f}" for s in following),
                     f"{statistics.median(following):.2f}", f"{statistics.median(following) / base:.2f}",
                     f"{statistics.median(engine(arm, False)):.2f}", f"{overhead(arm, True)[0]:.2f}",
                     f"{statistics.median(overhead(arm, False)):.2f}",
                     f"{statistics.median(overhead(arm, False)) / base_overhead:.2f}"])
    text = markdown_table(["arm", "first click s", "following clicks s", "median", "x today",
                           "engine's segmenting s (median)", "first click less segmenting s",
                           "following, less segmenting s (median)", "x today"], rows)
    waits = [c.get("waited_for_spare_s", 0.0) for c in clicks if c["arm"] == "spare" and c["click"] > 1]
    text += f"\n\nwaited for the next spare before a following click: {' / '.join(f'{w:.2f}' for w in waits)} s"
    text += "\n\n" + markdown_table(["scan written as", "MB", "write s", "engine read s", "end to end s"],
                                     result["scan_io"])
    cases = sorted({c["case"] for c in clicks if c["case"] != "sample"})
    if cases:
        loop = {arm: [c for c in clicks if c["arm"] == arm and c["case"] != "sample"] for arm in LOOP_ARMS}
        today = statistics.median(c["seconds"] for c in loop[ARMS[0]])
        today_overhead = statistics.median(c["seconds"] - c["engine_case_s"] for c in loop[ARMS[0]])
        rows = []
        for arm in LOOP_ARMS:
            median = statistics.median(c["seconds"] for c in loop[arm])
            overhead = statistics.median(c["seconds"] - c["engine_case_s"] for c in loop[arm])
            rows.append([arm, f"{median:.2f}", f"{median / today:.2f}", f"{overhead:.2f}",
                         f"{overhead / today_overhead:.2f}"])
        text += f"\n\n{len(cases)} LA cases, one click per arm and case:\n\n" + markdown_table(
            ["arm", "median s", "x today", "less segmenting s (median)", "x today"], rows)
    text += f"\n\nload average at the end: {' '.join(f'{v:.1f}' for v in result['load'])} on {result['cpus']} cores"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=4, help="clicks per arm on the sample (>= 2)")
    parser.add_argument("--data", help="LA2018 folder (test.list, <case>/image.nrrd): also the LA loop")
    parser.add_argument("--cases", type=int, default=20, help="LA cases of --data")
    parser.add_argument("--json", help="write every click's numbers here")
    args = parser.parse_args()
    if args.clicks < 2:
        parser.error("--clicks: at least 2 (the first click and a following one)")
    result = run(args)
    if args.json:
        write_json(args.json, result)
    print(report(result))


if __name__ == "__main__":
    main()
