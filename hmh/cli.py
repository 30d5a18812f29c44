"""``hmh`` command line: ``hmh mano|data|train|evaluate|export|predict|search|study|results ...``.

Each command group lives in its own module under :mod:`hmh.commands` and is discovered here, so adding a
group never touches this file; :data:`WORKFLOW` only orders the help (unlisted groups follow, by name). Heavy
imports happen inside the command handlers, keeping ``hmh --help`` fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import pkgutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import NoReturn

import hmh
from hmh import commands
from hmh.errors import HmhError

WORKFLOW = ("mano", "data", "train", "predict", "drivers", "results")  # command modules in the order of use
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}  # OSErrors only a write raises
EXIT_SIGTERM = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so it unwinds as Ctrl-C does (a replaced run is put back)."""


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
    names = [info.name for info in pkgutil.iter_modules(commands.__path__)]
    for name in sorted(names, key=lambda n: (WORKFLOW.index(n) if n in WORKFLOW else len(WORKFLOW), n)):
        importlib.import_module(f"{commands.__name__}.{name}").register(subparsers)
    return parser


def os_error_line(err: OSError) -> str:
    """One line for an OSError: ``cannot write FILE: No space left on device`` (or ``FILE: <reason>`` when it is
    not one only a write raises; just the reason when the error names no file)."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename is None:
        return reason
    return f"cannot write {err.filename}: {reason}" if err.errno in WRITE_ERRNOS else f"{err.filename}: {reason}"


@contextlib.contextmanager
def _command_context(prog: str) -> Iterator[None]:
    """While the block runs (on the main thread): SIGTERM raises :class:`Terminated` instead of ending the process
    where it stands, and an OSError that ends a background thread (TensorBoard's writer on a full disk) is one
    line instead of a traceback (the thread's owner raises it again in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
        raise Terminated()

    def thread_failed(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError):
            print(f"{prog}: error in a background thread: {os_error_line(args.exc_value)}", file=sys.stderr)
        else:
            previous_hook(args)

    previous, previous_hook = signal.signal(signal.SIGTERM, terminate), threading.excepthook
    threading.excepthook = thread_failed
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        threading.excepthook = previous_hook


def run_reporting_errors(prog: str, run: Callable[[], int | None]) -> int:
    """``run()`` as a command: an :class:`HmhError` becomes one line ``PROG: error: ...`` on stderr and exit status
    2; an OSError (a full disk, a read-only folder) one line naming its file and exit status 1; Ctrl-C exit status
    130 and SIGTERM 143, both after the same clean-up. Shared by ``hmh`` and the ``python -m tune.*`` drivers."""
    try:
        with _command_context(prog):
            return int(run() or 0)
    except BaseException as err:
        stop = _interruption(err)
        if isinstance(stop, Terminated):
            print(f"{prog}: terminated", file=sys.stderr)
            return EXIT_SIGTERM
        if stop is not None:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        if isinstance(err, HmhError):
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        if isinstance(err, OSError):
            print(f"{prog}: error: {os_error_line(err)}", file=sys.stderr)
            return 1
        raise


def _interruption(err: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind ``err``: itself, or the one it was raised while handling (a library that
    turns it into an error of its own as it unwinds, as torch.save's zip writer does)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    return run_reporting_errors(f"hmh {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
