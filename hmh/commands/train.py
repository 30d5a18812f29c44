"""``hmh train`` (both stages on one process) and ``hmh evaluate`` (a checkpoint's metric table)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hmh.cli import count


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train the generation then the selection model on this process",
        description="Train both stages, checkpoint every epoch, evaluate on the test split. Data: data.root, or "
        "the synthetic dataset built into the cache when it is empty.",
    )
    train.add_argument("--config", default="cpu", help="preset name (cpu, paper) or YAML path (default: cpu)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, e.g. --set model.num_hypotheses=8 (repeatable)")
    train.add_argument("--out", type=Path, default=None, help="output folder (default: train.out_dir)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run the output folder holds (kept until this run succeeds)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=run_train)

    ev = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint with the BlurHand protocol and write its metric table",
        description="Rebuild the models from a checkpoint alone and evaluate best-of-K, final (when the checkpoint "
        "has a selector), the label oracle top-n, mean-of-K, random-n and hypothesis 0, and how good the selection "
        "is (precision, selection gain, reward spread, the share of images given the most common set).",
    )
    ev.add_argument("--checkpoint", type=Path, required=True,
                    help="a .pt written by hmh train, or a Ray Train checkpoint folder")
    ev.add_argument("--data", default=None, help="BlurHand root (default: the checkpoint config's data)")
    ev.add_argument("--split", default="test", help="split folder to evaluate (default: test)")
    ev.add_argument("--out", type=Path, default=None,
                    help="output folder (default: eval-<split> beside the checkpoint's folder)")
    ev.add_argument("--overwrite", action="store_true", help="replace the metric table the output folder holds")
    ev.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: auto)")
    ev.add_argument("--max-samples", type=count(0, "0 = all"), default=None,
                    help="evaluate at most this many samples (0 = all)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=run_evaluate)


def _print(text: str) -> None:
    print(text, flush=True)


def run_train(args: argparse.Namespace) -> int:
    from hmh.config import load_config
    from hmh.runner import run_training

    cfg = load_config(args.config, args.overrides)
    progress = not args.no_progress and sys.stderr.isatty()
    result = run_training(cfg, args.out, echo=_print, progress=progress, overwrite=args.overwrite)
    p = result.paths
    _print(f"outputs in {p.root}:\n  config       {p.config}\n  checkpoints  {p.root / 'checkpoints'}\n"
           f"  tensorboard  {p.tensorboard}  (tensorboard --logdir {p.tensorboard})\n"
           f"  metrics      {result.metrics_md}, {result.metrics_json}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from hmh.checkpoint import models_from_checkpoint
    from hmh.loop import evaluate, resolve_device
    from hmh.outputs import check_free
    from hmh.report import metric_table, write_metrics
    from hmh.runner import data_root, eval_dataset, make_loader

    device = resolve_device(args.device or "auto", "--device")
    out = args.out or args.checkpoint.resolve().parent.parent / f"eval-{args.split}"
    check_free(out, ("metrics.json", "metrics.md"), "--out", "a metric table", args.overwrite)
    loaded = models_from_checkpoint(args.checkpoint, device)
    cfg = loaded.config
    root = Path(args.data) if args.data else data_root(cfg, progress=not args.no_progress)
    dataset = eval_dataset(cfg, root, args.split, args.max_samples)
    loader = make_loader(dataset, cfg, train=False, device=device)
    progress = not args.no_progress and sys.stderr.isatty()
    metrics = evaluate(loaded.generator, loaded.selector, loader, cfg, device, progress=progress)
    title = f"{args.split} split ({len(dataset)} samples) of {root}, checkpoint {args.checkpoint}"
    json_path, md_path = write_metrics(out, metrics, title, extra={
        "checkpoint": str(args.checkpoint), "stage": loaded.stage, "epoch": loaded.epoch, "split": args.split,
        "data": str(root)})
    _print(f"{title} (mm):\n{metric_table(metrics)}\nwritten: {md_path}, {json_path}")
    return 0
