"""Reliability soak: kill a tiny training run at N random moments (SIGTERM and SIGKILL alternately).

After every kill the newest checkpoint (by name) must verify and load; at the end ``--resume`` must
finish. Run from the repository root::

    python bench/reliability/reliability_soak.py --moments 50 [--seed 0] [--work /tmp/dtc-soak]

Prints one line per moment and a summary ``survived K/N cancels``; exit status 0 only if all survived.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "Testing")]

from conftest import make_blob_dataset, tiny_config  # noqa: E402
from DTCCore.model.checkpoint import find_latest_checkpoint, load_checkpoint  # noqa: E402
from DTCCore.training.trainer import train  # noqa: E402
from test_reliability_faults import kill_at_random_moment  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moments", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dtc-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest = make_blob_dataset(work / "data", n_labeled=1, n_unlabeled=1)
    cfg_file = work / "cfg.json"
    total = 20 * args.moments + 100  # never finishes before the last kill
    tiny_config(iterations=total, checkpoint_every=1, log_every=1).save(cfg_file)
    rng = random.Random(args.seed)
    run = work / "run"
    survived, t0 = 0, time.monotonic()
    for moment in range(args.moments):
        sig = signal.SIGTERM if moment % 2 == 0 else signal.SIGKILL
        try:
            outcome = kill_at_random_moment(manifest, run, cfg_file, rng, sig)
            survived += 1
            found = find_latest_checkpoint(run)
            print(f"moment {moment + 1}: {sig.name} -> {outcome}, newest checkpoint iteration "
                  f"{found[1]['iteration'] if found else None}", flush=True)
        except AssertionError as exc:
            print(f"moment {moment + 1}: {sig.name} -> FAILED: {exc}", flush=True)
    found = find_latest_checkpoint(run)
    final = (found[1]["iteration"] if found else 0) + 2
    model = train(tiny_config(iterations=final, checkpoint_every=1), manifest, run, resume=True)
    resumed = load_checkpoint(model)["iteration"] == final
    print(f"survived {survived}/{args.moments} cancels; final --resume finished: {resumed}; "
          f"{time.monotonic() - t0:.0f} s")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if survived == args.moments and resumed else 1


if __name__ == "__main__":
    sys.exit(main())
