"""``hmh train`` (both stages on one process), ``hmh evaluate`` (a checkpoint's metric table) and ``hmh export``
(a checkpoint's slim copy for inference)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from hmh.cli import count
from hmh.config import REPROJECTION_ALIGNS, RULES, preset_names

DEVICE_HELP = "auto, cpu, cuda, cuda:N (default: auto)"


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train the generation then the selection model on this process",
        description="Train both stages, checkpoint every epoch, evaluate on the test split. Data: data.root, or "
        "the synthetic dataset built into the cache when it is empty. Each stage writes checkpoints/<stage>_last.pt "
        "and <stage>_best.pt (the epoch train.keep keeps: best by validation, or last; printed at the stage's end). "
        "Every checkpoint holds the optimizer state too, about 1 GiB per run with the cpu preset; hmh export writes "
        "slim copies for inference. Another hmh train writing the same folder is refused.",
    )
    train.add_argument("--config", default="cpu",
                       help=f"preset name ({', '.join(preset_names())}) or YAML path (default: cpu)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, e.g. --set model.num_hypotheses=8 (repeatable; for a string key the "
                       "text as written, spaces and # included)")
    train.add_argument("--out", type=Path, default=None, help="output folder (default: train.out_dir)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run the output folder holds (kept aside until this run succeeds, put back "
                       "when it fails, is interrupted or gets SIGTERM; after a SIGKILL the next hmh train into the "
                       "folder puts it back)")
    train.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: train.device)")
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
    ev.add_argument("--device", default=None, help=DEVICE_HELP)
    ev.add_argument("--max-samples", type=count(0, "0 = all"), default=None,
                    help="evaluate at most this many samples (0 = all)")
    ev.add_argument("--rule", choices=RULES, default=None,
                    help="how the hypotheses are ranked: learned (the selector's reward), reprojection (the 2D "
                         "reprojection error, no selector), combined (their product) (default: the checkpoint "
                         "config's selection.rule)")
    ev.add_argument("--reprojection-align", choices=REPROJECTION_ALIGNS, default=None,
                    help="how the reprojection and combined rules compare 2D joints: none (as they are), similarity "
                         "(centred and scaled onto the evidence: the 2D shape alone); a trained selector's evidence "
                         "keeps its own (default: the checkpoint config's selection.reprojection_align)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=run_evaluate)

    export = subparsers.add_parser(
        "export",
        help="write a checkpoint's slim copy for inference: weights and config, no optimizer state",
        description="Copy a checkpoint without its optimizer, scheduler and gradient-scaler state: the weights, "
        "config, stage, epoch and metrics that hmh predict and hmh evaluate need, at about a third of the size "
        "(AdamW keeps two values per weight). It cannot resume training.",
    )
    export.add_argument("--checkpoint", type=Path, required=True,
                        help="a .pt written by hmh train, or a Ray Train checkpoint folder")
    export.add_argument("--out", type=Path, required=True, help="the slim .pt to write")
    export.add_argument("--overwrite", action="store_true", help="replace the file --out names")
    export.set_defaults(func=run_export)


def _print(text: str) -> None:
    print(text, flush=True)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hmh.config import load_config
    from hmh.train.loop import resolve_device
    from hmh.train.runner import run_training

    cfg = load_config(args.config, args.overrides)
    if args.device is not None:
        resolve_device(args.device, "--device")
        cfg = replace(cfg, train=replace(cfg.train, device=args.device))
    progress = not args.no_progress and sys.stderr.isatty()
    result = run_training(cfg, args.out, echo=_print, progress=progress, overwrite=args.overwrite)
    p = result.paths
    _print(f"outputs in {p.root}:\n  config       {p.config}\n  checkpoints  {p.root / 'checkpoints'}\n"
           f"  tensorboard  {p.tensorboard}  (tensorboard --logdir {p.tensorboard})\n"
           f"  metrics      {result.metrics_md}, {result.metrics_json}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from hmh.files import folder_lock
    from hmh.files.outputs import check_folder
    from hmh.train.loop import resolve_device

    device = resolve_device(args.device or "auto", "--device")
    out = check_folder(args.out or args.checkpoint.resolve().parent.parent / f"eval-{args.split}", "--out")
    with folder_lock.exclusive(out):
        return _evaluate(args, out, device)


def _evaluate(args: argparse.Namespace, out: Path, device) -> int:
    """``hmh evaluate`` on ``device`` (a torch.device), holding ``out``'s lock."""
    from hmh.errors import HmhError
    from hmh.eval.report import write_metrics
    from hmh.files.outputs import check_free, naming_os_errors
    from hmh.models.checkpoint import models_from_checkpoint
    from hmh.train.loop import evaluate
    from hmh.train.runner import baseline_errors, data_root, eval_dataset, make_loader, report_text

    check_free(out, ("metrics.json", "metrics.md"), "--out", "a metric table", args.overwrite)
    loaded = models_from_checkpoint(args.checkpoint, device)
    cfg = loaded.config
    if args.rule:
        if args.rule != "reprojection" and loaded.selector is None:
            raise HmhError(f"--rule {args.rule}: {args.checkpoint} holds no selector (a generation-stage "
                           "checkpoint); --rule reprojection ranks without one")
        cfg = dataclasses.replace(cfg, selection=dataclasses.replace(cfg.selection, rule=args.rule))
    if args.reprojection_align:
        cfg = dataclasses.replace(cfg, selection=dataclasses.replace(cfg.selection,
                                                                     reprojection_align=args.reprojection_align))
    root = Path(args.data) if args.data else data_root(cfg, progress=not args.no_progress)
    dataset = eval_dataset(cfg, root, args.split, args.max_samples)
    loader = make_loader(dataset, cfg, train=False, device=device)
    progress = not args.no_progress and sys.stderr.isatty()
    metrics = evaluate(loaded.generator, loaded.selector, loader, cfg, device, progress=progress)
    try:
        metrics.update(baseline_errors(cfg, root, dataset))
    except HmhError as err:
        _print(f"no constant mean-pose row: the training split cannot be read: {err}")
    title = (f"{args.split} split ({len(dataset)} samples) of {root}, checkpoint {args.checkpoint}"
             + (f", ranked by selection.rule={args.rule}" if args.rule else "")
             + (f", selection.reprojection_align={args.reprojection_align}" if args.reprojection_align else ""))
    with naming_os_errors(out):
        json_path, md_path = write_metrics(out, metrics, title, extra={
            "checkpoint": str(args.checkpoint), "stage": loaded.stage, "epoch": loaded.epoch, "split": args.split,
            "data": str(root), "rule": cfg.selection.rule, "reprojection_align": cfg.selection.reprojection_align})
    _print(f"{title} (mm):\n{report_text(metrics)}\nwritten: {md_path}, {json_path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    import os

    from hmh.files.outputs import OutputError
    from hmh.models.checkpoint import export_checkpoint

    if args.out.is_dir():
        raise OutputError(f"--out {args.out}: is a folder; name the .pt file to write")
    if os.path.lexists(args.out) and not args.overwrite:
        raise OutputError(f"--out {args.out}: exists; pass --overwrite to replace it, or choose another file")
    path = export_checkpoint(args.checkpoint, args.out)
    _print(f"written: {path} ({path.stat().st_size / 2**20:.1f} MiB; weights and config, no optimizer state)")
    return 0
