"""benchmarks/selection_levers.py: one row per run folder from its metrics.json, ratios to the first run, and runs
on another generator (a different best of K or mean of K) refused naming the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "selection_levers.py"


def _run(folder: Path, final: float, best_of_k: float = 19.42, seconds: tuple[float, ...] = (380.0, 400.0)) -> Path:
    folder.mkdir()
    metrics = {"final/mpjpe_current": final, "random_n/mpjpe_current": 43.74, "mean_of_k/mpjpe_current": 36.33,
               "label_oracle/mpjpe_current": 20.20, "best_of_k/mpjpe_current": best_of_k,
               "selection/gain": (43.74 - final) / (43.74 - 20.20), "selection/precision": 0.4,
               "selection/common_set_share": 0.51, "selection/reward_spread": 0.07,
               "constant/mpjpe_current": 103.38}
    history = {"generation": [], "selection": [{"train/seconds": s} for s in seconds]}
    (folder / "metrics.json").write_text(json.dumps({"metrics": metrics, "history": history}))
    return folder


def _table(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


def test_one_row_per_run_with_its_ratio_to_the_reference(tmp_path: Path) -> None:
    faithful, lever = _run(tmp_path / "a", 33.09), _run(tmp_path / "b", 29.78, seconds=())
    out = tmp_path / "levers.md"
    done = _table(f"faithful={faithful}", f"evidence=both={lever}", "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "| faithful | 33.09 | 1.000 | 43.74 | 36.33 | 20.20 | 0.45 | 0.400 | 51% | 0.070 | 2 | 390 |" in text
    assert "| evidence=both | 29.78 | 0.900 |" in text and "| 0 | 0 |" in text  # training-free: no selection epoch
    assert "best of K 19.42 for every run; constant mean pose 103.38." in text


def test_an_evaluate_folder_has_no_training_to_time(tmp_path: Path) -> None:
    faithful = _run(tmp_path / "a", 33.09)
    evaluated = _run(tmp_path / "b", 32.93)
    data = json.loads((evaluated / "metrics.json").read_text())
    del data["history"]  # hmh evaluate writes no history
    (evaluated / "metrics.json").write_text(json.dumps(data))
    done = _table(f"faithful={faithful}", f"combined={evaluated}")
    assert done.returncode == 0, done.stderr
    assert "| combined | 32.93 | 0.995 |" in done.stdout and done.stdout.rstrip().splitlines()[3].endswith("| - | - |")


def test_runs_on_another_generator_or_without_metrics_are_refused_naming_them(tmp_path: Path) -> None:
    faithful, other = _run(tmp_path / "a", 33.09), _run(tmp_path / "b", 30.0, best_of_k=21.0)
    done = _table(f"faithful={faithful}", f"other={other}")
    assert done.returncode == 1 and f"other ({other}) has test best_of_k 21.00 mm" in done.stderr
    assert "not the same generator" in done.stderr
    done = _table(f"faithful={faithful}", f"missing={tmp_path / 'nowhere'}")
    assert done.returncode == 1 and "cannot read" in done.stderr and "nowhere/metrics.json" in done.stderr
    done = _table("faithful")
    assert done.returncode == 1 and "'faithful' is not NAME=RUN_DIR" in done.stderr
