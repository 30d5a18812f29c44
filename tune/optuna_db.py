"""A search's Optuna study (``optuna.db``, SQLite), tied to its experiment.

The study is created before Tune starts, named ``search.experiment`` and marked with a fingerprint of the
experiment config and the search space (a study user attribute). ``--resume`` checks, before Ray starts and
without writing, that ``optuna.db`` is a readable Optuna database holding that study with that fingerprint: a
damaged file, or another experiment's study copied in, stops the search with one line instead of a traceback from
inside Tune or a TPE that learns from the other experiment's trials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
from pathlib import Path

from hmh.config import Config, flatten
from hmh.errors import HmhError

__all__ = ["FINGERPRINT_ATTR", "StudyError", "check_study", "create_study", "fingerprint", "finished_trials"]

log = logging.getLogger(__name__)

FINGERPRINT_ATTR = "hmh_fingerprint"


class StudyError(HmhError):
    """``optuna.db`` cannot be read, or holds another experiment's study (the message names the file)."""


def fingerprint(cfg: Config, space_yaml: str, ignore: tuple[str, ...] = ()) -> str:
    """SHA-256 (hex) of the experiment config (every dotted key but ``ignore``) and the space's YAML."""
    values = {key: value for key, value in flatten(cfg).items() if key not in ignore}
    text = json.dumps(values, sort_keys=True, default=repr) + "\n" + space_yaml
    return hashlib.sha256(text.encode()).hexdigest()


def create_study(db: Path, name: str, objectives: int, mark: str) -> None:
    """Create the study ``name`` (``objectives`` minimised values) in ``db``, marked with the fingerprint ``mark``.
    ``OptunaSearch`` later loads it by name."""
    import optuna

    study = optuna.create_study(storage=optuna.storages.RDBStorage(f"sqlite:///{db}"), study_name=name,
                                directions=["minimize"] * objectives)
    study.set_user_attr(FINGERPRINT_ATTR, mark)


def _stored_fingerprint(db: Path, name: str) -> str | None:
    """The fingerprint of study ``name`` in ``db`` (None for a study without one). Raises :class:`StudyError`
    when ``db`` is not a sound Optuna database or holds no such study; reads only (a hot journal left by a killed
    process is rolled back, as Optuna would)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.absolute().as_uri()}?mode=rw", uri=True)) as con:
            check = con.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StudyError(f"{db}: the Optuna study database is damaged ({check and check[0]})")
            names = [row[0] for row in con.execute("SELECT study_name FROM studies ORDER BY study_id")]
            if name not in names:
                raise StudyError(f"{db} holds no study {name!r} (it holds {', '.join(map(repr, names)) or 'none'}): "
                                 "it is another search's; restore this search's optuna.db, or start a new "
                                 "search.experiment")
            row = con.execute("SELECT a.value_json FROM study_user_attributes a JOIN studies s ON "
                              "a.study_id = s.study_id WHERE s.study_name = ? AND a.key = ?",
                              (name, FINGERPRINT_ATTR)).fetchone()
    except sqlite3.Error as err:
        raise StudyError(f"{db}: not a readable Optuna study database ({err})") from None
    if row is None:
        return None
    try:
        value = json.loads(row[0])
    except ValueError:
        value = None
    if not isinstance(value, str):
        raise StudyError(f"{db}: study {name!r} has a damaged {FINGERPRINT_ATTR} attribute")
    return value


def check_study(db: Path, name: str, mark: str) -> None:
    """Raise :class:`StudyError` unless ``db`` holds the study ``name`` of this experiment (fingerprint ``mark``).
    A study without a fingerprint (created before studies had one) is accepted with a warning."""
    if not db.is_file():
        raise StudyError(f"{db}: missing or not a file; the search's Optuna study cannot be resumed without it")
    stored = _stored_fingerprint(db, name)
    if stored is None:
        log.warning("%s: study %r has no experiment fingerprint; it cannot be checked against this experiment",
                    db, name)
    elif stored != mark:
        raise StudyError(f"{db}: study {name!r} was created by another experiment (another config or search "
                         "space under the same search.experiment); restore this search's optuna.db, or start a "
                         "new search.experiment")


def finished_trials(db: Path, name: str) -> int:
    """How many trials of the study ``name`` in ``db`` are finished (COMPLETE, PRUNED or FAIL)."""
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
