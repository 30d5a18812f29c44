"""``hmh results summarize results/<experiment>``: reprint a search's summary from its Parquet files alone."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("results", help="search results: summarize")
    commands = parser.add_subparsers(dest="results_command", metavar="SUBCOMMAND", required=True)
    summarize = commands.add_parser(
        "summarize",
        help="print a search's summary (best configuration, final table, comparison with the seed)",
        description="Rebuild summary.md's text from trials.parquet and final.parquet of an experiment folder "
        "(results/<experiment>) and print it. Needs neither Ray nor the checkpoints.",
    )
    summarize.add_argument("experiment", type=Path, help="experiment folder, e.g. results/demo")
    summarize.add_argument("--write", action="store_true", help="also rewrite <experiment>/summary.md")
    summarize.set_defaults(func=run_summarize)


def run_summarize(args: argparse.Namespace) -> int:
    from hmh.search_summary import summarize, write_summary

    text = summarize(args.experiment)
    print(text, end="" if text.endswith("\n") else "\n")
    if args.write:
        print(f"written: {write_summary(args.experiment)}")
    return 0
