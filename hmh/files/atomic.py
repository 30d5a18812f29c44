"""Atomic file writes: write beside the target, then rename, so a killed process never leaves half a file."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``path``, on error it is removed.

    The temporary name keeps the target's suffix, so writers that look at the extension (numpy, PIL) behave.
    The file gets the mode ``open()`` would give a new file (``0o666`` less the umask), or the replaced file's mode.
    An OSError about the temporary file (a full disk) is re-raised naming ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _file_mode(target))
        os.replace(tmp_path, target)
    except OSError as err:
        if err.filename not in (tmp, str(tmp_path)):
            raise
        raise OSError(err.errno, err.strerror, str(target)) from None  # name the file the user asked for
    finally:
        tmp_path.unlink(missing_ok=True)


def _file_mode(target: Path) -> int:
    """The replaced file's permission bits, else ``0o666`` less the process umask (mkstemp's own mode is 0o600)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))
