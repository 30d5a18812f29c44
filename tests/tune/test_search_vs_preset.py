"""benchmarks/search_vs_preset.py: the preset's values of exactly the searched keys, on the final retrain's own
configuration; the report side by side with the constant of the same split; a folder without a final retrain
refused naming the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hmh.config import load_config, save_config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "search_vs_preset.py"
SPACE = """parameters:
  model.num_hypotheses: {type: categorical, values: [2, 4, 8]}
  selection.top_n: {type: int, low: 1, high: model.num_hypotheses}
  optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-3}
"""


def _results(tmp_path: Path, final: float) -> Path:
    results = tmp_path / "results"
    (results / "final").mkdir(parents=True)
    (results / "space.yaml").write_text(SPACE)
    save_config(load_config("cpu", ["model.num_hypotheses=4", "selection.top_n=1", "optim.lr=2e-4",
                                    "train.generation_epochs=6"]), results / "final" / "config.yaml")
    metrics = {"final/mpjpe_current": final, "best_of_k/mpjpe_current": 40.0, "mean_of_k/mpjpe_current": 70.0,
               "selection/gain": 0.7}
    (results / "final" / "metrics.json").write_text(json.dumps({"metrics": metrics, "best_trial_id": "t7"}))
    return results


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False, cwd=REPO)


def test_the_preset_differs_only_in_the_searched_keys(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    import search_vs_preset

    overrides = search_vs_preset.preset_overrides(_results(tmp_path, 60.0), "bench")
    assert overrides == ["model.num_hypotheses=8", "selection.top_n=2", "optim.lr=0.001"]


def test_the_report_puts_both_finals_beside_the_constant(tmp_path: Path) -> None:
    results = _results(tmp_path, 60.0)
    shipped = results / "bench-at-final-budget"
    shipped.mkdir()
    (shipped / "metrics.json").write_text(json.dumps({"metrics": {
        "final/mpjpe_current": 66.0, "best_of_k/mpjpe_current": 45.0, "mean_of_k/mpjpe_current": 75.0,
        "selection/gain": 0.5, "constant/mpjpe_current": 100.0}}))
    done = _run(str(results))
    assert done.returncode == 0, done.stderr
    text = (results / "vs_bench.md").read_text()
    assert "The constant mean pose of this split: 100.00 mm" in text
    assert "| selected top-n, mm | 60.00 | 66.00 |" in text and "| selected top-n / constant | 0.60x | 0.66x |" in text
    assert "The search's final beats `bench` as shipped: 60.00 against 66.00 mm (0.91x)." in text
    assert "`model.num_hypotheses=8` `selection.top_n=2` `optim.lr=0.001`" in text


def test_a_folder_without_a_final_retrain_is_refused_naming_the_file(tmp_path: Path) -> None:
    done = _run(str(tmp_path))
    assert done.returncode != 0
    assert f"cannot read {tmp_path / 'final' / 'metrics.json'}" in done.stderr
    assert "Traceback" not in done.stderr
