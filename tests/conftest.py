"""Shared test setup: a private, per-session cache so tests never touch the user's ~/.cache/hmh.

The cache is removed when the session ends (unless HMH_CACHE_DIR was set by the caller), and pytest keeps the
temporary directories of failed tests only (`tmp_path_retention_policy` in pyproject.toml): a run writes several
GB of checkpoints, which must not pile up on a CI disk.
"""

import os
import shutil
import tempfile

_OWN_CACHE: str | None = None


def pytest_configure(config):
    global _OWN_CACHE
    if "HMH_CACHE_DIR" not in os.environ:
        _OWN_CACHE = tempfile.mkdtemp(prefix="hmh-test-cache-")
        os.environ["HMH_CACHE_DIR"] = _OWN_CACHE


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
