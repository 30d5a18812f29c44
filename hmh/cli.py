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
from typing import NoReturn

import hmh
from hmh import commands
from hmh.errors import HmhError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, as :func:`run_reporting_errors` gives: ``PROG: error: ...``, exit status 2
    (the sub-commands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def count(minimum: int = 0, note: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``; ``note`` says what a special value means ("0 = all")."""
    expected = f"an integer >= {minimum}" + (f" ({note})" if note else "")

    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {expected}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
