"""Ctrl-C in the Ray drivers: one SIGINT is a ``KeyboardInterrupt``, whatever Ray was doing when it came.

Ray 2.60 replaces Python's SIGINT handler and does not put it back:

- ``Tuner.fit`` installs one that asks Tune to stop, and leaves it installed when the search ends normally, so a
  later Ctrl-C (in the final retrain) only logs "Stop signal received ... ending Ray Tune run";
- a Ray Train run started in the main thread installs one that aborts the run and then calls ``sys.exit(0)``
  inside ``ray.get``, which Ray turns into ``SystemExit(1)``: the process ends with status 1 and no message.

:func:`sigint_restored` puts the caller's handler back after such a call, and :func:`interruptible` gives a Train
trainer a handler that aborts its run the same way and then raises ``KeyboardInterrupt``, which the drivers report
in one line with exit status 130 (:func:`hmh.cli.run_reporting_errors`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["abort_then_interrupt", "interruptible", "sigint_restored"]

log = logging.getLogger(__name__)

Handler = Callable[[int, Any], None]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigint_restored() -> Iterator[None]:
    """Run the body, then put back the SIGINT handler it started with (main thread only: elsewhere Python
    refuses to change handlers, and Ray installs none)."""
    if not _main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def abort_then_interrupt(abort: Callable[[], object]) -> Handler:
    """A SIGINT handler: call ``abort()`` (stop a Train run: its workers, its controller), then raise
    ``KeyboardInterrupt``. A second Ctrl-C during the abort interrupts at once (Python's default handler)."""

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            abort()
        except Exception as err:  # the run already ended or its controller is gone: nothing left to abort
            log.debug("aborting the Train run after Ctrl-C: %s", err)
        raise KeyboardInterrupt

    return handler


def interruptible(trainer: Any) -> Any:
    """``trainer`` (a Ray Train ``DataParallelTrainer``) whose ``fit`` in the main thread answers Ctrl-C with
    :func:`abort_then_interrupt` instead of Ray's handler. Ray calls ``_register_sigint_handler(controller)``
    with the run's controller actor just before it waits for the run."""
    import ray

    def register(controller: Any) -> None:
        signal.signal(signal.SIGINT, abort_then_interrupt(lambda: ray.get(controller.abort.remote(), timeout=60)))

    trainer._register_sigint_handler = register
    return trainer
