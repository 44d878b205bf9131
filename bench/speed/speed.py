"""Whole-volume inference speed: ours vs MONAI vs the reference loop, one run, same machine.

    python bench/speed/speed.py --cpu [--data DIR] [--case NAME | --image FILE] [--model M] [--repeats 2] [--json F]
    python bench/speed/speed.py [--device cuda] [--model M] [--train] [--json F]       # GPU mode
    python bench/speed/speed.py --tiny [--cpu]                                           # smoke test (seconds)

Every method runs in its own child process (``bench/speed/speed_worker.py``: peak RSS and GPU memory are its
own), and the repetitions alternate between methods (round 1: ours, ours-whole, MONAI, reference;
round 2: ...) so that load from other work on the machine hits all of them alike.

--cpu   one LA case (default the first of test.list), the full default network (base 16, patch
        112x112x80), 50% overlap, fp32, timed file to file (model load + read + z-score + inference +
        the 3 NRRD outputs), cold in a fresh process. Without --model a random-initialised network is
        used: speed does not depend on the weights.
GPU     random 576x576x88 and 320x320x240 volumes, timed array to arrays after a warm-up (z-score +
        inference + label/level set/disagreement on the host): ours bf16/fp32, MONAI bf16/fp32, the
        reference loop fp32 (``--reference-windows N`` times the first N windows and extrapolates);
        ``--train`` adds ``bench/speed/train_speed.py`` (our iteration vs a reference-mode iteration).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common

HERE = Path(__file__).resolve().parent
GPU_SHAPES = ((576, 576, 88), (320, 320, 240))  # a whole LA MRI, an abdomen CT


def run_worker(args: list[str], timeout: float) -> dict:
    """Run ``speed_worker.py`` with ``args`` in a child process; its JSON line plus the process wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "speed_worker.py"), *args], capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: worker {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


def summarize(runs: dict[str, list[dict]], baseline: str) -> list[dict]:
    """Median seconds per method and ratios to ``baseline``."""
    rows = []
    for key, results in runs.items():
        seconds = [s for r in results for s in r["seconds"]]
        rows.append({
            "method": key, "median_s": statistics.median(seconds), "all_s": seconds,
            "process_s": statistics.median(r["process_s"] for r in results),
            "windows": results[0]["windows"], "extrapolated": results[0]["extrapolated"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "peak_gpu_mb": max((r["peak_gpu_mb"] or 0.0) for r in results) or None,
        })
    base = next((r["median_s"] for r in rows if r["method"] == baseline), None)
    for r in rows:
        r["x_slower_than_" + baseline] = r["median_s"] / base if base else None
    return rows


def table(rows: list[dict], baseline: str, gpu: bool) -> str:
    header = ["method", "windows", "median s", f"x {baseline}", "process s" if not gpu else "peak GPU MB",
              "peak RSS MB"]
    body = []
    for r in rows:
        name = r["method"] + (" (extrapolated)" if r["extrapolated"] else "")
        body.append([name, r["windows"], r["median_s"], r["x_slower_than_" + baseline],
                     r["peak_gpu_mb"] if gpu else r["process_s"], r["peak_rss_mb"]])
    return common.markdown_table(header, body)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="one LA case on the CPU, file to file")
    p.add_argument("--tiny", action="store_true", help="minuscule volumes and network (smoke test)")
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    p.add_argument("--case", help="case of --data (default: the first of test.list)")
    p.add_argument("--image", type=Path, help="any image file instead of an LA case")
    p.add_argument("--model", type=Path, help="a model.pt (default: random initialisation)")
    p.add_argument("--device", default=None, help="GPU mode device (default cuda)")
    p.add_argument("--repeats", type=int, default=None, help="rounds (CPU default 2; GPU: timed runs per process, 3)")
    p.add_argument("--methods", default=None, help="comma list of ours,ours-whole,ours-no-mirror,monai,reference")
    p.add_argument("--reference-windows", type=int, default=None, help="GPU: reference windows timed (default 400)")
    p.add_argument("--reference-rounds", type=int, default=None,
                   help="CPU: rounds that include the reference (default all)")
    p.add_argument("--train", action="store_true", help="GPU mode: also time training iterations (train_speed.py)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    tmp = Path(tempfile.mkdtemp(prefix="dtc-speed-bench-"))
    base, patch = (2, (16, 16, 16)) if args.tiny else (16, (112, 112, 80))
    model = args.model or common.random_model_file(tmp / "random.pt", base, patch)
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": str(args.model or "random init"),
                 "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}
    if args.cpu:
        out.update(cpu_mode(args, model, tmp))
    else:
        if args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else None
        if args.device is None:
            raise SystemExit("error: no CUDA GPU here; run GPU mode on a GPU machine, or use --cpu (or --device cpu)")
        out.update(gpu_mode(args, model))
        if args.json:  # written now too, in case the training part is cut short
            common.write_json(args.json, out)
        if args.train:
            import train_speed

            targs = ["--device", args.device, "--data", str(args.data)] + (["--tiny"] if args.tiny else [])
            out["train"] = train_speed.main(targs)
    if args.json:
        common.write_json(args.json, out)
    return out


def cpu_mode(args, model: Path, tmp: Path) -> dict:
    if args.tiny:
        from synthetic_la import synthetic_data

        image = synthetic_data(tmp / "data", 1, 0, shape=(40, 36, 24)) / "case00" / "image.nrrd"
    elif args.image is not None:
        image = args.image
    else:
        case = args.case or common.read_list(args.data, "test.list")[0]
        image = common.case_files(args.data, case)[0]
    methods = (args.methods or "ours,ours-whole,monai,reference").split(",")
    repeats = args.repeats or (1 if args.tiny else 2)
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for r in range(repeats):
        for m in methods:
            if m == "reference" and args.reference_rounds is not None and r >= args.reference_rounds:
                continue  # the slow loop: timed in the first rounds only (its rounds are counted per method)
            res = run_worker([m, "--model", str(model), "--image", str(image), "--device", "cpu", "--io", "file"],
                             args.timeout)
            runs[m].append(res)
            print(f"round {r + 1}/{repeats} {m}: {res['seconds'][0]:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MB",
                  file=sys.stderr, flush=True)
    rows = summarize(runs, "ours")
    print(f"\n## CPU, one case ({image}), {common.device_name('cpu')}\n")
    print("Seconds: file to file (model load + read + z-score + inference + 3 NRRD outputs), median of "
          f"{repeats} alternating rounds (reference: {len(runs.get('reference', []))}); process s includes Python "
          "start-up and imports.\n")
    print(table(rows, "ours", gpu=False))
    return {"mode": "cpu", "image": str(image), "device": common.device_name("cpu"), "repeats": repeats,
            "results": rows}


def gpu_mode(args, model: Path) -> dict:
    shapes = ((40, 36, 24),) if args.tiny else GPU_SHAPES
    repeats = args.repeats or (1 if args.tiny else 3)
    ref_windows = args.reference_windows if args.reference_windows is not None else (3 if args.tiny else 400)
    cuda = args.device.startswith("cuda")
    methods = [("ours bf16", "ours", True), ("ours fp32", "ours", False), ("monai bf16", "monai", True),
               ("monai fp32", "monai", False), ("reference fp32", "reference", False)]
    if not cuda:  # bf16 is a GPU setting; on a CPU device (tiny tests) everything is fp32
        methods = [m for m in methods if not m[2]]
    import importlib.util

    if importlib.util.find_spec("monai") is None:  # the GPU machine's image may lack it
        print("MONAI is not installed: its rows are left out (pack its wheel: device-pack.sh --wheels)",
              file=sys.stderr)
        methods = [m for m in methods if m[1] != "monai"]
    if args.methods:
        keep = args.methods.split(",")
        methods = [m for m in methods if m[1] in keep]
    results = {}
    for shape in shapes:
        runs: dict[str, list[dict]] = {}
        for name, method, amp in methods:
            wargs = [method, "--model", str(model), "--shape", *map(str, shape), "--device", args.device,
                     "--io", "memory", "--repeats", str(repeats if method != "reference" else 1), "--warmup", "1",
                     "--reference-windows", str(ref_windows)] + (["--amp"] if amp else [])
            runs[name] = [run_worker(wargs, args.timeout)]
            print(f"{shape} {name}: {runs[name][0]['seconds']}", file=sys.stderr, flush=True)
        baseline = "ours bf16" if cuda else "ours fp32"
        rows = summarize(runs, baseline)
        key = "x".join(map(str, shape))
        results[key] = rows
        print(f"\n## {key} random volume on {common.device_name(args.device)}\n")
        print("Seconds: in-memory volume -> label, level set and disagreement on the host, after 1 warm-up; "
              "median of the timed runs.\n")
        print(table(rows, baseline, gpu=cuda))
    return {"mode": "gpu", "device": common.device_name(args.device), "volumes": results}


if __name__ == "__main__":
    main()
