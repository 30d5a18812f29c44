"""The metric table of a run or an evaluation: markdown for people, JSON for programs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from hmh import atomic
from hmh.baseline import CONSTANT
from hmh.metrics import METRICS, REDUCTIONS

__all__ = ["metric_table", "write_metrics"]

REDUCTION_NAMES = {
    "best_of_k": "best of K (oracle)",
    "final": "final (selected top-n)",
    "mean_of_k": "mean of K",
    "random_n": "random top-n",
    "hyp0": "hypothesis 0",
    CONSTANT: "constant mean pose (training split)",  # hmh.baseline, where a run computed it
}
METRIC_NAMES = {
    "mpjpe_past": "MPJPE past",
    "mpjpe_current": "MPJPE current",
    "mpjpe_future": "MPJPE future",
    "mpvpe": "MPVPE",
}


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def metric_table(metrics: Mapping[str, float]) -> str:
    """Markdown table (mm) of ``{"{reduction}/{metric}": value}``: one row per reduction present, then the
    selection precision when present."""
    header = "| reduction | " + " | ".join(METRIC_NAMES[m] for m in METRICS) + " |"
    lines = [header, "|---|" + "---:|" * len(METRICS)]
    for reduction in (*REDUCTIONS, CONSTANT):
        if not any(f"{reduction}/{m}" in metrics for m in METRICS):
            continue
        cells = " | ".join(_cell(metrics.get(f"{reduction}/{m}")) for m in METRICS)
        lines.append(f"| {REDUCTION_NAMES[reduction]} | {cells} |")
    text = "\n".join(lines)
    if "selection/precision" in metrics:
        text += f"\n\nselection precision (selected top-n among the true top-n): {metrics['selection/precision']:.3f}"
    return text


def write_metrics(
    out_dir: str | os.PathLike, metrics: Mapping[str, float], title: str, extra: Mapping | None = None,
    stem: str = "metrics",
) -> tuple[Path, Path]:
    """Write ``{stem}.json`` (``{"title", "metrics", **extra}``) and ``{stem}.md`` (title + table) atomically
    into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    payload = {"title": title, "metrics": {k: float(v) for k, v in metrics.items()}, **(extra or {})}
    atomic.write_text(json_path, json.dumps(payload, indent=2, allow_nan=True) + "\n")
    atomic.write_text(md_path, f"# {title}\n\nErrors in mm.\n\n{metric_table(metrics)}\n")
    return json_path, md_path
