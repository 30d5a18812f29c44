"""One writer per output folder: an exclusive ``flock`` on a hidden file beside the folder.

``hmh train``, ``hmh predict``, ``hmh evaluate`` and ``hmh data synth`` each hold the lock of their ``--out`` for
the whole run, so a second command into the same folder stops at once with one line instead of mixing its files
with the first one's. The lock file sits beside the folder (``.<name>.lock``), so it survives the folder's
replacement and never appears inside the outputs. The kernel releases it when the process ends, killed or not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from hmh.errors import HmhError


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``<parent>/.<name>.lock``."""
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, wait: bool = False) -> Iterator[Path]:
    """Hold ``folder``'s lock for the ``with`` block; yield the lock file's path.

    ``wait=False``: raise :class:`HmhError` at once when another process holds it; ``wait=True``: block until it is
    free (for builders whose second caller should find the first one's result).
    """
    path = lock_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as err:
        blocker = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else err.strerror or err
        raise HmhError(f"cannot create the lock file {path}: {reason}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise HmhError(f"cannot lock {path}: {err.strerror or err}") from None
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise HmhError(
                f"{Path(folder)} is being written by {holder} (lock {path}); wait for it to end or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"hmh process {os.getpid()}\n")
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
