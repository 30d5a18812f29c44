"""A damaged saved Tune search stops ``--resume`` in one line naming the file (tune.tune_state), where Tune itself
would log a traceback and start the search over. No Ray cluster is started."""

import pickle
from pathlib import Path

import pytest

from hmh.config import save_config
from tune.optuna_db import create_study
from tune.search import TUNE_NAME, load_experiment
from tune.tune_state import TuneStateError, check_tune_state, restore_tuner

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "tune" / "configs" / "demo.yaml")
STATE = '{"runner_data": {}, "trial_data": []}'


def test_a_damaged_newest_run_state_stops_a_resume_before_ray_starts(tmp_path: Path) -> None:
    storage = f"search.storage_path={tmp_path}"
    exp = load_experiment(DEMO, [storage])
    save_config(exp.cfg, exp.paths.config)
    exp.paths.space.write_text(exp.space.to_yaml())
    create_study(exp.paths.optuna_db, exp.cfg.search.experiment, len(exp.objectives), exp.fingerprint)
    folder = exp.paths.root / TUNE_NAME
    folder.mkdir()
    (folder / "experiment_state-2026-01-01_10-00-00.json").write_text(STATE)
    load_experiment(DEMO, [storage], resume=True)
    newest = folder / "experiment_state-2026-01-01_11-00-00.json"
    newest.write_text(STATE[:20])  # cut short, as a full disk or a killed copy leaves it
    with pytest.raises(TuneStateError) as info:
        load_experiment(DEMO, [storage], resume=True)
    message = str(info.value)
    assert message.startswith(f"{newest}: ") and "damaged" in message and "\n" not in message


@pytest.mark.parametrize("data", [b"", b"\x80\x04garbage", STATE.encode()[:10]])
def test_check_tune_state_reads_only_the_newest_file(tmp_path: Path, data: bytes) -> None:
    check_tune_state(tmp_path)  # nothing saved yet: a new search
    (tmp_path / "experiment_state-2026-01-01_09-00-00.json").write_bytes(data)  # an older, damaged one
    (tmp_path / "experiment_state-2026-01-01_10-00-00.json").write_text(STATE)
    check_tune_state(tmp_path)


@pytest.mark.parametrize("name", ["searcher-state-2026-01-01_10-00-00.pkl",
                                  "search_gen_state-2026-01-01_10-00-00.json"])
def test_a_damaged_searcher_state_is_found_without_unpickling_it(tmp_path: Path, name: str) -> None:
    (tmp_path / "experiment_state-2026-01-01_10-00-00.json").write_text(STATE)
    whole = pickle.dumps({"name:OptunaSearch": {"trials": [1, 2, 3]}})
    (tmp_path / name.replace("10-00", "09-00")).write_bytes(whole[:5])  # older: not read by Tune
    (tmp_path / name).write_bytes(whole)
    check_tune_state(tmp_path)
    (tmp_path / name).write_bytes(whole[:-3])
    with pytest.raises(TuneStateError, match=f"{tmp_path / name}: Ray Tune's saved search state is damaged"):
        check_tune_state(tmp_path)


def test_an_unreadable_tuner_pkl_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tuner.pkl").write_bytes(b"\x80\x04\x95 cut short")
    with pytest.raises(TuneStateError) as info:
        restore_tuner(str(tmp_path), lambda config: None, {}, {})
    assert str(info.value).startswith(f"{tmp_path}/tuner.pkl: Ray Tune cannot restore the search (")
    assert "\n" not in str(info.value)
