"""``hmh results summarize results/<experiment>``: reprint a search's or a reproduction study's summary from its
Parquet files alone."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("results", help="search results: summarize")
    commands = parser.add_subparsers(dest="results_command", metavar="SUBCOMMAND", required=True)
    summarize = commands.add_parser(
        "summarize",
        help="print a search's summary (best or picked configuration, a two-objective search's Pareto front, final "
        "table, comparison with the dissertation) or a study's "
        "(the dissertation's Tables 4.1-4.3 with their shape checks)",
        description="Rebuild summary.md's text from the Parquet files of an experiment folder (results/<experiment>: "
        "a search's trials.parquet, final.parquet and pareto.parquet, or a python -m tune.study study's "
        "test.parquet and epochs.parquet) and print it. Needs neither Ray nor the checkpoints.",
    )
    summarize.add_argument("experiment", type=Path, help="experiment folder, e.g. results/demo")
    summarize.add_argument("--write", action="store_true", help="also rewrite <experiment>/summary.md")
    summarize.set_defaults(func=run_summarize)


def run_summarize(args: argparse.Namespace) -> int:
    from hmh.results import search_summary
    from hmh.results import study as study_results

    module = study_results if study_results.is_study(args.experiment) else search_summary
    text = module.summarize(args.experiment)
    print(text, end="" if text.endswith("\n") else "\n")
    if args.write:
        print(f"written: {module.write_summary(args.experiment)}")
    return 0
