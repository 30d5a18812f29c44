"""Learning guard: a K=1 model trained briefly on a small slice of ``bench`` must beat the constant mean pose.

    python benchmarks/learning_guard.py [--max-share 0.8] [--set key=value ...] [--out FILE.md]

Runs ``hmh train --config bench`` (the CLI, as a user would) with K=1 on a smaller dataset of the bench
distribution (``SLICE``: 2,400 training and 400 test images, 3 epochs: a few minutes on 2 CPU cores) and compares
the test current-frame MPJPE with the constant mean-pose baseline computed from the dataset's JSON files alone
(``benchmarks/baseline.py``). Fails (exit 1) when the model's MPJPE is above ``--max-share`` times the baseline:
a regression in the data, the model, the losses or the schedule shows here first. ``tests/train/test_learning.py``
(marked ``slow``) runs it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
SLICE = [
    "model.num_hypotheses=1", "selection.top_n=1", "data.synthetic_train=2400", "data.synthetic_test=400",
    "train.generation_epochs=3", "optim.milestones=[3]",
]
MAX_SHARE = 0.8  # measured 0.52x (results/benchmarks/learning_guard.md); the full bench run reaches 0.32x


def run_guard(max_share: float = MAX_SHARE, overrides: list[str] | None = None,
              run_dir: Path | None = None) -> tuple[bool, str]:
    """Train, compare, and return ``(passed, report)``; the report is Markdown."""
    settings = SLICE + list(overrides or [])
    with tempfile.TemporaryDirectory(prefix="hmh-guard-") as tmp:
        out = run_dir or Path(tmp) / "run"
        command = [sys.executable, "-m", "hmh", "train", "--config", "bench", "--out", str(out), "--no-progress"]
        for item in settings:
            command += ["--set", item]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        minutes = (time.perf_counter() - start) / 60
        report = json.loads((out / "metrics.json").read_text())
        root = report["data_root"]
        baseline_json = Path(tmp) / "baseline.json"
        subprocess.run([sys.executable, str(HERE / "baseline.py"), root, "--out", str(baseline_json)], check=True)
        baseline = json.loads(baseline_json.read_text())
    model = report["metrics"]["final/mpjpe_current" if "final/mpjpe_current" in report["metrics"]
                              else "mean_of_k/mpjpe_current"]
    share = model / baseline["mpjpe_current"]
    passed = share <= max_share
    text = (
        "# Learning guard\n\n"
        f"Command: `python benchmarks/learning_guard.py{''.join(' --set ' + o for o in overrides or [])}` "
        f"({minutes:.1f} min for training and evaluation, CPU).\n"
        f"`hmh train --config bench` with `{' '.join(settings)}`.\n\n"
        f"| | test current MPJPE (mm) |\n|---|---:|\n| K=1 model | {model:.2f} |\n"
        f"| constant mean pose (from the JSON files, `benchmarks/baseline.py`) | {baseline['mpjpe_current']:.2f} |\n"
        f"| hmh's own constant row | {report['metrics'].get('constant/mpjpe_current', float('nan')):.2f} |\n\n"
        f"Share of the baseline: **{share:.2f}x** (limit {max_share:.2f}x): {'PASS' if passed else 'FAIL'}\n"
    )
    return passed, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-share", type=float, default=MAX_SHARE, help="fail above this share of the baseline")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="write the report here (e.g. results/benchmarks/learning_guard.md)")
    args = parser.parse_args(argv)
    passed, text = run_guard(args.max_share, args.overrides)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written: {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
