"""hmh.files.folder_lock: one writer per output folder, released with the process, and clear when it cannot lock."""

import os
import subprocess
import sys

import pytest

from hmh.errors import HmhError
from hmh.files import folder_lock


def test_a_second_holder_is_refused_naming_the_first_and_the_lock_is_reusable(tmp_path):
    out = tmp_path / "out"
    with folder_lock.exclusive(out) as path:
        assert path == tmp_path / ".out.lock"
        child = subprocess.run([sys.executable, "-c", "from hmh.files import folder_lock\n"
                                f"with folder_lock.exclusive({str(out)!r}): pass"], capture_output=True, text=True)
        assert child.returncode != 0 and f"is being written by hmh process {os.getpid()}" in child.stderr
    with folder_lock.exclusive(out):  # released at the end of the block
        pass
    assert not out.exists()  # the lock never creates the folder itself


def test_a_folder_under_a_file_names_the_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(HmhError, match=f"{tmp_path / 'file'} is a file, not a folder"):
        with folder_lock.exclusive(tmp_path / "file" / "sub" / "out"):
            pass
