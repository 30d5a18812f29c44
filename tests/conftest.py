"""Shared test setup: a private, per-session cache so tests never touch the user's ~/.cache/hmh.

The cache is removed when the session ends (unless HMH_CACHE_DIR was set by the caller), and pytest keeps the
temporary directories of failed tests only (`tmp_path_retention_policy` in pyproject.toml): a run writes several
GB of checkpoints, which must not pile up on a CI disk.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from blurhand_fixture import Fixture, build_fixture, private_copy

_OWN_CACHE: str | None = None


def pytest_configure(config):
    global _OWN_CACHE
    if "HMH_CACHE_DIR" not in os.environ:
        _OWN_CACHE = tempfile.mkdtemp(prefix="hmh-test-cache-")
        os.environ["HMH_CACHE_DIR"] = _OWN_CACHE


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture
def snapshot():
    """``snapshot(folder)``: every entry under ``folder``, files with their bytes and mtime, so a test can check
    that a refused or failed command changed nothing that existed before."""

    def take(folder: Path) -> dict[str, tuple[bytes, int] | None]:
        return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
                for p in sorted(folder.rglob("*"))}

    return take


@pytest.fixture
def one_line_error(capsys):
    """``one_line_error()``: the captured stderr, checked to be a single ``hmh ...: error:`` line without a
    traceback."""

    def read() -> str:
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and "\n" not in err and ": error: " in err, err
        return err

    return read


@pytest.fixture(scope="module")
def _pristine(tmp_path_factory) -> Fixture:
    return build_fixture(tmp_path_factory.mktemp("pristine") / "blurhand")


@pytest.fixture
def fixture(_pristine, tmp_path) -> Fixture:
    """A private copy of the BlurHand-format fixture root (``blurhand_fixture``; tests edit its files), built once
    per module."""
    return private_copy(_pristine, tmp_path)
