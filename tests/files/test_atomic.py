"""hmh.files.atomic: all or nothing, and the permissions an ordinary write would give."""

import errno
import os
import stat
from pathlib import Path

import pytest

from hmh.files import atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_get_the_umask_mode_not_mkstemps_0600(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic.write_text(tmp_path / "a.md", "x")
        (tmp_path / "plain.md").write_text("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.md") == _mode(tmp_path / "plain.md") == 0o640


def test_replacing_a_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    path.write_text("old")
    path.chmod(0o604)
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_an_os_error_on_the_temporary_file_names_the_target(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    with pytest.raises(OSError) as caught:
        with atomic.atomic_path(target) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
