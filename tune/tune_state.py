"""Ray Tune's saved search (``results/<experiment>/search/``) on ``--resume``: checked before Ray starts, restored
with the console of a new run, and stopped in one line when it is damaged.

Tune 2.60 itself treats a run state it cannot read as a new experiment: it logs the traceback, "Restarting
experiment", and runs every trial again. :func:`check_tune_state` first checks, without unpickling, that the
files Tune will read are whole, and :func:`restore_tuner` turns an unreadable ``tuner.pkl`` into one line as
well. Restoring unpickles Tune's files: see docs/security.md.
"""

from __future__ import annotations

import json
import logging
import pickletools
from pathlib import Path
from typing import Any

from hmh.errors import HmhError
from tune.console import restore_console

__all__ = ["TuneStateError", "check_tune_state", "restore_tuner"]

log = logging.getLogger(__name__)

STATE_GLOB = "experiment_state-*.json"  # Tune's run state (JSON with pickled values); the newest sorts last
PICKLE_GLOBS = ("searcher-state-*.pkl", "search_gen_state-*.json")  # the searcher's state: pickles, both


class TuneStateError(HmhError):
    """The saved Tune search cannot be restored (the message names the file)."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _newest(folder: Path, pattern: str) -> Path | None:
    """The file Tune restores: the name of ``pattern`` in ``folder`` that sorts last (timestamped names)."""
    return max(folder.glob(pattern), default=None)


def check_tune_state(folder: Path) -> None:
    """Raise :class:`TuneStateError` unless the newest files Tune restores from ``folder`` are whole: the run state
    ``experiment_state-*.json`` parses as JSON, and the searcher's pickles are complete pickle streams (walked with
    :func:`pickletools.genops`, which builds no object). A folder without a run state passes: Tune never saved
    that search, and starts it anew."""
    state = _newest(folder, STATE_GLOB)
    if state is None:
        return
    path = state
    try:
        json.loads(state.read_text(encoding="utf-8"))
        for pattern in PICKLE_GLOBS:
            path = _newest(folder, pattern)
            if path is not None:
                for _ in pickletools.genops(path.read_bytes()):
                    pass
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise TuneStateError(f"{path}: Ray Tune's saved search state is damaged ({_one_line(err)}); restore it "
                             "from a backup, or start a new search.experiment") from None


def restore_tuner(tune_path: str, trainable: Any, metric_columns: dict[str, str],
                  parameter_columns: dict[str, str]) -> Any:
    """``ray.tune.Tuner.restore`` of the search in ``tune_path`` (finished and errored trials kept, unfinished
    ones continued), printing like a new search (:func:`tune.console.restore_console`). Raises
    :class:`TuneStateError` when ``tuner.pkl`` cannot be read."""
    import ray.tune

    try:
        tuner = ray.tune.Tuner.restore(tune_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
    except Exception as err:  # a damaged tuner.pkl, or one pickled by another Ray or Python version
        log.debug("Tuner.restore(%s) failed", tune_path, exc_info=True)
        raise TuneStateError(f"{tune_path}/tuner.pkl: Ray Tune cannot restore the search ({_one_line(err)}); "
                             "restore it from a backup, or start a new search.experiment") from None
    restore_console(tuner, metric_columns, parameter_columns)
    return tuner
