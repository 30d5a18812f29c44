"""Shared test setup: a private, per-session cache so tests never touch the user's ~/.cache/hmh, and a time limit
on every Ray test.

The cache is removed when the session ends (unless HMH_CACHE_DIR was set by the caller), and pytest keeps the
temporary directories of failed tests only (`tmp_path_retention_policy` in pyproject.toml): a run writes several
GB of checkpoints, which must not pile up on a CI disk.

A Ray test that runs past ``RAY_TEST_TIMEOUT_S`` fails (pytest-timeout) with what the machine was doing (load,
the busiest processes and their niceness). A failed Ray test also reports what holds the cluster: its free
resources and every live placement group. After a time limit, or a Train run that could not place its workers
("worker group startup timed out"), the Ray tests that follow are skipped, as what held the cluster may hold it
still: a stalled cluster costs one time limit, not one per test.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from blurhand_fixture import Fixture, build_fixture, private_copy

RAY_TEST_TIMEOUT_S = 600  # the slowest Ray test takes 2.5 min on a 2-core AVX-512 EPYC, 4.5 min on a 2-core AVX2 one
_OWN_CACHE: str | None = None
_RAY_STALLED: list[str] = []  # the Ray test that ran past its time limit or found the cluster full, once one has
# a Ray test's failure that says the cluster is stalled: its time limit, or a Train run that could not place its workers
STALLED = ("Timeout (>", "worker group startup timed out")


def pytest_configure(config):
    global _OWN_CACHE
    if "HMH_CACHE_DIR" not in os.environ:
        _OWN_CACHE = tempfile.mkdtemp(prefix="hmh-test-cache-")
        os.environ["HMH_CACHE_DIR"] = _OWN_CACHE


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(RAY_TEST_TIMEOUT_S))


def pytest_runtest_setup(item):
    if _RAY_STALLED and "ray" in item.keywords:
        pytest.skip(f"{_RAY_STALLED[0]} stalled on the Ray cluster; what held it may hold it still")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and "ray" in item.keywords:
        report.sections.append(("what the machine was doing", machine_state()))
        report.sections.append(("what holds the Ray cluster", ray_state()))
        text = str(report.longrepr) + report.capstdout + report.capstderr
        if any(sign in text for sign in STALLED) and not _RAY_STALLED:
            _RAY_STALLED.append(item.nodeid)
    return report


def machine_state() -> str:
    """The load averages and the ten busiest processes with their niceness (Ray starts its workers at 15 unless
    told otherwise, where any busy process at 0 starves them)."""
    try:
        ps = subprocess.run(["ps", "-ww", "-eo", "pid,ni,pcpu,etime,args", "--sort=-pcpu"], capture_output=True,
                            text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as exc:
        ps = [f"ps failed: {exc}"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join([f"load average {load} on {os.cpu_count()} CPUs", *(line[:200] for line in ps[:11])])


def ray_state() -> str:
    """This process's Ray cluster: its free and total resources and every live placement group
    (:func:`tune.placement.describe_groups`), or why it cannot say."""
    try:
        import ray

        if not ray.is_initialized():
            return "Ray is not running in this process"
        from tune.placement import describe_groups

        free, total = ray.available_resources(), ray.cluster_resources()
        shown = ", ".join(f"{name} {free.get(name, 0.0):g} of {total[name]:g}" for name in ("CPU", "GPU")
                          if name in total)
        return "\n".join([f"free: {shown}", *describe_groups()])
    except Exception as exc:  # a report must not hide the failure it describes
        return f"could not read the Ray cluster: {exc!r}"


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
