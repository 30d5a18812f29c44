"""What the search's Optuna searcher tells Optuna (tune.searcher), without Ray: a trial stopped before its last
epoch is PRUNED with every value it reported, a finished one COMPLETE with its final value, an errored one FAIL;
the state survives OptunaSearch's save/restore without a trial being told twice; two objectives are Ray's.
search.scheduler=brief_then_finish: rounds are drawn, decided on the values at the brief, and the best finished
as trials that continue them and report to their Optuna trial."""

import math
import pickle
from pathlib import Path

import optuna
import pytest
from ray.tune.search import Searcher

from hmh.config import load_config, to_dict
from hmh.results.tables import OBJECTIVE
from tune.searcher import (
    CONTINUES,
    BriefRung,
    BriefThenFinishSearch,
    EpochAwareOptunaSearch,
    kept,
    round_sizes,
    told_state,
)
from tune.space import DefineByRun, load_space

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "tune" / "configs" / "demo.yaml"  # 2 generation + 1 selection epochs, K = 4
SPACE = """\
parameters:
  selection.top_n: {type: int, low: 1, high: model.num_hypotheses}
  optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
"""


@pytest.mark.parametrize(("result", "total", "error", "state"), [
    ({OBJECTIVE: 90.0, "trial_epoch": 1}, 3, False, "PRUNED"),  # ASHA stopped it at its first rung
    ({OBJECTIVE: 90.0, "trial_epoch": 3}, 3, False, "COMPLETE"),
    ({OBJECTIVE: 90.0, "trial_epoch": 2}, 2, False, "COMPLETE"),  # top_n = K: no selection stage to wait for
    ({OBJECTIVE: 90.0, "trial_epoch": 3}, 3, True, "FAIL"),
    ({OBJECTIVE: math.nan, "trial_epoch": 3}, 3, False, "FAIL"),  # Optuna takes no NaN as a final value
    ({OBJECTIVE: math.nan, "trial_epoch": 1}, 3, False, "PRUNED"),
    ({"trial_epoch": 1}, 3, False, "PRUNED"),
    (None, 3, False, "PRUNED"),  # removed before it ran
])
def test_the_told_state_follows_the_trials_epochs(result, total: int, error: bool, state: str) -> None:
    assert told_state(result, OBJECTIVE, total, error) == state


POINTS = [{"selection.top_n": 2, "optim.lr": 1e-3}, {"selection.top_n": 4, "optim.lr": 1e-3},
          {"selection.top_n": 1, "optim.lr": 1e-3}, {"selection.top_n": 1, "optim.lr": 1e-3}]  # K = 4 skips selection


def _searcher(tmp_path: Path, trials: int, metric=OBJECTIVE, mode="min") -> tuple[EpochAwareOptunaSearch, optuna.Study]:
    """A searcher on the demo config whose first ``trials`` trials are the first of :data:`POINTS`, and its study."""
    cfg = load_config(str(DEMO))
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    directions = ["minimize"] * (len(metric) if isinstance(metric, list) else 1)
    study = optuna.create_study(storage=url, study_name="t", directions=directions)
    searcher = EpochAwareOptunaSearch(
        base=to_dict(cfg), space=DefineByRun(load_space(space_file, cfg)), metric=metric, mode=mode,
        points_to_evaluate=POINTS[:trials],
        study_name="t", storage=optuna.storages.RDBStorage(url), sampler=optuna.samplers.TPESampler(seed=0))
    return searcher, study


def _report(searcher: EpochAwareOptunaSearch, trial_id: str, epochs: list[int], values: list[float]) -> None:
    for iteration, (epoch, value) in enumerate(zip(epochs, values, strict=True), start=1):
        searcher.on_trial_result(trial_id, {OBJECTIVE: value, "trial_epoch": epoch, "training_iteration": iteration})


def test_stopped_trials_are_pruned_with_their_values_and_finished_ones_complete(tmp_path: Path) -> None:
    searcher, study = _searcher(tmp_path, 4)
    for trial_id in ("full", "short", "stopped", "failed"):
        searcher.suggest(trial_id)
    _report(searcher, "full", [1, 2, 3], [100.0, 95.0, 90.0])
    searcher.on_trial_complete("full", {OBJECTIVE: 90.0, "trial_epoch": 3})
    _report(searcher, "short", [1, 2], [101.0, 96.0])  # top_n = K = 4: two epochs are its whole budget
    searcher.on_trial_complete("short", {OBJECTIVE: 96.0, "trial_epoch": 2})
    # ASHA stops a trial on a result that Tune hands to on_trial_complete only, never to on_trial_result
    _report(searcher, "stopped", [1], [120.0])
    searcher.on_trial_complete("stopped", {OBJECTIVE: 118.0, "trial_epoch": 2})
    _report(searcher, "failed", [1], [130.0])
    searcher.on_trial_complete("failed", error=True)

    full, short, stopped, failed = study.get_trials()
    assert (full.state, full.value, full.intermediate_values) == (
        optuna.trial.TrialState.COMPLETE, 90.0, {1: 100.0, 2: 95.0, 3: 90.0})
    assert (short.params["selection.top_n"], short.state, short.value) == (4, optuna.trial.TrialState.COMPLETE, 96.0)
    assert stopped.state == optuna.trial.TrialState.PRUNED
    assert stopped.intermediate_values == {1: 120.0, 2: 118.0} and stopped.value == 118.0  # the deepest epoch's
    assert failed.state == optuna.trial.TrialState.FAIL and failed.value is None


def test_a_restored_searcher_tells_no_trial_twice(tmp_path: Path, recwarn) -> None:
    """Tune pickles the searcher with the Tuner, saves its state now and then, and Optuna's database moves on in
    between (the study is written at once); after an interruption the restored searcher meets a trial the study
    has finished already, and a resumed Train run repeats an epoch Tune saw."""
    searcher, study = _searcher(tmp_path, 2)
    pickled = pickle.dumps(searcher)  # tuner.pkl
    searcher.suggest("a")  # top_n 2: 3 epochs
    searcher.suggest("b")  # top_n 4 = K: 2 epochs
    _report(searcher, "a", [1], [110.0])
    _report(searcher, "b", [1], [100.0])
    searcher.save(str(tmp_path / "searcher.pkl"))  # the saved state: nothing told yet
    _report(searcher, "a", [2], [105.0])
    searcher.on_trial_complete("a", {OBJECTIVE: 104.0, "trial_epoch": 2})  # ASHA stops it, then the interruption

    restored = pickle.loads(pickled)
    restored.restore(str(tmp_path / "searcher.pkl"))  # Tuner.restore
    assert "a" not in restored._completed_trials
    restored.on_trial_complete("a", {OBJECTIVE: 104.0, "trial_epoch": 2})  # stopped again after the resume
    _report(restored, "b", [1, 2], [100.5, 99.0])
    restored.on_trial_complete("b", {OBJECTIVE: 99.0, "trial_epoch": 2})
    restored.on_trial_complete("b", {OBJECTIVE: 99.0, "trial_epoch": 2})  # Tune's duplicate end of a function
    a, b = study.get_trials()
    assert (a.state, a.intermediate_values, a.value) == (optuna.trial.TrialState.PRUNED, {1: 110.0, 2: 105.0}, 105.0)
    assert (b.state, b.intermediate_values, b.value) == (optuna.trial.TrialState.COMPLETE, {1: 100.0, 2: 99.0}, 99.0)
    assert not [w for w in recwarn if "already" in str(w.message)]  # nothing was reported or told twice


def test_two_objectives_are_told_as_ray_tells_them(tmp_path: Path) -> None:
    searcher, study = _searcher(tmp_path, 1, metric=[OBJECTIVE, "cost/ms_per_image_b1"], mode=["min", "min"])
    searcher.suggest("a")
    searcher.on_trial_result("a", {OBJECTIVE: 100.0, "cost/ms_per_image_b1": 5.0, "trial_epoch": 1,
                                   "training_iteration": 1})
    searcher.on_trial_complete("a", {OBJECTIVE: 100.0, "cost/ms_per_image_b1": 5.0, "trial_epoch": 1})
    (a,) = study.get_trials()
    assert a.state == optuna.trial.TrialState.COMPLETE and a.values == [100.0, 5.0] and not a.intermediate_values


def _brief_searcher(tmp_path: Path, num_samples: int, round_trials: int, lines: list[str] | None
                    ) -> tuple[BriefThenFinishSearch, optuna.Study]:
    cfg = load_config(str(DEMO))
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=url, study_name="t")
    searcher = BriefThenFinishSearch(
        num_samples=num_samples, round_trials=round_trials, reduction_factor=2,
        echo=print if lines is None else lines.append,
        base=to_dict(cfg), space=DefineByRun(load_space(space_file, cfg)), metric=OBJECTIVE, mode="min",
        study_name="t", storage=optuna.storages.RDBStorage(url), sampler=optuna.samplers.TPESampler(seed=0))
    return searcher, study


def test_rounds_and_the_trials_they_keep() -> None:
    assert round_sizes(8, 8) == [8] and round_sizes(20, 8) == [8, 8, 4] and round_sizes(3, 8) == [3]
    assert [kept(n, 4) for n in (8, 4, 3)] == [2, 1, 1]


def test_the_brief_rung_stops_drawn_trials_at_their_brief_and_lets_finishing_ones_run() -> None:
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    rung = BriefRung(2)
    drawn = SimpleNamespace(config={"optim.lr": 1e-3})
    finishing = SimpleNamespace(config={"optim.lr": 1e-3, CONTINUES: "0123abcd"})
    assert rung.on_trial_result(None, drawn, {"trial_epoch": 1}) == TrialScheduler.CONTINUE
    assert rung.on_trial_result(None, drawn, {"trial_epoch": 2}) == TrialScheduler.STOP
    assert rung.on_trial_result(None, finishing, {"trial_epoch": 3}) == TrialScheduler.CONTINUE
    assert rung.debug_string().startswith("Using brief-then-finish rounds: each drawn trial stops after 2 epoch(s)")


def test_brief_then_finish_keeps_the_best_of_each_round_and_finishes_them(tmp_path: Path) -> None:
    lines: list[str] = []
    searcher, study = _brief_searcher(tmp_path, 6, 4, lines)  # rounds of 4 and 2; finish 2 and 1
    drawn = {t: searcher.suggest(t) for t in "abcdex"}  # round 2 is drawn once round 1 is: free slots stay busy
    assert all(CONTINUES not in config for config in drawn.values())
    assert searcher.suggest("w") is None  # every configuration drawn, nothing to finish yet: wait
    for trial_id, value in zip("abcd", (100.0, 90.0, 110.0, 95.0), strict=True):
        _report(searcher, trial_id, [1], [value])
        searcher.on_trial_complete(trial_id, {OBJECTIVE: value, "trial_epoch": 1})  # BriefRung stopped it
    assert lines == ["round 1/2: finishing b 90.00 mm, d 95.00 mm; stopped the other 2 at their brief"]
    assert searcher.suggest("f") == {**drawn["b"], CONTINUES: "b"}
    assert searcher.suggest("g") == {**drawn["d"], CONTINUES: "d"}
    assert searcher.suggest("y") is None  # round 2 still at its brief
    _report(searcher, "f", [2, 3], [80.0, 70.0])  # the finishing trial resumed b's runs after epoch 1
    searcher.on_trial_complete("f", {OBJECTIVE: 70.0, "trial_epoch": 3})
    searcher.on_trial_complete("g", error=True)
    searcher.on_trial_complete("e", {OBJECTIVE: 120.0, "trial_epoch": 1})  # its value reached on_trial_complete only
    searcher.on_trial_complete("x", {OBJECTIVE: math.nan, "trial_epoch": 1})  # a NaN is not ranked
    assert searcher.suggest("h") == {**drawn["e"], CONTINUES: "e"}
    assert searcher.suggest("z") == Searcher.FINISHED
    a, b, c, d, e, x = sorted(study.get_trials(), key=lambda t: t.number)
    states = optuna.trial.TrialState
    assert [t.state for t in (a, b, c, d, e, x)] == [states.PRUNED, states.COMPLETE, states.PRUNED, states.FAIL,
                                                     states.RUNNING, states.PRUNED]
    assert (b.value, b.intermediate_values) == (70.0, {1: 90.0, 2: 80.0, 3: 70.0})
    assert a.intermediate_values == {1: 100.0} and e.intermediate_values == {1: 120.0}
    assert len(study.get_trials()) == 6  # one Optuna trial per configuration, however many Tune trials


def test_a_restored_brief_then_finish_search_goes_on_where_it_was_saved(tmp_path: Path) -> None:
    searcher, study = _brief_searcher(tmp_path, 2, 2, None)
    pickled = pickle.dumps(searcher)
    first = searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", {OBJECTIVE: 100.0, "trial_epoch": 1})
    searcher.on_trial_complete("b", {OBJECTIVE: 105.0, "trial_epoch": 1})
    searcher.save(str(tmp_path / "searcher.pkl"))  # after the decision, before "a" is finished
    pickle.dumps(searcher)  # Tune saves the searcher with its state, echo (here print) included
    restored = pickle.loads(pickled)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("c") == {**first, CONTINUES: "a"}
    restored.on_trial_complete("c", {OBJECTIVE: 90.0, "trial_epoch": 3})
    a, b = sorted(study.get_trials(), key=lambda t: t.number)
    assert (a.state, a.value, b.state) == (optuna.trial.TrialState.COMPLETE, 90.0, optuna.trial.TrialState.PRUNED)
    assert restored.suggest("d") == Searcher.FINISHED
