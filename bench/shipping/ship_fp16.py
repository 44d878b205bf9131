"""Ship a training run's model from a device machine as fp16 (half the bytes of the fp32 weights).

    python bench/shipping/ship_fp16.py RUN_DIR OUT.pt [--result RESULT_JSON]

``RUN_DIR``: a trainer run folder. Its ``model.pt`` is shipped, or, when the run was cut short (a timeout
sends SIGTERM, on which the trainer checkpoints), its newest checkpoint, and the script says which.
``--result``: a bench result JSON of that run (``bench/studies/train_acdc.py --json``), copied beside ``OUT.pt``
with its ``"model"`` set to ``OUT.pt``'s file name; ``train_acdc.py --assess`` resolves such a relative
name against the JSON's folder, so the pair can be scored wherever it lands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # bench/lib: the shared helpers

import common


def ship(run_dir: Path, out: Path) -> tuple[str, int]:
    """Write ``out`` (fp16 weights, the run's config); returns (source file name, its iteration)."""
    from DTCCore.model.checkpoint import find_latest_checkpoint, float32_state, load_checkpoint, save_checkpoint
    from DTCCore.model.network import build_network

    src = run_dir / "model.pt"
    if src.exists():
        payload = load_checkpoint(src)
    else:
        found = find_latest_checkpoint(run_dir)  # verified and loaded
        if found is None:
            raise SystemExit(f"error: {run_dir} has no model.pt and no checkpoint: the run saved nothing")
        src, payload = found
    model = build_network(payload["config"].network)
    model.load_state_dict(float32_state(payload["model"]))
    extra = dict(payload["extra"], source=src.name, iteration=payload["iteration"])
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, None, payload["iteration"], payload["config"], extra, half=True)
    return src.name, int(payload["iteration"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--result", type=Path, metavar="RESULT_JSON")
    args = p.parse_args(argv)
    source, iteration = ship(args.run_dir, args.out)
    print(f"fp16 model from {source} iteration {iteration}: {args.out}")
    if args.result:
        result = json.loads(args.result.read_text())
        result["model"] = args.out.name
        common.write_json(args.out.parent / args.result.name, result)


if __name__ == "__main__":
    main()
