"""What the tests that start their own Ray processes share: killing a set of processes and polling for a state."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest


def sigkill(pids: list[int]) -> None:
    """SIGKILL each of ``pids``; one that has already gone is skipped."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(what: str, check: Callable[[], object], timeout: float, describe: Callable[[], str] = lambda: "",
             interval: float = 0.5):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (plus ``describe()``) at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{describe()}")
        time.sleep(interval)
