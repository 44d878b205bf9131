"""Re-ship the bundled model with its validation-chosen post-processing, and its card with measured numbers.

    # 1. a copy of the bundled model with the largest component switched on (weights unchanged)
    python bench/shipping/reship_default_model.py checkpoint --largest-component on --out /tmp/reship/default.pt
    # 2. measure it exactly as a user runs it: dtc segment with no option, then dtc evaluate
    dtc segment $(for c in $(cat DATA/test.list); do echo DATA/$c/image.nrrd; done) --model /tmp/reship/default.pt \\
        -o /tmp/reship/shipped --jsonl > /tmp/reship/shipped.jsonl
    dtc evaluate /tmp/reship/shipped DATA --json /tmp/reship/shipped.json
    (and the same with --no-largest-component into /tmp/reship/raw, raw.json: the "without post-processing" column)
    # 3. the bundled model, default.json and MODEL_CARD.md from that copy and those two measurements
    python bench/shipping/reship_default_model.py card /tmp/reship/default.pt --shipped /tmp/reship/shipped.json \\
        --raw /tmp/reship/raw.json --note "..."

``bench/shipping/make_default_model.py`` chose the largest component on validation (card
``validation.largest_component``) but saved the model with it off, so ``dtc segment`` gave less than the card
said (issue 23, item 4). This script changes only inference settings and metadata: the fp16 weights are the
same tensors. The card's per-case seconds are kept from the card's own evaluation (inference only, on an
unloaded machine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "DTCCore" / "models"


def write_checkpoint(source: Path, out: Path, largest_component: bool, test_dice: float | None = None) -> Path:
    """``source`` saved to ``out`` with ``infer.largest_component`` set (and ``test_dice`` in its metadata)."""
    from DTCCore.model.checkpoint import load_checkpoint, load_model, save_checkpoint

    payload = load_checkpoint(source)
    model, config = load_model(source, "cpu")
    config.infer.largest_component = bool(largest_component)
    extra = dict(payload["extra"])
    if test_dice is not None:
        extra["test_dice"] = float(test_dice)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(out, model, None, payload["iteration"], config, extra, half=True)


def _by_case(evaluation: dict) -> dict[str, dict]:
    """``{case: metrics}`` of a ``dtc evaluate --json`` file (single class)."""
    keys = ("dice", "jaccard", "asd_vox", "hd95_vox", "asd_mm", "hd95_mm")
    return {r["case"]: {k: r[k] for k in keys} for r in evaluation["cases"]}


def update_card(card: dict, config: dict, shipped: dict, raw: dict, note: str) -> dict:
    """The card with the shipped config and the test numbers of the two ``dtc evaluate`` results.

    ``test.mean`` is the shipped default's mean (post-processing as ``config.infer`` says);
    ``mean_without_postprocessing`` the ``--no-largest-component`` one. Per-case rows keep their seconds.
    """
    ship, bare = _by_case(shipped), _by_case(raw)
    lcc = bool(config["infer"]["largest_component"])
    rows = []
    for r in card["test"]["per_case"]:
        case = r["case"]
        rows.append({**r, "raw": bare[case], "lcc": ship[case] if lcc else r["lcc"]})
    if set(ship) != {r["case"] for r in rows}:
        raise SystemExit("the shipped evaluation does not hold the card's test cases")
    card = dict(card, config=config)
    card["validation"] = dict(card["validation"], largest_component=lcc)
    test = dict(card["test"], per_case=rows)
    test["mean"] = {k: float(v) for k, v in shipped["summary"]["mean"].items() if k in ship[rows[0]["case"]]}
    test["mean_without_postprocessing"] = {k: float(v) for k, v in raw["summary"]["mean"].items()
                                           if k in bare[rows[0]["case"]]}
    which = "lcc" if lcc else "raw"
    test["std_dice"] = float(_std([r[which]["dice"] for r in rows]))
    card["test"] = test
    card["test_note"] = note
    return card


def _std(values: list[float]) -> float:
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    c = sub.add_parser("checkpoint", help="a copy of the bundled model with the post-processing set")
    c.add_argument("--largest-component", choices=("on", "off"), required=True)
    c.add_argument("--source", type=Path, default=MODELS / "default.pt")
    c.add_argument("--out", type=Path, required=True)
    k = sub.add_parser("card", help="ship a checkpoint copy with its measured test numbers")
    k.add_argument("checkpoint", type=Path, help="the copy from the checkpoint step")
    k.add_argument("--shipped", type=Path, required=True, help="dtc evaluate --json of dtc segment with no option")
    k.add_argument("--raw", type=Path, required=True, help="dtc evaluate --json of --no-largest-component")
    k.add_argument("--note", required=True, help="the card's test_note (its history)")
    k.add_argument("--models", type=Path, default=MODELS)
    args = p.parse_args()

    from DTCCore.atomic import atomic_write_text
    from DTCCore.model.checkpoint import load_checkpoint

    if args.step == "checkpoint":
        path = write_checkpoint(args.source, args.out, args.largest_component == "on")
        print(f"wrote {path}")
        return 0
    import make_default_model

    shipped = json.loads(args.shipped.read_text())
    raw = json.loads(args.raw.read_text())
    payload = load_checkpoint(args.checkpoint)
    card_path = args.models / "default.json"
    card = update_card(json.loads(card_path.read_text()), payload["config"].to_dict(), shipped, raw, args.note)
    target = args.models / "default.pt"
    write_checkpoint(args.checkpoint, target, card["config"]["infer"]["largest_component"],
                     test_dice=card["test"]["mean"]["dice"])
    card["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    card["size_bytes"] = target.stat().st_size
    atomic_write_text(card_path, json.dumps(card, indent=1) + "\n")
    atomic_write_text(args.models / "MODEL_CARD.md", make_default_model.render_card(card))
    print(f"wrote {target}, {card_path.name}, MODEL_CARD.md: test Dice {100 * card['test']['mean']['dice']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
