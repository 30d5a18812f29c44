"""The metric table of a run or an evaluation: markdown for people, JSON for programs. No torch here (the search
summary uses it)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from hmh.files import atomic
from hmh.results.tables import CONSTANT, METRICS, REDUCTION_NAMES, REDUCTIONS

__all__ = ["CONSTANT_RULE_SHARE", "format_or_dash", "metric_table", "selection_lines", "selection_verdict",
           "write_metrics"]

CONSTANT_RULE_SHARE = 0.9
"""A selector that picks its most common set on at least this share of the images is called a constant rule."""
METRIC_NAMES = {
    "mpjpe_past": "MPJPE past",
    "mpjpe_current": "MPJPE current",
    "mpjpe_future": "MPJPE future",
    "mpvpe": "MPVPE",
}


def format_or_dash(value: float | None, spec: str = ".2f") -> str:
    """``value`` formatted with ``spec`` (mm: two decimals), ``-`` where it is missing or NaN."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def metric_table(metrics: Mapping[str, float]) -> str:
    """Markdown table (mm) of ``{"{reduction}/{metric}": value}``: one row per reduction present, then the
    selection precision when present."""
    header = "| reduction | " + " | ".join(METRIC_NAMES[m] for m in METRICS) + " |"
    lines = [header, "|---|" + "---:|" * len(METRICS)]
    for reduction in (*REDUCTIONS, CONSTANT):
        if not any(f"{reduction}/{m}" in metrics for m in METRICS):
            continue
        cells = " | ".join(format_or_dash(metrics.get(f"{reduction}/{m}")) for m in METRICS)
        lines.append(f"| {REDUCTION_NAMES[reduction]} | {cells} |")
    selection = selection_lines(metrics)
    return "\n".join(lines + ([""] + selection if selection else []))


def selection_lines(metrics: Mapping[str, float]) -> list[str]:
    """How good the selection is (hmh.eval.protocol's ``selection/*`` statistics), one line each, then
    :func:`selection_verdict`'s warning; empty without a selector."""
    if "selection/precision" not in metrics:
        return []
    get = metrics.get
    lines = [f"selection precision (selected top-n among the labels' top-n): {get('selection/precision'):.3f}"]
    if "selection/gain" in metrics:
        lines += [
            f"selection gain ((random - final) / (random - label oracle), current frame; 1 = as good as its labels, "
            f"0 = random): {format_or_dash(get('selection/gain'))}",
            f"reward spread across images (std of a slot's reward, mean over slots): "
            f"{format_or_dash(get('selection/reward_spread'), '.4f')}",
            f"images whose selected set is the most common one: {_percent(get('selection/common_set_share'))}",
        ]
    verdict = selection_verdict(metrics)
    return lines + ([verdict] if verdict else [])


def selection_verdict(metrics: Mapping[str, float]) -> str | None:
    """One plain line when the selector is not doing its job (a constant rule, or no better than random top-n),
    with the usual reason; None when it is, or without the statistics."""
    share, gain = metrics.get("selection/common_set_share", math.nan), metrics.get("selection/gain", math.nan)
    problems = []
    if share >= CONSTANT_RULE_SHARE:
        problems.append(f"the selector is a constant rule (the same top-n set on {_percent(share)} of the images)")
    if gain <= 0:
        problems.append(f"its selection gain is {gain:.2f} (<= 0: no better than a random top-n)")
    if not problems:
        return None
    return ("WARNING: " + " and ".join(problems) + ". Usual reason: too few selection steps (as at demo scale) for "
            "the selector to learn from the image; train the selection stage longer (train.selection_epochs, more "
            "data).")


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.0f}%"


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
