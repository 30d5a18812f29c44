"""``hmh`` command line: ``hmh mano|data|train|evaluate|predict|results ...``.

Each command group lives in its own module under :mod:`hmh.commands` and is discovered here, so adding a
group never touches this file. Heavy imports happen inside the command handlers, keeping ``hmh --help`` fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable

import hmh
from hmh import commands
from hmh.errors import HmhError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hmh",
        description="Multi-hypothesis 3D hand mesh sequences from a single motion-blurred image.",
    )
    parser.add_argument("--version", action="version", version=f"hmh {hmh.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(subparsers)
    return parser


def run_reporting_errors(prog: str, run: Callable[[], int | None]) -> int:
    """``run()`` as a command: an :class:`HmhError` becomes one line ``PROG: error: ...`` on stderr and exit status
    2, Ctrl-C exit status 130. Shared by ``hmh`` and the ``python -m tune.*`` drivers."""
    try:
        return int(run() or 0)
    except HmhError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    return run_reporting_errors(f"hmh {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
