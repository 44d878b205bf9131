"""The annotation-loop study (bench/studies/annotation_loop.py, issue 24) at smoke scale, run as a user runs it.

One ``--smoke`` study (synthetic scans it makes itself, never ../shared: 4 labeled, 6 unlabeled, 2 test,
2 rounds of k = 2, a tiny network) is run once for the module; the tests read what it wrote: the tables,
the picks of every arm, the manifests and run logs of the fine-tunes. The ranking arm's picks are checked
against an independent ``dtc rank`` of the same scans with the same model, and the last test runs the
study again to see that it resumes instead of retraining.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARMS = ["disagreement", "random-s1", "random-s2", "labeled-only"]  # bench/lib/annotation_layout.study_arms([1, 2])
K, ROUNDS, INITIAL = 2, 2, 4  # the smoke: k, rounds, labeled at the start
TEST_CASES = 2  # the smoke's test scans
SMOKE_FINETUNE = 4  # bench/studies/annotation_loop.SMOKE_FINETUNE: iterations of a DTC fine-tune in the smoke
# bench/lib/la_study.EQUAL_TIME_RATIO (measured): labeled-only iterations per DTC iteration
EQUAL_TIME_RATIO = 1.9
# One thread per process: on a busy 2-core machine OpenMP threads of several tiny processes spin-wait for each
# other (see test_bench_smoke.ONE_THREAD).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def smoke(out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "bench/studies/annotation_loop.py", "--smoke", "--out", str(out), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, **ONE_THREAD})
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("loop") / "study"
    proc = smoke(out, "--json", str(out.parent / "loop.json"))
    return out, proc, json.loads((out.parent / "loop.json").read_text())


def picks(out: Path, arm: str, r: int) -> dict:
    return json.loads((out / arm / f"round_{r}" / "picks.json").read_text())


def round_folder(out: Path, arm: str, r: int) -> Path:
    return out / "initial" if r == 0 else out / arm / f"round_{r}"


def model(out: Path, arm: str, r: int) -> Path:
    return round_folder(out, arm, r) / "run" / "model.pt"


def test_tables_have_every_round_and_arm(study):
    out, proc, numbers = study
    dice_table = proc.stdout.split("Test Dice % per round")[1].split("Dice change")[0]
    assert all(arm in dice_table.splitlines()[2] for arm in ARMS)  # the header row
    rows = [line for line in dice_table.splitlines() if re.match(r"\| \d+ \| \d+ \|", line)]
    assert [tuple(map(int, re.findall(r"\d+", row)[:2])) for row in rows] == [(r, INITIAL + K * r) for r in range(3)]
    # Each cell is "LCC (raw)": 100 x the mean over the test cases of that round's score_test.json (its
    # per-case rows, averaged here); the last column the random arms' mean (range).
    randoms = [a for a in ARMS if a.startswith("random")]
    for r, row in enumerate(rows):
        cells = [c.strip() for c in row.strip("|").split("|")][2:]
        assert len(cells) == len(ARMS) + 1, row
        lcc = {}
        for arm, cell in zip(ARMS, cells):
            score = json.loads((round_folder(out, arm, r) / "score_test.json").read_text())
            assert len(score["rows"]) == TEST_CASES
            lcc[arm], raw = (100 * sum(c[k]["dice"] for c in score["rows"]) / TEST_CASES for k in ("lcc", "raw"))
            assert cell == f"{lcc[arm]:.2f} ({raw:.2f})", (arm, r, row)
        spread = [lcc[a] for a in randoms]
        assert cells[-1] == f"{sum(spread) / len(spread):.2f} ({min(spread):.2f}-{max(spread):.2f})", row
    assert "Dice change from the previous round" in proc.stdout and "Goals (issue 24)" in proc.stdout
    assert set(numbers) == set(ARMS)
    for arm, rows in numbers.items():
        assert [r["labeled"] for r in rows] == [INITIAL + K * r for r in range(ROUNDS + 1)]
        assert all(b["cumulative"] > a["cumulative"] and b["minutes"] > 0 for a, b in zip(rows, rows[1:])), arm
        assert all(abs(r["change"]["mean"] - (r["dice"] - p["dice"])) < 1e-6 for p, r in zip(rows, rows[1:])), arm
    assert numbers["disagreement"][0]["dice"] == numbers["labeled-only"][0]["dice"]  # one shared first model
    assert (out / "annotation_loop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_round_reveals_k_hidden_cases_and_fine_tunes_from_the_previous_model(study):
    out = study[0]
    train = (out / "data" / "train.list").read_text().split()
    for arm in ARMS:
        labeled = train[:INITIAL]
        for r in range(1, ROUNDS + 1):
            p = picks(out, arm, r)
            assert len(p["revealed"]) == K and not set(p["revealed"]) & set(labeled), (arm, r)
            assert p["labeled"] == labeled + p["revealed"]
            assert sorted(p["labeled"] + p["unlabeled"]) == sorted(train)
            manifest = json.loads((out / arm / f"round_{r}" / "manifest.json").read_text())
            assert [Path(e["label"]).parent.name for e in manifest["labeled"]] == p["labeled"]
            hidden = [Path(u).parent.name for u in manifest["unlabeled"]]
            assert hidden == ([] if arm == "labeled-only" else p["unlabeled"])  # labeled-only: no unlabeled scans
            log = (out / arm / f"round_{r}" / "run" / "log.jsonl").read_text()
            assert f"fine-tuning from {model(out, arm, r - 1)}" in log, (arm, r)
            # equal CPU time: a labeled-only step has half the crops, so it gets EQUAL_TIME_RATIO x the iterations
            total = [json.loads(e)["total"] for e in log.splitlines() if '"event": "start"' in e][-1]
            assert total == (round(EQUAL_TIME_RATIO * SMOKE_FINETUNE) if arm == "labeled-only" else SMOKE_FINETUNE)
            labeled = p["labeled"]
        if arm == "labeled-only":  # the disagreement arm's picks, fine-tuned without the unlabeled scans
            assert [picks(out, arm, r)["revealed"] for r in (1, 2)] == [
                picks(out, "disagreement", r)["revealed"] for r in (1, 2)]


def test_the_ranking_arm_reveals_the_top_of_dtc_rank(study):
    out = study[0]
    data = out / "data"
    for r in range(1, ROUNDS + 1):
        p = picks(out, "disagreement", r)
        pool = p["unlabeled"] + p["revealed"]  # the arm's unlabeled scans when it ranked
        images = [str(data / c / "image.nrrd") for c in sorted(pool)]
        run = subprocess.run([sys.executable, "-m", "DTCCore", "rank", *images, "--model",
                              str(model(out, "disagreement", r - 1)), "--device", "cpu", "--threads", "1", "--jsonl"],
                             cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **ONE_THREAD})
        assert run.returncode == 0, run.stderr[-2000:]
        ranked = [e for e in map(json.loads, run.stdout.splitlines()) if e["event"] == "ranked"][0]["ranking"]
        assert [Path(path).parent.name for path, _ in ranked[:K]] == p["revealed"], r
        assert len(p["ranking"]) == len(pool)
        for (case, score), (path, expected) in zip(p["ranking"], ranked):
            assert case == Path(path).parent.name and abs(score - expected) < 1e-5


def test_other_settings_in_the_same_folder_are_refused(study):
    out = study[0]
    proc = smoke(out, "--train-arg=--seed", "--train-arg=7", check=False)
    assert proc.returncode != 0 and "holds a study with other settings" in proc.stderr
    assert "train_args" in proc.stderr and "--seed" in proc.stderr


def test_a_second_run_resumes_without_retraining(study):
    out = study[0]
    outputs = sorted(out.glob("*/round_*/run/model.pt")) + sorted(out.glob("*/round_*/score_test.json"))
    outputs += [out / "initial" / "run" / "model.pt", out / "initial" / "score_test.json"]
    assert len(outputs) == 2 * len(ARMS) * ROUNDS + 2
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    again = smoke(out)
    assert "started" not in again.stdout, again.stdout  # nothing trained, ranked or scored again
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
    assert again.stdout.count("| 2 | 8 |") == 3  # the same three tables

    # A fine-tune stopped after its checkpoint (model.pt and score not written): only it continues, with --resume.
    stopped = out / "labeled-only" / "round_2"
    (stopped / "run" / "model.pt").unlink()
    (stopped / "score_test.json").unlink()
    third = smoke(out)
    assert third.stdout.count("started") == 2, third.stdout  # its training and its scoring
    assert "labeled-only round 2: train started (--resume)" in third.stdout
    assert "resuming from" in (stopped / "run" / "log.jsonl").read_text()
    assert (stopped / "run" / "model.pt").is_file() and (stopped / "score_test.json").is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if stopped not in p.parents)
