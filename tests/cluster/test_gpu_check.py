"""``scripts/gpu_check.sh`` / ``benchmarks/gpu_check.py``: without CUDA it says so and checks nothing (exit 3);
``--smoke`` runs every check's code on the CPU at tiny sizes, the GPU-only Ray row explicitly skipped."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: the real check would run")
def test_without_cuda_it_says_so_and_exits_3():
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "SKIPPED everything: no CUDA device" in done.stdout and "--smoke" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: run scripts/gpu_check.sh itself")
def test_smoke_runs_every_check_on_the_cpu():
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split(" | ")[0].strip("| "): line for line in done.stdout.splitlines() if line.startswith("| ")}
    for stage in ("generation", "selection"):
        for precision in ("fp32", "bf16"):
            assert "PASS: " in rows[f"train {stage} {precision}"] and "images/s" in rows[f"train {stage} {precision}"]
    assert "PASS: K=4" in rows["K-scaling"]
    assert "SKIPPED: no CUDA device" in rows["Ray Train use_gpu"]
    assert "PASS: " in rows["EGL rendering"] and "images/s" in rows["EGL rendering"]
