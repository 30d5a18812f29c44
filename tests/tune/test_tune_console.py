"""A resumed search prints like a new one (tune.tune_state.restore_tuner, tune.console.restore_console): Tune's
trial table, not its per-trial boxes, whatever console the first run had. No Ray cluster is started."""

import os
from pathlib import Path

import pytest

from tune.console import VERBOSE_ENV

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("first_run_verbose", [False, True])
def test_a_resumed_search_gets_the_trial_table_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       first_run_verbose: bool) -> None:
    import ray.tune

    import tune.search as search
    from tune.tune_state import restore_tuner

    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)  # a new process: only the first run had set it
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    exp = search.load_experiment(str(REPO / "tune" / "configs" / "demo.yaml"), [f"search.storage_path={tmp_path}"])
    # The RunConfig the first run saved: the trial table, or with --verbose Tune's default output.
    first = {"verbose": 3} if first_run_verbose else {"verbose": 1, "progress_reporter": ray.tune.CLIReporter()}
    saved = ray.tune.Tuner(lambda config: None, run_config=ray.tune.RunConfig(
        storage_path=str(tmp_path), name=search.TUNE_NAME, **first))
    monkeypatch.setattr(ray.tune.Tuner, "restore", lambda path, **kwargs: saved)

    restored = restore_tuner("unused", None, search._table_metrics(exp), search._table_parameters(exp))
    run_config = restored._local_tuner.get_run_config()
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"  # else Tune ignores the reporter and prints its boxes
    assert run_config.verbose == 1
    assert isinstance(run_config.progress_reporter, ray.tune.CLIReporter)
    assert run_config.progress_reporter._metric_columns == {"trial_epoch": "epoch",
                                                            "val/objective_mpjpe_current": "mpjpe (mm)"}


def test_a_verbose_resume_gets_tunes_default_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.tune

    from tune.console import restore_console, tune_console

    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    saved = ray.tune.Tuner(lambda config: None, run_config=ray.tune.RunConfig(
        storage_path=str(tmp_path), name="search", **tune_console({"trial_epoch": "epoch"}, {})))
    monkeypatch.setenv(VERBOSE_ENV, "1")
    restore_console(saved, {"trial_epoch": "epoch"}, {})
    run_config = saved._local_tuner.get_run_config()
    assert run_config.verbose is None and run_config.progress_reporter is None
