"""One timed inference method in its own process (so that peak RSS / GPU memory belong to it alone).

    python bench/speed/speed_worker.py METHOD --model M (--image FILE | --shape X Y Z) [options]

METHOD:
  ours        DTCCore: ``dtc segment`` in-process (file mode) or ``predict_volume`` (memory mode)
  ours-whole  the same with ``--whole-volume`` (one forward pass over the padded volume)
  ours-no-mirror  the same with ``--no-mirror`` (no test-time mirroring even if the model has it on)
  monai       MONAI ``sliding_window_inference`` (same network, patch, overlap, Gaussian blend, 4 windows a pass)
  reference   the DTC reference loop (test_util.test_single_case): stride 18x18x4, one window at a time,
              uniform average accumulated in NumPy on the host

What is timed:
  --io file    (CPU default) model load + read + z-score + windows + label/level set/disagreement + write
               the 3 NRRD outputs, cold, once per process: what a user of ``dtc segment`` waits for;
  --io memory  (GPU default) z-score of an in-memory volume -> the 3 outputs as host arrays; the model
               is loaded and ``--warmup`` untimed runs are made first (cuDNN autotuning, CUDA context).
Prints one JSON line: method, seconds (list), windows, extrapolated, peak_rss_mb, peak_gpu_mb.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common  # noqa: F401  (puts the repo on sys.path)

REFERENCE_STRIDE = (18, 18, 4)  # reference test_LA.py: stride_xy=18, stride_z=4
MONAI_WINDOWS_PER_PASS = 4  # as our default batch_windows (and MONAI's 0.62 s whole-LA-MRI figure on an H200)


def finish(seg_prob: np.ndarray, lsf: np.ndarray, k: float) -> dict[str, np.ndarray]:
    """(X, Y, Z) probability and level set -> the three outputs ``dtc segment`` writes."""
    from DTCCore.model.levelset import inverse_transform

    return {
        "seg": (seg_prob > 0.5).astype(np.uint8),  # reference: probability > 0.5
        "levelset": lsf.astype(np.float32, copy=False),
        "disagreement": np.abs(seg_prob - np.asarray(inverse_transform(lsf, k), np.float32)),
    }


def run_monai(model, image: np.ndarray, config, device: torch.device, amp: bool, spacing=None) -> tuple[dict, int]:
    """MONAI's sliding window in place of ours; for a model with a plan spacing the scan is resampled to it
    and the outputs back with the engine's own functions, so only the window inference differs."""
    from monai.inferers import sliding_window_inference

    from DTCCore.data.intensity import normalize
    from DTCCore.data.resample import needs_resampling, resize_linear, target_shape

    patch = tuple(config.train.patch)
    full_shape = image.shape
    resample = spacing is not None and needs_resampling(spacing, config.plan.spacing)
    if resample:
        image = resize_linear(image, target_shape(image.shape, spacing, config.plan.spacing))
    x = torch.from_numpy(np.ascontiguousarray(normalize(image)))[None, None].to(device)

    def predictor(w: torch.Tensor):
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
        with ctx:
            seg, lsf = model(w)
        return torch.sigmoid(seg.float()), lsf.float()

    with torch.inference_mode():
        seg, lsf = sliding_window_inference(
            x, patch, MONAI_WINDOWS_PER_PASS, predictor, overlap=config.infer.overlap, mode="gaussian",
            sigma_scale=0.125, padding_mode="constant", cval=0.0)
    size = [max(d, p) for d, p in zip(image.shape, patch)]
    n = math.prod(math.ceil((d - p) / int(p * (1 - config.infer.overlap))) + 1 for d, p in zip(size, patch))
    seg_prob, lsf_out = seg[0, 0].cpu().numpy(), lsf[0, 0].cpu().numpy()
    if resample:
        seg_prob, lsf_out = resize_linear(seg_prob, full_shape), resize_linear(lsf_out, full_shape)
    return finish(seg_prob, lsf_out, config.recipe.k), n


def run_reference(model, image: np.ndarray, config, device: torch.device, limit: int) -> tuple[dict, int, int]:
    """The reference loop; with ``limit`` > 0 only the first ``limit`` windows run (caller extrapolates)."""
    from DTCCore.data.intensity import normalize

    patch = tuple(config.train.patch)
    image = normalize(image)
    w, h, d = image.shape
    pads = [max(p - s, 0) for s, p in zip(image.shape, patch)]
    if any(pads):  # reference: pad with constant 0, pad // 2 before
        image = np.pad(image, [(p // 2, p - p // 2) for p in pads])
    ww, hh, dd = image.shape
    sx, sy, sz = (math.ceil((s - p) / st) + 1 for s, p, st in zip(image.shape, patch, REFERENCE_STRIDE))
    score_map = np.zeros((1,) + image.shape, np.float32)
    lsf_map = np.zeros((1,) + image.shape, np.float32)
    cnt = np.zeros(image.shape, np.float32)
    total, done = sx * sy * sz, 0
    with torch.no_grad():
        for x in range(sx):
            xs = min(REFERENCE_STRIDE[0] * x, ww - patch[0])
            for y in range(sy):
                ys = min(REFERENCE_STRIDE[1] * y, hh - patch[1])
                for z in range(sz):
                    if limit and done >= limit:
                        break
                    zs = min(REFERENCE_STRIDE[2] * z, dd - patch[2])
                    win = image[xs:xs + patch[0], ys:ys + patch[1], zs:zs + patch[2]]
                    t = torch.from_numpy(np.ascontiguousarray(win)[None, None]).to(device)
                    seg, lsf = model(t)
                    y1 = torch.sigmoid(seg).cpu().numpy()[0]
                    score_map[:, xs:xs + patch[0], ys:ys + patch[1], zs:zs + patch[2]] += y1
                    lsf_map[:, xs:xs + patch[0], ys:ys + patch[1], zs:zs + patch[2]] += lsf.cpu().numpy()[0]
                    cnt[xs:xs + patch[0], ys:ys + patch[1], zs:zs + patch[2]] += 1
                    done += 1
    cnt = np.maximum(cnt, 1)  # only matters for a partial (limited) run
    score_map /= cnt[None]
    lsf_map /= cnt[None]
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, (w, h, d)))
    return finish(score_map[0][crop], lsf_map[0][crop], config.recipe.k), total, done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=("ours", "ours-whole", "ours-no-mirror", "monai", "reference"))
    p.add_argument("--model", required=True)
    p.add_argument("--image")
    p.add_argument("--shape", type=int, nargs=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--io", choices=("file", "memory"), default="file")
    p.add_argument("--amp", action="store_true",
                   help="bf16 autocast (else fp32; emulated, slow, on CPUs without native bf16)")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--reference-windows", type=int, default=0,
                   help="time only this many reference windows and extrapolate")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from DTCCore.data.images import read_image, write_image
    from DTCCore.inference.predict import predict_volume
    from DTCCore.model.checkpoint import load_model

    device = torch.device(args.device)
    out_dir = Path(tempfile.mkdtemp(prefix="dtc-speed-"))
    if args.image is None:  # a random volume (speed does not depend on the content)
        image = np.random.default_rng(0).normal(100.0, 20.0, tuple(args.shape)).astype(np.float32)
    result = {"method": args.method, "seconds": [], "windows": 0, "extrapolated": False}

    # Imports are not timed (a user's process has them once): every module any method uses, loaded now.
    import tqdm  # noqa: F401

    import DTCCore.cli  # noqa: F401
    import DTCCore.inference.postprocess  # noqa: F401
    import DTCCore.model.levelset  # noqa: F401
    import DTCCore.training.batches  # noqa: F401
    if args.method == "monai":
        import monai.inferers  # noqa: F401
    loaded = load_model(args.model, device) if args.io == "memory" else None  # memory mode: not timed

    def once(timed: bool) -> None:
        t0 = time.perf_counter()
        if args.io == "file" and args.method.startswith("ours"):
            from DTCCore.cli import main as dtc

            argv = ["segment", args.image, "-o", str(out_dir), "--model", args.model, "--device", args.device,
                    "--overlap", str(args.overlap), "--overwrite", "--precision", "bf16" if args.amp else "fp32"]
            argv += ["--whole-volume"] if args.method == "ours-whole" else []
            argv += ["--no-mirror"] if args.method == "ours-no-mirror" else []
            if dtc(argv) != 0:
                raise SystemExit(f"dtc segment failed on {args.image}")
        else:
            model, config = loaded if loaded is not None else load_model(args.model, device)
            config.infer.overlap = args.overlap
            config.infer.precision = "bf16" if args.amp else "fp32"
            if args.io == "file":
                img, geometry = read_image(args.image)
            else:
                img, geometry = image, None
            spacing = geometry.spacing if geometry is not None else config.plan.spacing
            if args.method.startswith("ours"):
                config.infer.whole_volume = args.method == "ours-whole"
                if args.method == "ours-no-mirror":
                    config.infer.tta = False
                pred = predict_volume(model, img, config, device, spacing=spacing)
                outputs = {"seg": pred.label, "levelset": pred.levelset, "disagreement": pred.disagreement}
            elif args.method == "monai":
                outputs, result["windows"] = run_monai(model, img, config, device, args.amp, spacing)
            else:
                outputs, total, done = run_reference(model, img, config, device, args.reference_windows if timed else 4)
                result["windows"], result["windows_run"] = total, done
            if device.type == "cuda":
                torch.cuda.synchronize()
            if geometry is not None:
                for kind, arr in outputs.items():
                    write_image(out_dir / f"{kind}.nrrd", arr, geometry)
        dt = time.perf_counter() - t0
        if timed:
            if args.method == "reference" and result.get("windows_run", 0) < result["windows"]:
                dt *= result["windows"] / result["windows_run"]  # extrapolated to the whole loop
                result["extrapolated"] = True
            result["seconds"].append(dt)

    for _ in range(args.warmup):
        once(False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.repeats):
        once(True)
    if args.method.startswith("ours") and not result["windows"]:
        result["windows"] = count_our_windows(args, image if args.image is None else None)
    from common import peak_rss_mb

    result["peak_rss_mb"] = peak_rss_mb()
    result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    print(json.dumps(result), flush=True)
    return 0


def count_our_windows(args, image) -> int:
    """Windows our sliding window runs on this volume (1 for --whole-volume when it fits)."""
    from DTCCore.inference.sliding_window import strides_from_overlap, window_starts
    from DTCCore.model.checkpoint import load_checkpoint

    config = load_checkpoint(args.model)["config"]
    if args.method == "ours-whole" or config.infer.whole_volume:
        return 1
    shape = image.shape if image is not None else _image_shape(args.image)
    if config.plan.spacing is not None and image is None:  # a plan model runs on its own grid
        import SimpleITK as sitk

        from DTCCore.data.resample import target_shape

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(args.image))
        reader.ReadImageInformation()
        shape = target_shape(shape, reader.GetSpacing(), config.plan.spacing)
    patch = config.train.patch
    stride = strides_from_overlap(patch, args.overlap)
    return math.prod(len(window_starts(max(d, p), p, s)) for d, p, s in zip(shape, patch, stride))


def _image_shape(path: str) -> tuple[int, int, int]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return tuple(reader.GetSize())  # (x, y, z)


if __name__ == "__main__":
    sys.exit(main())
