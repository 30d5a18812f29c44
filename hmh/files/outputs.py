"""Output folders of ``hmh train``, ``evaluate`` and ``predict``, checked before any work is done, so that a
mistake costs neither a traceback late in a run nor the files of an earlier one.

- :func:`check_folder`: the path can be a folder here (it is not a file, no parent is a file, it does not lie
  under a symbolic link to something missing, and the nearest existing parent is writable);
- :func:`check_free`: that, and the folder holds none of the files a command would write, unless the user
  passed ``--overwrite``;
- :func:`replacing`: what ``--overwrite`` does to a run folder: the old files are set aside while the new run
  writes and deleted only when it succeeds; a run that fails or is interrupted leaves the old files as they were;
  :func:`restore_set_aside` puts back what a killed process left set aside;
- :func:`naming_os_errors`: an OSError that names no file (a full disk) re-raised naming the output folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hmh.errors import HmhError

__all__ = ["OutputError", "check_folder", "check_free", "naming_os_errors", "replacing", "restore_set_aside"]

ASIDE_PREFIX = ".hmh-replaced-"  # where replacing() keeps the old files meanwhile (left there by a killed process)


class OutputError(HmhError):
    """An output path that cannot be used; the message names the argument or key and the path."""


def check_folder(path: Path, name: str) -> Path:
    """``path``, or raise :class:`OutputError` naming ``name`` (``--out``, ``train.out_dir``) when it cannot be
    an output folder: it or a parent is an existing non-folder, it is or lies under a symbolic link to something
    missing (it could be neither made nor written), or the folder it would be made in is read-only."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{name} {path}: exists and is not a folder")
    parent = path.absolute()
    while not parent.exists():
        if parent.is_symlink():
            raise OutputError(f"{name} {path}: {parent} is a symbolic link to {os.readlink(parent)}, which does "
                              "not exist")
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{name} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{name} {path}: {parent} is not writable")
    return path


def check_free(folder: Path, names: Sequence[str], name: str, what: str, overwrite: bool = False) -> Path:
    """:func:`check_folder`, then refuse (unless ``overwrite``) when ``folder`` already holds any of ``names``,
    the entries a command writes there; ``what`` says whose they are ("a run", "an evaluation")."""
    check_folder(folder, name)
    found = [n for n in names if os.path.lexists(folder / n)]
    if found and not overwrite:
        raise OutputError(f"{name} {folder}: already holds {what} ({', '.join(found)}); pass --overwrite to "
                          "replace it, or choose another folder")
    return folder


@contextlib.contextmanager
def replacing(folder: Path, names: Sequence[str]) -> Iterator[None]:
    """Run the block with ``folder``'s entries ``names`` out of the way: those present are moved into a hidden
    ``.hmh-replaced-*`` folder inside ``folder`` first. When the block succeeds they are deleted; when it raises
    (an error or Ctrl-C), what it wrote under ``names`` is deleted and the old entries are moved back."""
    folder.mkdir(parents=True, exist_ok=True)
    present = [n for n in names if os.path.lexists(folder / n)]
    if not present:
        yield
        return
    aside = Path(tempfile.mkdtemp(prefix=ASIDE_PREFIX, dir=folder))
    for n in present:
        os.replace(folder / n, aside / n)
    try:
        yield
    except BaseException:
        for n in names:
            _remove(folder / n)
        for n in present:
            os.replace(aside / n, folder / n)
        aside.rmdir()
        raise
    shutil.rmtree(aside)


def restore_set_aside(root: Path, name: str, echo: Callable[[str], None]) -> None:
    """Put back the old run that a killed ``--overwrite`` (SIGKILL, power loss) left in ``root/.hmh-replaced-*``;
    when the killed run's own files are in ``root`` too, raise naming both rather than choosing. Call it holding
    ``root``'s lock (:mod:`hmh.files.folder_lock`), so that no live run's set-aside folder is taken for a leftover."""
    for aside in sorted(root.glob(f"{ASIDE_PREFIX}*")) if root.is_dir() else []:
        held = sorted(p.name for p in aside.iterdir())
        clash = [n for n in held if os.path.lexists(root / n)]
        if clash:
            raise OutputError(
                f"{name} {root}: an interrupted --overwrite left the run it was replacing in {aside} "
                f"({', '.join(held)}) beside its own partial {', '.join(clash)}; to restore the old run, delete "
                f"those and move the contents of {aside} back into {root}; to keep the partial one, delete {aside}")
        for n in held:
            os.replace(aside / n, root / n)
        aside.rmdir()
        echo(f"restored the run an interrupted --overwrite had set aside in {aside}: {', '.join(held)}")


@contextlib.contextmanager
def naming_os_errors(folder: Path) -> Iterator[None]:
    """Re-raise an OSError that names no file (a write on a full disk, TensorBoard's writer) as one naming
    ``folder``, the output folder being written."""
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(folder)) from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
