"""Ctrl-C in the Ray drivers (tune.interrupt): one SIGINT becomes a KeyboardInterrupt after the Train run is
aborted, Ray's handlers do not outlive the calls that installed them, and an interrupted final retrain of a search
ends with one line and exit status 130. No Ray cluster is started."""

import inspect
import signal
import types
from pathlib import Path

import pytest

from tune.interrupt import interruptible, sigint_restored

REPO = Path(__file__).resolve().parents[2]


def test_sigint_restored_puts_back_the_handler_a_call_replaced() -> None:
    before = signal.getsignal(signal.SIGINT)
    with sigint_restored():
        signal.signal(signal.SIGINT, lambda signum, frame: None)  # what Tuner.fit and Train leave behind
    assert signal.getsignal(signal.SIGINT) is before


def test_a_train_run_is_aborted_then_interrupted_by_one_sigint(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    aborted = []
    controller = types.SimpleNamespace(abort=types.SimpleNamespace(remote=lambda: "abort-ref"))

    def fake_get(ref, timeout=None):
        aborted.append(ref)
        raise ray.exceptions.RayActorError()  # the controller exits as it aborts

    monkeypatch.setattr(ray, "get", fake_get)
    trainer = interruptible(types.SimpleNamespace())
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), sigint_restored():
        trainer._register_sigint_handler(controller)  # what Ray Train's fit calls before it waits
        signal.raise_signal(signal.SIGINT)
    assert aborted == ["abort-ref"]
    assert signal.getsignal(signal.SIGINT) is before


def test_ray_train_registers_its_sigint_handler_through_the_replaced_method() -> None:
    """The hook :func:`interruptible` replaces is what this Ray version calls (a Ray upgrade that renames it
    fails here, not on a user's Ctrl-C)."""
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    source = inspect.getsource(DataParallelTrainer._initialize_and_run_controller)
    assert "self._register_sigint_handler(controller)" in source


def test_an_interrupted_final_retrain_says_what_is_kept_and_exits_130(tmp_path: Path, monkeypatch, capsys) -> None:
    import tune.search as search

    exp = search.load_experiment(str(REPO / "tune" / "configs" / "demo.yaml"),
                                 [f"search.storage_path={tmp_path}", "search.final_retrain=true"])

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(search, "_chosen_trial", lambda exp, rows: rows[0])
    monkeypatch.setattr(search, "_final_retrain", interrupted)
    assert search._finish(exp, exp.cfg, [{"trial_id": "a"}, {"trial_id": "b"}], "") == 130
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("final retrain interrupted: the 2 trial(s) stay in ")
    assert "--resume" in lines[0] and str(exp.paths.root) in lines[0]


def test_an_interrupted_study_exits_130_not_0(capsys) -> None:
    from tune.study import _exit_status

    assert _exit_status([], 0) == 0
    assert _exit_status(["K=8"], 1) == 1
    assert _exit_status(["K=8", "K=16"], 0) == 130  # Ctrl-C: Tune returns with arms left and none failed
    assert "study interrupted: arm(s) K=8, K=16 not finished" in capsys.readouterr().out


def test_an_interrupted_training_run_says_how_to_resume_and_exits_130(tmp_path: Path, monkeypatch, capsys) -> None:
    import argparse

    import tune.resources
    import tune.storage
    import tune.train as train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "prepare_config", lambda cfg, progress: cfg)  # no dataset, no Ray
    monkeypatch.setattr(tune.resources, "init_ray", lambda address, echo: "")
    monkeypatch.setattr(tune.storage, "check_shared_storage", lambda storage_path: None)
    monkeypatch.setattr(train, "run_two_stage", interrupted)
    args = argparse.Namespace(config=str(REPO / "tune" / "configs" / "demo.yaml"), name="run", address=None,
                              overrides=[f"search.storage_path={tmp_path}"])
    assert train.run_args(args) == 130
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run 'run' interrupted: its checkpoints stay in ")
    assert "same command to resume" in lines[0]
