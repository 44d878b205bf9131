"""How much does one whole-volume forward pass change the result vs 50%-overlap windows?

    python bench/studies/whole_volume_check.py --model MODEL [--data DIR] [--cases 3] [--json F] [--tiny]

For ``--cases`` validation scans (train.list after the 16 labeled ones; never test.list): both predictions
(``InferConfig.whole_volume`` False / True), seconds of each (in this process, alternating), the mean and max
|p_whole - p_windows| of the foreground probability, the Dice between the two label maps, and each one's Dice
against the truth.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common

VALIDATION_START = 16  # the first 16 of train.list are the labeled training cases


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--cases", type=int, default=3)
    p.add_argument("--json", type=Path)
    p.add_argument("--tiny", action="store_true", help="synthetic data and a random tiny model")
    args = p.parse_args(argv)

    from DTCCore.data.images import read_image, read_label
    from DTCCore.evaluation.metrics import evaluate_case
    from DTCCore.inference.predict import predict_volume
    from DTCCore.model.checkpoint import load_model

    data = args.data or common.DEFAULT_DATA
    if args.tiny:
        import tempfile

        from synthetic_la import synthetic_data

        tmp = Path(tempfile.mkdtemp(prefix="dtc-whole-"))
        data = args.data or synthetic_data(tmp / "data", 1, 2)
        args.model = args.model or common.random_model_file(tmp / "m.pt", 2, (16, 16, 16))
    if args.model is None:
        raise SystemExit("error: pass --model MODEL (a trained model: the difference depends on the weights)")
    model, config = load_model(args.model, "cpu")
    rows = []
    # validation scans: the unlabeled pool of train.list (labels never used in training), never test.list
    for case in common.read_list(data, "train.list")[VALIDATION_START : VALIDATION_START + args.cases]:
        image_path, label_path = common.case_files(data, case)
        image, geometry = read_image(image_path)
        truth = read_label(label_path, geometry, image.shape, 1) > 0
        preds, secs = {}, {}
        for whole in (False, True):
            config.infer.whole_volume = whole
            t0 = time.perf_counter()
            preds[whole] = predict_volume(model, image, config, "cpu")
            secs[whole] = time.perf_counter() - t0
        diff = np.abs(preds[True].probability - preds[False].probability)
        a, b = preds[False].label > 0, preds[True].label > 0
        row = {"case": case, "shape": list(image.shape), "windows_s": secs[False], "whole_s": secs[True],
               "mean_abs_prob_diff": float(diff.mean()), "max_abs_prob_diff": float(diff.max()),
               "label_voxels_differing": int((a != b).sum()),
               "dice_whole_vs_windows": evaluate_case(b, a, geometry.spacing)["dice"],
               "dice_windows_vs_truth": evaluate_case(a, truth, geometry.spacing)["dice"],
               "dice_whole_vs_truth": evaluate_case(b, truth, geometry.spacing)["dice"]}
        rows.append(row)
        print(f"  {case}: {row}", file=sys.stderr, flush=True)
    head = ["case", "windows s", "whole s", "mean |dp|", "max |dp|", "labels differ (voxels)", "Dice whole vs windows",
            "Dice windows vs truth", "Dice whole vs truth"]
    keys = ["case", "windows_s", "whole_s", "mean_abs_prob_diff", "max_abs_prob_diff", "label_voxels_differing",
            "dice_whole_vs_windows", "dice_windows_vs_truth", "dice_whole_vs_truth"]
    print(common.markdown_table(head, [[r[k] for k in keys] for r in rows]))
    out = {"model": str(args.model), "rows": rows}
    if args.json:
        common.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
