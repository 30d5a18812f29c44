"""One table of selectors trained on the same generator, read from their ``hmh train`` run folders.

    python benchmarks/selection_levers.py NAME=RUN_DIR [NAME=RUN_DIR ...] [--out FILE]

Each ``RUN_DIR`` is an ``hmh train`` output folder (``metrics.json``), or an ``hmh evaluate`` one (a trained
selector ranked by another ``--rule``: no training of its own, so ``-`` for its epochs and seconds). The first is
the reference (the faithful selector), usually the run that trained the generator, the others ``hmh train --set
train.generator=<its checkpoints/generation_best.pt> --set <lever> ...``. The runs must share one generator: their
test best-of-K and mean-of-K are equal (to 0.01 mm), else the script stops naming the run that differs. Per run, on
the test split, current-frame MPJPE in mm: the selected top-n (``final``) and its ratio to the reference's, random
top-n, mean of K, the label-oracle top-n, the selection gain ``(random - final) / (random - label oracle)``,
precision, the share of images given the most common set, the reward spread, the selection epochs and the mean
training seconds per selection epoch (0 for a training-free rule, ``-`` for an ``hmh evaluate`` folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SAME_GENERATOR_MM = 0.01  # best-of-K and mean-of-K of runs on one generator agree to this


def _metrics(run: Path) -> dict:
    path = run / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"selection_levers: cannot read {path}: {exc}") from exc


def row(name: str, run: Path) -> dict:
    """One run's figures (see the module docstring)."""
    data = _metrics(run)
    m = data["metrics"]
    trained = "history" in data  # an hmh train folder; hmh evaluate's has no training to time
    history = data.get("history", {}).get("selection", [])
    seconds = [h["train/seconds"] for h in history if "train/seconds" in h]
    return {
        "name": name, "run": str(run),
        "final": m["final/mpjpe_current"], "random": m["random_n/mpjpe_current"],
        "mean_of_k": m["mean_of_k/mpjpe_current"], "label_oracle": m["label_oracle/mpjpe_current"],
        "best_of_k": m["best_of_k/mpjpe_current"], "gain": m["selection/gain"],
        "precision": m["selection/precision"], "common_set": m["selection/common_set_share"],
        "spread": m["selection/reward_spread"], "constant": m.get("constant/mpjpe_current"),
        "epochs": len(history) if trained else None,
        "seconds_per_epoch": (sum(seconds) / len(seconds) if seconds else 0.0) if trained else None,
    }


def check_same_generator(rows: list[dict]) -> None:
    """Stop naming the first run whose best-of-K or mean-of-K differs from the reference's."""
    ref = rows[0]
    for r in rows[1:]:
        for key in ("best_of_k", "mean_of_k"):
            if abs(r[key] - ref[key]) > SAME_GENERATOR_MM:
                raise SystemExit(f"selection_levers: {r['name']} ({r['run']}) has test {key} {r[key]:.2f} mm, the "
                                 f"reference {ref['name']} {ref[key]:.2f} mm: not the same generator")


def _or_dash(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def table(rows: list[dict]) -> str:
    """The Markdown table, the reference first."""
    ref = rows[0]["final"]
    lines = ["| selector | final | x reference | random top-n | mean of K | label oracle top-n | gain | precision | "
             "most common set | reward spread | selection epochs | s / selection epoch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['final']:.2f} | {r['final'] / ref:.3f} | {r['random']:.2f} | "
                     f"{r['mean_of_k']:.2f} | {r['label_oracle']:.2f} | {r['gain']:.2f} | {r['precision']:.3f} | "
                     f"{100 * r['common_set']:.0f}% | {r['spread']:.3f} | {_or_dash(r['epochs'], '{}')} | "
                     f"{_or_dash(r['seconds_per_epoch'], '{:.0f}')} |")
    first = rows[0]
    lines.append("")
    lines.append(f"Test split, current-frame MPJPE in mm; best of K {first['best_of_k']:.2f} for every run"
                 + (f"; constant mean pose {first['constant']:.2f}." if first["constant"] is not None else "."))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR", help="selector name and its hmh train folder; "
                        "the first is the reference")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file (default: print only)")
    args = parser.parse_args(argv)
    rows = []
    for item in args.runs:
        name, sep, run = item.rpartition("=")  # a name may hold "=" (evidence=both)
        if not sep or not name or not run:
            raise SystemExit(f"selection_levers: {item!r} is not NAME=RUN_DIR")
        rows.append(row(name, Path(run)))
    check_same_generator(rows)
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
