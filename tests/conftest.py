"""Shared test setup: a private, per-session cache so tests never touch the user's ~/.cache/hmh."""

import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("HMH_CACHE_DIR", tempfile.mkdtemp(prefix="hmh-test-cache-"))
