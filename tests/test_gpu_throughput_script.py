"""The GPU throughput benchmark runs end to end (shrunk, on the CPU), so it works when a GPU is lent."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_throughput_script_measures_ours_and_stock(coco_tiny_dir, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "gpu"))
    command = ["bash", os.path.join(REPO, "benchmarks", "gpu_throughput.sh"), str(coco_tiny_dir), "1"]
    command += ["--variants", "ours_fp32", "stock_fp32", "--warmup", "1", "--input-size", "128"]
    command += ["--model-id", "18", "--tiny"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "| ours_fp32 |" in done.stdout and "| stock_fp32 |" in done.stdout
    results = json.loads((tmp_path / "gpu" / "throughput.json").read_text())
    assert [r["variant"] for r in results] == ["ours_fp32", "stock_fp32"]
    assert all(r["images_per_second"] > 0 and r["loss"] == r["loss"] for r in results)
