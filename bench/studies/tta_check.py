"""Test-time mirroring (``dtc segment --mirror``) against plain inference: Dice and seconds per case.

    python bench/studies/tta_check.py [MODEL] --data ../shared/data/la2018 --cases CASE... [--threads 1] [--json F]

MODEL defaults to the bundled model. Each case is segmented twice by the same process, plain and with
``infer.tta`` (the flips, or a no-mirror model's turns, it was trained with), alternating so that
both see the same machine load; Dice (%, MedPy dc) without post-processing and the inference seconds
are printed per case, with the means and the median time ratio. Use validation cases (never test.list
to choose a setting).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common
from la_eval import evaluate


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, nargs="?", help="model.pt (default: the bundled model)")
    p.add_argument("--data", type=Path, required=True, help="LA2018-style folder: <case>/image.nrrd, label.nrrd")
    p.add_argument("--cases", nargs="+", required=True, help="case folder names")
    p.add_argument("--whole-volume", action="store_true", help="one pass per volume instead of windows")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch's default)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    from DTCCore.inference.tta import tta_flip_axes, tta_turns
    from DTCCore.model.checkpoint import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, config = load_model(args.model, "cpu")
    config.infer.largest_component = False
    config.infer.whole_volume = bool(args.whole_volume)
    quiet = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    rows = {False: [], True: []}
    for case in args.cases:
        for mirror in (False, True):
            config.infer.tta = mirror
            rows[mirror] += evaluate(model, config, args.data, [case], "cpu", log=quiet)
    result = {"model": str(args.model or "bundled"), "augment": config.train.augment,
              "tta_flip_axes": list(tta_flip_axes(config.train.augment)),
              "turns": list(tta_turns(config.train.augment, config.train.patch, config.network.pools)),
              "whole_volume": config.infer.whole_volume,
              "threads": torch.get_num_threads(), "device": common.device_name("cpu"), "cases": args.cases}
    for mirror, key in ((False, "plain"), (True, "mirror")):
        result[key] = {"dice": float(np.mean([r["raw"]["dice"] for r in rows[mirror]])),
                       "seconds": [r["seconds"] for r in rows[mirror]]}
    ratios = [m["seconds"] / p["seconds"] for p, m in zip(rows[False], rows[True])]
    result["median_time_ratio"] = float(np.median(ratios))
    for p_row, m_row in zip(rows[False], rows[True]):
        print(f"{p_row['case']}: Dice {100 * p_row['raw']['dice']:.2f} plain, {100 * m_row['raw']['dice']:.2f} "
              f"mirrored; {p_row['seconds']:.1f} s vs {m_row['seconds']:.1f} s")
    print(f"mean Dice {100 * result['plain']['dice']:.2f} plain, {100 * result['mirror']['dice']:.2f} mirrored "
          f"(axes {result['tta_flip_axes']}); median time ratio {result['median_time_ratio']:.2f}")
    if args.json:
        common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
