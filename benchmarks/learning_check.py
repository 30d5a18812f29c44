"""Learning check: a short two-stage CPU training on the synthetic dataset must learn, not just run.

    python benchmarks/learning_check.py [--config cpu] [--set key=value ...] [--out results/benchmarks/learning.md]

Trains with ``hmh.train.runner.run_training`` (the code path of ``hmh train``) and checks:
1. the generation loss falls (last epoch's mean training loss below the first's);
2. the validation error falls (mean-of-K current MPJPE, last epoch below the first) and ends below a constant
   baseline that predicts the training set's mean wrist-relative joints for every image (what a model that
   ignores the image converges to);
3. on the test split, best-of-K MPJPE is below hypothesis 0's (the hypotheses differ usefully);
4. on the test split, after stage 2 the selected top-n ("final") is closer to the ground truth than a random
   top-n, and the selection precision is above chance (n / K).
Writes the per-epoch history, the test table and the checks to ``--out``; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from hmh.config import Config, load_config, to_yaml
from hmh.eval.metrics import blurhand_errors
from hmh.eval.report import metric_table
from hmh.files import atomic
from hmh.train.runner import build_datasets, data_root, make_loader, run_training

DEFAULT_SET = ["train.generation_epochs=6", "train.selection_epochs=3", "optim.milestones=[5]"]


def history_table(history: dict[str, list[dict[str, float]]]) -> str:
    lines = ["| stage | epoch | train loss | lr | samples/s | val best-of-K | val mean-of-K | val hyp0 | val random-n "
             "| val final | precision |", "|---|---:|" + "---:|" * 9]
    for stage, rows in history.items():
        for r in rows:
            def v(key: str, fmt: str = ".2f", r=r) -> str:
                return format(r[key], fmt) if key in r else "-"

            lines.append(
                f"| {stage} | {int(r['epoch'])} | {v('train/loss/total', '.4g')} | {v('train/lr', '.1e')} "
                f"| {v('train/samples_per_s', '.1f')} | {v('val/best_of_k/mpjpe_current')} "
                f"| {v('val/mean_of_k/mpjpe_current')} | {v('val/hyp0/mpjpe_current')} "
                f"| {v('val/random_n/mpjpe_current')} | {v('val/final/mpjpe_current')} "
                f"| {v('val/selection/precision', '.3f')} |"
            )
    return "\n".join(lines)


@torch.no_grad()
def mean_pose_baseline(cfg: Config) -> dict[str, dict[str, float]]:
    """Errors (mm) on val and test of predicting the training split's mean wrist-relative joints ``(T, J, 3)``
    (over valid joints, no augmentation) for every sample."""
    datasets = build_datasets(cfg, data_root(cfg, progress=False))
    datasets["train"].augment = False

    def collect(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        joints, valid = [], []
        for batch in make_loader(datasets[name], cfg, train=False, device=torch.device("cpu")):
            joints.append(batch["joints_3d"])
            valid.append(batch["joint_valid"])
        return torch.cat(joints), torch.cat(valid)  # (N, T, J, 3), (N, T, J)

    joints, valid = collect("train")
    mean = (joints * valid[..., None]).sum(0) / valid.sum(0)[..., None].clamp_min(1)  # (T, J, 3)
    out = {}
    for name in ("val", "test"):
        gt, ok = collect(name)
        out[name] = blurhand_errors(mean.expand_as(gt), gt, ok)
    return out


def checks(history: dict, test: dict, baseline: dict, top_n: int, k: int) -> list[tuple[str, bool]]:
    gen = history["generation"]
    first, last = gen[0]["train/loss/total"], gen[-1]["train/loss/total"]
    v0, v1 = gen[0]["val/mean_of_k/mpjpe_current"], gen[-1]["val/mean_of_k/mpjpe_current"]
    base_val, base_test = baseline["val"]["mpjpe_current"], baseline["test"]["mpjpe_current"]
    out = [
        (f"generation training loss falls: {first:.4g} -> {last:.4g} (x{last / first:.2f})", last < first),
        (f"validation mean-of-K current MPJPE falls: {v0:.2f} -> {v1:.2f} mm", v1 < v0),
        (f"validation mean-of-K current MPJPE {v1:.2f} < constant mean-pose baseline {base_val:.2f} mm",
         v1 < base_val),
        (f"test mean-of-K current MPJPE {test['mean_of_k/mpjpe_current']:.2f} < constant mean-pose baseline "
         f"{base_test:.2f} mm", test["mean_of_k/mpjpe_current"] < base_test),
    ]
    for m in ("mpjpe_current", "mpjpe_past", "mpjpe_future"):
        b, h = test[f"best_of_k/{m}"], test[f"hyp0/{m}"]
        out.append((f"test best-of-K {m} {b:.2f} < hyp0 {h:.2f} mm", b < h))
    if "final/mpjpe_current" in test:
        for m in ("mpjpe_current", "mpjpe_past", "mpjpe_future", "mpvpe"):
            f, r = test[f"final/{m}"], test[f"random_n/{m}"]
            out.append((f"test selected top-{top_n} {m} {f:.2f} < random top-{top_n} {r:.2f} mm", f < r))
        p = test["selection/precision"]
        out.append((f"test selection precision {p:.3f} > chance {top_n / k:.3f}", p > top_n / k))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/learning.md"))
    parser.add_argument("--run-dir", type=Path, default=None, help="training outputs (default: a temporary folder)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, DEFAULT_SET + args.overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hmh-learning-") as tmp:
        result = run_training(cfg, args.run_dir or Path(tmp) / "run", echo=print, progress=sys.stderr.isatty())
    minutes = (time.perf_counter() - start) / 60
    baseline = mean_pose_baseline(cfg)
    results = checks(result.history, result.test_metrics, baseline, cfg.selection.top_n, cfg.model.num_hypotheses)
    ok = all(passed for _, passed in results)
    command = " ".join(["python benchmarks/learning_check.py", *(argv if argv is not None else sys.argv[1:])])
    text = (
        "# Learning check\n\n"
        f"Command: `{command}` ({minutes:.1f} min on this machine, CPU).\n"
        f"Config `{args.config}` with `{' '.join(DEFAULT_SET + args.overrides)}`.\n\n"
        "## Checks\n\n" + "\n".join(f"- [{'x' if passed else ' '}] {name}" for name, passed in results)
        + f"\n\nOverall: {'PASS' if ok else 'FAIL'}\n\n"
        "## Per-epoch history (validation split, current-frame MPJPE in mm)\n\n" + history_table(result.history)
        + "\n\n## Test split (mm)\n\n" + metric_table(result.test_metrics)
        + "\n\nConstant mean-pose baseline (the training split's mean wrist-relative joints for every image), "
        + "MPJPE past / current / future (mm): "
        + "; ".join(f"{name} " + " / ".join(f"{v[m]:.2f}" for m in ("mpjpe_past", "mpjpe_current", "mpjpe_future"))
                    for name, v in baseline.items())
        + "\n\n## Resolved config\n\n```yaml\n" + to_yaml(cfg) + "```\n"
    )
    atomic.write_text(args.out, text)
    print(text)
    print(f"written: {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
