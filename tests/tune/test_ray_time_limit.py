"""The time limit on Ray tests (tests/conftest.py): a Ray test that runs past it fails with what the machine was
doing and what holds the Ray cluster, and the Ray tests after it are skipped, while the others still run; so are
they after a Ray test whose Train run could not place its workers."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
STALLING = """\
import time

import pytest


@pytest.mark.ray
@pytest.mark.timeout(2)
def test_a_stalled_search():
    time.sleep(60)


@pytest.mark.ray
def test_a_later_ray_test():
    pass


def test_a_test_without_ray():
    pass
"""
FULL = STALLING.replace("@pytest.mark.timeout(2)\ndef test_a_stalled_search():\n    time.sleep(60)",
                        "def test_a_stalled_search():\n    print('WorkerGroupStartupTimeoutError: The worker group "
                        "startup timed out after 60.0 seconds waiting for 1 workers.')\n    assert False")


def run_pytest(tmp_path: Path, module: str) -> str:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_stall.py").write_text(module)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    ray: uses Ray\n")
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers", "-rs",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert "1 failed, 1 passed, 1 skipped" in out, out[-3000:]
    assert "what the machine was doing" in out and "load average" in out and " NI " in out
    assert "what holds the Ray cluster" in out and "Ray is not running in this process" in out
    assert "test_stall.py::test_a_stalled_search stalled on the Ray cluster" in out
    return out


def test_a_stalled_ray_test_fails_with_the_machine_state_and_skips_the_later_ones(tmp_path: Path) -> None:
    assert "Timeout (>2.0s) from pytest-timeout" in run_pytest(tmp_path, STALLING)


def test_a_train_run_that_cannot_place_its_workers_skips_the_later_ray_tests(tmp_path: Path) -> None:
    assert "worker group startup timed out" in run_pytest(tmp_path, FULL)
