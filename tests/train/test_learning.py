"""Regression guard for learning (slow: a few minutes of CPU training; ``make test-slow``)."""

import subprocess
import sys
from pathlib import Path

import pytest

GUARD = Path(__file__).parents[2] / "benchmarks" / "learning_guard.py"


@pytest.mark.slow
def test_k1_model_on_a_bench_slice_beats_the_constant_mean_pose(tmp_path):
    """``benchmarks/learning_guard.py``: K=1 on 2,400 bench images, 3 epochs, test current MPJPE <= 0.8x the
    constant mean-pose baseline computed from the JSON files (the full bench run reaches 0.32x)."""
    out = tmp_path / "guard.md"
    run = subprocess.run([sys.executable, str(GUARD), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "PASS" in out.read_text()
