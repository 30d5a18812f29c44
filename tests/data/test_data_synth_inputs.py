"""`hmh data synth` arguments and output places at and beyond their bounds: one line, nothing left behind."""

from __future__ import annotations

import os

import pytest

from hmh.cli import main
from hmh.data import synthetic

TINY = ["--train", "2", "--test", "0", "--size", "32", "--subframes", "1", "--no-progress"]


@pytest.mark.parametrize("workers", ["0", "-1", str(2 * (os.cpu_count() or 1) + 1), "1000000"])
def test_workers_out_of_bounds_are_one_line(tmp_path, one_line_error, workers):
    assert main(["data", "synth", "--out", str(tmp_path / "ds"), *TINY, "--workers", workers]) == 2
    assert f"--workers must be between 1 and {2 * (os.cpu_count() or 1)}" in one_line_error()
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()


def test_the_pool_never_outnumbers_the_work_units(monkeypatch):
    monkeypatch.setattr(synthetic, "render_chunk", lambda task: [task])
    monkeypatch.setattr(synthetic.multiprocessing, "get_context", lambda kind: pytest.fail("no pool for one task"))
    assert list(synthetic._run(["only"], workers=4)) == [["only"]]


def test_out_as_a_dangling_symlink_is_refused_and_kept(tmp_path, one_line_error):
    out = tmp_path / "ds"
    out.symlink_to(tmp_path / "elsewhere")
    assert main(["data", "synth", "--out", str(out), *TINY]) == 2
    assert f"{out} exists (or is a symbolic link)" in one_line_error()
    assert os.readlink(out) == str(tmp_path / "elsewhere") and not (tmp_path / "ds.partial").exists()


def test_a_failed_final_rename_leaves_no_partial_folder(tmp_path, monkeypatch):
    real = os.replace

    def replace(source, target):
        if str(source).endswith(".partial"):
            raise OSError(18, "Invalid cross-device link", str(source), None, str(target))
        real(source, target)

    monkeypatch.setattr(synthetic.os, "replace", replace)
    assert main(["data", "synth", "--out", str(tmp_path / "ds"), *TINY]) == 1
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()
