"""Smoke tests of the bench scripts at minuscule scale, so that they cannot rot.

Each script runs as a user would run it (a subprocess from the repository root) on synthetic data it
makes itself (never ../shared); the assertions check the structure and sanity of what it reports and
the window counts against independent hand computations of the reference formula.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TINY_SHAPE = (40, 36, 24)  # synthetic volume of the --tiny benches (bench/lib/synthetic_la.synthetic_data)
# One thread per process: on a busy 2-core machine two OpenMP threads per tiny process spin-wait for each
# other and run ~4x slower (our measurement: reproduce_la.py --tiny 103 s -> 25 s at load average 6).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(args: list[str], tmp_path: Path, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ONE_THREAD, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def windows(shape, patch, stride) -> int:
    """Reference window count: per axis ceil((d - p) / s) + 1 (test_util.test_single_case)."""
    return math.prod(math.ceil((max(d, p) - p) / s) + 1 for d, p, s in zip(shape, patch, stride))


def test_speed_cpu_mode_reports_every_method(tmp_path):
    out = tmp_path / "speed.json"
    proc = run([sys.executable, "bench/speed/speed.py", "--cpu", "--tiny", "--json", str(out)], tmp_path)
    data = json.loads(out.read_text())
    rows = {r["method"]: r for r in data["results"]}
    assert set(rows) == {"ours", "ours-whole", "monai", "reference"}
    for r in rows.values():
        assert r["median_s"] > 0 and r["peak_rss_mb"] > 50 and r["process_s"] >= r["median_s"]
    # Tiny network patch 16^3: ours / MONAI at 50% overlap (stride 8), the reference at 18x18x4.
    assert rows["ours"]["windows"] == windows(TINY_SHAPE, (16,) * 3, (8,) * 3) == 32
    assert rows["monai"]["windows"] == rows["ours"]["windows"]
    assert rows["reference"]["windows"] == windows(TINY_SHAPE, (16,) * 3, (18, 18, 4)) == 27
    assert rows["ours-whole"]["windows"] == 1
    assert rows["ours"]["x_slower_than_ours"] == 1.0
    assert "| reference |" in proc.stdout and "| ours |" in proc.stdout


def test_speed_gpu_mode_logic_and_training_bench_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    run([sys.executable, "bench/speed/speed.py", "--tiny", "--device", "cpu", "--train", "--json", str(out)], tmp_path)
    data = json.loads(out.read_text())
    rows = {r["method"]: r for r in data["volumes"]["x".join(map(str, TINY_SHAPE))]}
    assert {"ours fp32", "monai fp32", "reference fp32"} <= set(rows)
    ref = rows["reference fp32"]
    assert ref["extrapolated"] and ref["windows"] == 27  # 3 windows timed, scaled to 27
    assert all(r["median_s"] > 0 for r in rows.values())
    train = data["train"]
    assert train["ours_ms"] > 0 and train["reference_ms"] > 0
    assert math.isclose(train["speedup"], train["reference_ms"] / train["ours_ms"])


def test_reproduce_la_trains_evaluates_and_prints_the_paper_table(tmp_path):
    out = tmp_path / "repro.json"
    md = tmp_path / "repro.md"
    run([sys.executable, "bench/studies/reproduce_la.py", "--tiny", "--out", str(tmp_path / "run"), "--json", str(out),
         "--markdown", str(md)], tmp_path)
    data = json.loads(out.read_text())
    assert data["training"]["iterations"] == 4 and data["labeled"] == 2 and data["unlabeled"] == 1
    assert (tmp_path / "run" / "run_dtc" / "model.pt").is_file()
    ev = data["evaluation"]
    assert ev["cases"] == 2 and len(ev["rows"]["plain"]) == 2
    # Each row is the Dice of the shipped model's label on that test case (predicted again here, counted by
    # hand), Jaccard = Dice / (2 - Dice), and the means are the rows' means.
    import torch

    from DTCCore.data.images import read_image, read_label
    from DTCCore.inference.postprocess import largest_component
    from DTCCore.inference.predict import predict_volume
    from DTCCore.model.checkpoint import load_model

    folder = tmp_path / "run" / "data"
    cases = (folder / "test.list").read_text().split()[:2]
    model, config = load_model(tmp_path / "run" / "run_dtc" / "model.pt")
    config.infer.whole_volume, config.infer.largest_component = False, False  # the bench's inference
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the bench ran (ONE_THREAD): the same arithmetic, the same label
    try:
        for i, case in enumerate(cases):
            image, geometry = read_image(folder / case / "image.nrrd")
            truth = read_label(folder / case / "label.nrrd", geometry, image.shape, 1) > 0
            pred = predict_volume(model, image, config).label > 0
            lcc = np.asarray(largest_component(pred), bool) if pred.any() else pred
            for key, mask in (("plain", pred), ("lcc", lcc)):
                row = ev["rows"][key][i]
                dice = 2 * np.count_nonzero(mask & truth) / (np.count_nonzero(mask) + np.count_nonzero(truth))
                assert row["case"] == case and math.isclose(row["dice"], dice, abs_tol=1e-12), (key, row, dice)
                assert math.isclose(row["jaccard"], dice / (2 - dice), abs_tol=1e-12)
    finally:
        torch.set_num_threads(threads)
    for key in ("plain", "lcc"):
        for metric in ("dice", "jaccard"):
            assert math.isclose(ev["means"][key][metric], np.mean([r[metric] for r in ev["rows"][key]]),
                                abs_tol=1e-12)
    text = md.read_text()
    assert "89.42" in text and "86.03" in text and "ours dtc (largest component)" in text


def test_device_run_script_ships_a_loadable_fp16_model(tmp_path):
    out = tmp_path / "out"
    run(["bash", "bench/gpu/device_run.sh"], tmp_path,
        env={"DEVICE": "cpu", "EXTRA": "--tiny", "OUT": str(out), "SKIP_SPEED": "1", "DATA": str(tmp_path / "none")})
    parts = sorted(out.glob("model_fp16.pt.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    model = tmp_path / "model.pt"
    model.write_bytes(b"".join(p.read_bytes() for p in parts))
    sys.path.insert(0, str(REPO))
    from DTCCore.model.checkpoint import load_checkpoint, load_model

    payload = load_checkpoint(model)
    assert all(v.dtype != __import__("torch").float32 for v in payload["model"].values() if v.is_floating_point())
    net, config = load_model(model)
    assert config.network.base_filters == 2 and payload["iteration"] == 4
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("reproduce_dtc.json") for n in names) and any(n.endswith("device_run.log") for n in names)


def test_fold_batchnorm_keeps_the_eval_output_and_the_callers_model():
    """The inference copy with BatchNorm folded into the convolutions (a CPU speed-up) equals eval mode."""
    import torch

    sys.path.insert(0, str(REPO))
    from DTCCore.model.batchnorm import fold_batchnorm
    from DTCCore.model.network import DualTaskVNet

    torch.manual_seed(0)
    net = DualTaskVNet(base_filters=2)
    for m in net.modules():  # non-trivial statistics, so that folding has something to do
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    x = torch.randn(2, 1, 32, 32, 16)
    net.eval()
    with torch.no_grad():
        (s1, l1), (s2, l2) = net(x), folded(x)
    torch.testing.assert_close(s2, s1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(l2, l1, atol=1e-5, rtol=1e-4)
