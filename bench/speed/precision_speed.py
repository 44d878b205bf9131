"""CPU speed of the training step and of inference: fp32 against bf16 and the other levers, one run.

    python bench/speed/precision_speed.py [--model DTCCore/models/default.pt] [--image SCAN] [--threads 1]
                                          [--rounds 3] [--steps 3] [--variants fp32,bf16,cl,compile] [--json F]

Training: the bundled model's plan (48x48x32 patch, base 16), one SGD step = forward, the DTC losses,
backward and the SGD update, on random crops of the right shapes: a DTC step has 4 crops (2 labeled +
2 unlabeled), a labeled-only step 2. Inference: ``predict_volume`` of the model on one scan (default the
bundled LA sample case, a test.list case), with and without test-time mirroring, and MONAI's
``sliding_window_inference`` on the same work (same resampling, one pass, gaussian blend, fp32).

Variants (all fp32 unless named): ``fp32``; ``bf16`` (autocast; emulated where the CPU has no native bf16);
``cl`` (channels_last_3d input and weights for training; inference always uses it); ``compile``
(``torch.compile`` of the network; its first call, the compile time, is reported separately).
The variants run in alternating rounds (round-robin, ``--rounds`` times) so a change of machine load hits
all alike; the median per variant and its ratio to fp32 are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common

SAMPLE = common.REPO / "DTCCore" / "sample" / "la_sample_image.nrrd"


def training_step(model, optimizer, batch: int, patch, dtype, channels_last: bool) -> float:
    """Seconds for one SGD step on ``batch`` random crops (the first half labeled)."""
    from DTCCore.config import RecipeConfig
    from DTCCore.model.losses import compute_losses

    x = torch.randn(batch, 1, *patch)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    labeled = batch if batch == 2 else batch // 2  # DTC: 2 labeled + 2 unlabeled; labeled-only: 2 labeled
    label = (torch.rand(labeled, *patch) > 0.8).long()
    sdf = torch.rand(labeled, 1, *patch) * 2 - 1
    recipe = RecipeConfig()
    if batch == 2:
        recipe.mode = "seg"
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        seg, lsf = model(x)
    losses = compute_losses(seg.float(), lsf.float(), label, sdf, labeled, 3000, recipe)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    return time.perf_counter() - t0


def inference_seconds(model, config, image, spacing, precision: str, mirror: bool) -> float:
    from DTCCore.inference.predict import predict_volume

    config.infer.precision, config.infer.tta = precision, mirror
    t0 = time.perf_counter()
    predict_volume(model, image, config, torch.device("cpu"), spacing=spacing)
    return time.perf_counter() - t0


def monai_seconds(model, config, image, spacing) -> float:
    sys.path.insert(0, str(Path(__file__).parent))
    from speed_worker import run_monai

    t0 = time.perf_counter()
    run_monai(model.eval(), image, config, torch.device("cpu"), False, spacing)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    p.add_argument("--image", type=Path, default=SAMPLE)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="training steps timed per variant and round")
    p.add_argument("--variants", default="fp32,bf16,cl,compile")
    p.add_argument("--tiny", action="store_true", help="base 2, 16x16x16 crops, 1 round (smoke test)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from DTCCore.data.images import read_image
    from DTCCore.model.checkpoint import load_model
    from DTCCore.model.network import build_network
    from DTCCore.runtime.precision import cpu_native_bf16

    variants = args.variants.split(",")
    net_model, config = load_model(args.model, torch.device("cpu"))
    patch = (16, 16, 16) if args.tiny else tuple(config.train.patch)
    if args.tiny:
        config.network.base_filters, args.rounds, args.steps = 2, 1, 1
    image, geometry = read_image(args.image)
    if args.tiny:
        image = image[:64, :64, :40]  # one window at the model's grid
    result: dict = {"machine": common.device_name("cpu"), "native_bf16": cpu_native_bf16(),
                    "threads": args.threads, "patch": list(patch), "variants": variants, "train": {}, "infer": {}}
    print(f"{result['machine']}; native bf16: {result['native_bf16']}", file=sys.stderr)

    nets, compile_s = {}, {}
    for v in variants:
        torch.manual_seed(0)
        net = build_network(config.network).train()
        if v == "cl":
            net = net.to(memory_format=torch.channels_last_3d)
        if v == "compile":
            net = torch.compile(net)
            t0 = time.perf_counter()
            training_step(net, torch.optim.SGD(net.parameters(), lr=0.01), 4, patch, None, False)
            compile_s[v] = time.perf_counter() - t0
        nets[v] = (net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9))
        training_step(*nets[v], 2, patch, torch.bfloat16 if v == "bf16" else None, v == "cl")  # warm-up
    times: dict = {f"{kind} {v}": [] for kind in ("dtc", "seg") for v in variants}
    for r in range(args.rounds):
        for v in variants:
            net, opt = nets[v]
            for kind, batch in (("dtc", 4), ("seg", 2)):
                for _ in range(args.steps):
                    times[f"{kind} {v}"].append(training_step(net, opt, batch, patch,
                                                              torch.bfloat16 if v == "bf16" else None, v == "cl"))
        print(f"training round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    for key, values in times.items():
        result["train"][key] = {"ms": 1000 * statistics.median(values)}
    result["compile_s"] = compile_s

    infer_variants = [("fp32", False), ("fp32", True)]
    if "bf16" in variants:
        infer_variants += [("bf16", False), ("bf16", True)]
    if args.tiny:  # emulated bf16 with mirroring takes minutes on a CPU without native bf16
        infer_variants = [v for v in infer_variants if not (v[0] == "bf16" and v[1])]
    inference_seconds(net_model, config, image, geometry.spacing, "fp32", False)  # warm-up (first-call costs)
    monai_seconds(net_model, config, image, geometry.spacing)  # warm-up (MONAI's imports)
    inf: dict = {f"{p_} {'mirror' if m else 'one pass'}": [] for p_, m in infer_variants}
    inf["monai fp32 one pass"] = []
    for r in range(args.rounds):
        for p_, m in infer_variants:
            inf[f"{p_} {'mirror' if m else 'one pass'}"].append(
                inference_seconds(net_model, config, image, geometry.spacing, p_, m))
        inf["monai fp32 one pass"].append(monai_seconds(net_model, config, image, geometry.spacing))
        print(f"inference round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    for key, values in inf.items():
        result["infer"][key] = {"s": statistics.median(values)}

    rows = []
    for kind in ("dtc", "seg"):
        base = result["train"][f"{kind} fp32"]["ms"]
        for v in variants:
            ms = result["train"][f"{kind} {v}"]["ms"]
            rows.append([f"train step, {'DTC (4 crops)' if kind == 'dtc' else 'labeled-only (2 crops)'}", v,
                         round(ms), round(base / ms, 2)])
    base = result["infer"]["fp32 one pass"]["s"]
    for key, value in result["infer"].items():
        rows.append(["inference, one case", key, round(value["s"], 2), round(base / value["s"], 2)])
    print(common.markdown_table(["what", "variant", "ms / s (median)", "speed-up vs fp32"], rows))
    if compile_s:
        print(f"torch.compile: first step (compile) {compile_s['compile']:.1f} s")
    if args.json:
        common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
