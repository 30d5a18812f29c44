"""``hmh data synth|preview|check``: build the synthetic BlurHand-format dataset, preview or validate a root."""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from hmh.cli import count
from hmh.config import SYNTHETIC_PROFILES, DataConfig
from hmh.data import preview


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="datasets: synthesize, preview, check")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _register_synth(commands)
    _register_preview(commands)
    _register_check(commands)


def _register_synth(commands) -> None:
    defaults = DataConfig()
    parser = commands.add_parser("synth", help="write a synthetic motion-blurred hand dataset in BlurHand's format")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    parser.add_argument("--train", type=int, default=defaults.synthetic_train,
                        help=f"training images (default {defaults.synthetic_train})")
    parser.add_argument("--test", type=int, default=defaults.synthetic_test,
                        help=f"test images (default {defaults.synthetic_test})")
    parser.add_argument("--size", type=int, default=defaults.synthetic_size,
                        help=f"image side in pixels (default {defaults.synthetic_size})")
    parser.add_argument("--subframes", type=int, default=defaults.synthetic_subframes,
                        help=f"sub-frames averaged per image, odd (default {defaults.synthetic_subframes})")
    parser.add_argument("--seed", type=int, default=defaults.synthetic_seed,
                        help=f"(default {defaults.synthetic_seed})")
    parser.add_argument("--profile", default=defaults.synthetic_profile, choices=SYNTHETIC_PROFILES,
                        help="distribution of hand orientations, cameras and clutter: 'full' (any orientation, "
                             "any camera) or 'bench' (near two opposite views; see hmh.data.motion) "
                             f"(default {defaults.synthetic_profile})")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes, 1 to twice the number of CPUs (default: up to 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_synth)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the generator's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_synth(args: argparse.Namespace) -> int:
    from hmh.data.synthetic import SynthArgs, build_dataset, is_complete

    if is_complete(args.out, SynthArgs(args.train, args.test, args.size, args.subframes, args.seed, args.profile)):
        print(f"{args.out}: already built with these arguments")
        return 0
    start, cpu = time.perf_counter(), _cpu_seconds()
    out = build_dataset(
        args.out, args.train, args.test, args.size, args.subframes, args.seed, args.profile,
        progress=not args.no_progress, workers=args.workers,
    )
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    images = args.train + args.test
    print(f"{out}: {images} images in {seconds:.1f} s ({images / seconds:.1f} images/s; "
          f"{1000 * cpu / max(images, 1):.1f} ms CPU per image)")
    return 0


def _register_preview(commands) -> None:
    parser = commands.add_parser("preview", help="contact sheet of blurred images with past/current/future joints")
    parser.add_argument("root", type=Path, help="BlurHand root (real or synthetic)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="split to draw (default test)")
    parser.add_argument("--n", type=int, default=16,
                        help=f"samples on the sheet, 1 to {preview.MAX_SAMPLES} (default 16)")
    parser.add_argument("--tile", type=int, default=256,
                        help=f"cell side in pixels, {preview.MIN_TILE} to {preview.MAX_TILE}; the sheet is at most "
                             f"{preview.MAX_SHEET_SIDE} px wide (default 256)")
    parser.set_defaults(func=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    from hmh.data.preview import PreviewError, check_size, contact_sheet
    from hmh.files.atomic import atomic_path

    check_size(args.n, args.tile)
    if args.out.is_dir():
        raise PreviewError(f"--out {args.out}: is a folder, expected the path of the PNG to write")
    sheet = contact_sheet(args.root, args.split, args.n, args.tile)
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"{args.out}: {args.root} ({args.split}); joints: blue past, green current, red future")
    return 0


def _register_check(commands) -> None:
    parser = commands.add_parser("check", help="validate a BlurHand root; print samples per split and hand type")
    parser.add_argument("root", type=Path, help="BlurHand root (real or synthetic)")
    parser.add_argument("--full", action="store_true", help="decode every image, not a sample")
    parser.add_argument("--images", type=count(0), default=200, help="images decoded per split without --full")
    parser.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from hmh.data.blurhand import check_root

    reports = check_root(args.root, full=args.full, max_images=args.images)
    for report in reports:
        print(report.summary())
        for problem in report.problems[:20]:
            print(f"  problem: {problem}")
        if len(report.problems) > 20:
            print(f"  ... and {len(report.problems) - 20} more")
    problems = sum(len(r.problems) for r in reports)
    print(f"{args.root}: {'ok' if not problems else f'{problems} problem(s)'}")
    return 1 if problems else 0
