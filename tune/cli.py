"""What the ``python -m tune.<verb>`` drivers share: common arguments, logging, one-line errors."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from hmh.cli import run_reporting_errors
from tune.console import set_verbose

__all__ = ["add_config_args", "echo", "main", "repo_path"]

REPO = Path(__file__).resolve().parent.parent


def add_config_args(parser: argparse.ArgumentParser, default_config: str) -> None:
    parser.add_argument("--config", default=default_config,
                        help=f"experiment YAML or preset name (default: {default_config})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set search.num_samples=8 (repeatable)")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (auto, HOST:PORT, ray://...) instead of starting a local one")
    parser.add_argument("--verbose", action="store_true",
                        help="also print Ray Train's own progress lines and every report's metrics dict")


def repo_path(text: str) -> str:
    """``text`` as given when it exists (or is a preset name); else the repository's file of that relative path
    (``tune/configs/demo.yaml`` works from any directory); else unchanged, for the loader to report."""
    path = Path(text)
    if path.exists() or path.is_absolute() or not (REPO / path).exists():
        return text
    return str(REPO / path)


def echo(text: str) -> None:
    """Console output a person follows (flushed: Ray interleaves its own lines)."""
    print(text, flush=True)


def main(prog: str, run: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
         argv: list[str] | None = None) -> int:
    """Parse, set up logging, run; an :class:`HmhError` becomes one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    set_verbose(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_reporting_errors(prog, lambda: run(args))
