"""A search's optuna.db is tied to its experiment (tune.optuna_db): ``--resume`` stops in one line naming the file
when it is damaged or another experiment's, and a new search never adopts a study it finds. No Ray."""

from pathlib import Path

import pytest

from hmh.config import ConfigError, save_config
from hmh.errors import HmhError
from tune.optuna_db import StudyError, create_study
from tune.search import TUNE_NAME, Experiment, build_parser, load_experiment, run_args

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "tune" / "configs" / "demo.yaml")
PARETO = str(REPO / "tune" / "configs" / "demo_pareto.yaml")


def started(config: str, overrides: list[str]) -> Experiment:
    """What run_search writes before Tune starts: the config, the space and the marked study."""
    exp = load_experiment(config, overrides)
    save_config(exp.cfg, exp.paths.config)
    exp.paths.space.write_text(exp.space.to_yaml())
    create_study(exp.paths.optuna_db, exp.cfg.search.experiment, len(exp.objectives), exp.fingerprint)
    return exp


def test_the_study_of_the_same_experiment_resumes_and_may_change_the_pick(tmp_path: Path) -> None:
    storage = f"search.storage_path={tmp_path}"
    started(PARETO, [storage])
    assert load_experiment(PARETO, [storage, "search.pick=max_ms=20"], resume=True).cfg.search.pick == "max_ms=20"


@pytest.mark.parametrize(("damage", "says"), [
    (lambda data: b"not a database at all " * 200, "not a readable Optuna study database"),
    (lambda data: data[: len(data) // 2], "optuna.db"),
    (lambda data: b"", "no such table"),
    (lambda data: data[:100] + b"\xff" * 4000 + data[4100:], "optuna.db"),
])
def test_a_damaged_study_stops_a_resume_in_one_line_and_is_left_as_it_was(tmp_path: Path, damage,
                                                                          says: str) -> None:
    storage = f"search.storage_path={tmp_path}"
    exp = started(DEMO, [storage])
    db = exp.paths.optuna_db
    db.write_bytes(damage(db.read_bytes()))
    before = db.read_bytes()
    with pytest.raises(StudyError) as info:
        load_experiment(DEMO, [storage], resume=True)
    message = str(info.value)
    assert message.startswith(str(db)) and says in message and "\n" not in message
    assert db.read_bytes() == before


def test_another_experiments_study_is_refused(tmp_path: Path) -> None:
    ours = started(DEMO, [f"search.storage_path={tmp_path / 'a'}"])
    other = started(DEMO, [f"search.storage_path={tmp_path / 'b'}", "search.experiment=other"])
    ours.paths.optuna_db.write_bytes(other.paths.optuna_db.read_bytes())  # another search's file copied in
    with pytest.raises(StudyError, match=r"holds no study 'demo' \(it holds 'other'\)"):
        load_experiment(DEMO, [f"search.storage_path={tmp_path / 'a'}"], resume=True)


def test_a_study_of_another_config_under_the_same_name_is_refused(tmp_path: Path) -> None:
    ours = started(DEMO, [f"search.storage_path={tmp_path / 'a'}"])
    other = started(DEMO, [f"search.storage_path={tmp_path / 'b'}", "optim.lr=0.5"])
    ours.paths.optuna_db.write_bytes(other.paths.optuna_db.read_bytes())
    with pytest.raises(StudyError, match="created by another experiment"):
        load_experiment(DEMO, [f"search.storage_path={tmp_path / 'a'}"], resume=True)


def test_a_started_search_without_its_study_is_refused(tmp_path: Path) -> None:
    storage = f"search.storage_path={tmp_path}"
    exp = started(DEMO, [storage])
    (exp.paths.root / TUNE_NAME).mkdir()
    exp.paths.optuna_db.unlink()
    with pytest.raises(StudyError, match="missing"):
        load_experiment(DEMO, [storage], resume=True)


def test_a_new_search_does_not_adopt_a_study_it_finds(tmp_path: Path) -> None:
    storage = f"search.storage_path={tmp_path}"
    exp = started(DEMO, [storage])
    exp.paths.config.unlink()
    exp.paths.space.unlink()
    with pytest.raises(ConfigError, match="already holds a search"):
        load_experiment(DEMO, [storage])


def test_the_command_prints_one_line_and_exits_2(tmp_path: Path, capsys) -> None:
    from tune.cli import main

    storage = f"search.storage_path={tmp_path}"
    exp = started(DEMO, [storage])
    exp.paths.optuna_db.write_bytes(b"\x00garbage" * 1000)
    assert main("tune.search", run_args, build_parser(), ["--config", DEMO, "--set", storage, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tune.search: error: {exp.paths.optuna_db}") and err.count("\n") == 1
    assert issubclass(StudyError, HmhError)
