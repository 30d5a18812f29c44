"""The search's Optuna searcher: Ray Tune's ``OptunaSearch``, except that Optuna learns a trial stopped early as
stopped.

Ray 2.60's ``OptunaSearch`` tells Optuna every trial that ends without an error as COMPLETE with its last value,
also a trial that ASHA stopped after its first rung (``TuneController.stop_trial`` hands the scheduler-stopped
trial's last result to ``on_trial_complete``, and no option changes that): Optuna's sampler then takes an early
value (during the generation stage, the mean of all K hypotheses) for the score of a finished configuration.

:class:`EpochAwareOptunaSearch` decides by the trial's epochs instead (:func:`told_state`, single objective): a
trial whose last result is before its last epoch (``trial_epoch`` < the epochs its configuration trains,
:func:`hmh.train.engine.run_epochs`) is told PRUNED after each of its values is reported at its ``trial_epoch``
(Optuna then ranks it by its deepest epoch, below the completed trials: TPE; or leaves it out: GPSampler); one
that reached its last epoch is told COMPLETE with its final value; an errored trial FAIL. Intermediate values are
reported at ``trial_epoch`` (Ray's class uses Tune's ``training_iteration``, which drifts from the epoch when a
resumed Train run had run ahead of what Tune saw).

``--resume``: Tune pickles this searcher with the search (``tuner.pkl``, by reference: the class must stay
importable as ``tune.searcher.EpochAwareOptunaSearch``) and restores its state with ``OptunaSearch.restore``
(its ``__dict__``: the Optuna trials of the Tune trials, the finished ones, the experiment's base config); the
Optuna study itself is ``optuna.db``, which is written at once and may be ahead of that saved state. So the
stored trial is read before anything is told: a value already reported at an epoch is not reported again, and a
trial Optuna already holds as finished is never told again (a resumed search neither re-tells nor double-counts).
Two objectives (no scheduler, every trial its full budget): Ray's behaviour, unchanged.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from hmh.train.engine import run_epochs
from tune.space import apply_params

__all__ = ["TRIAL_EPOCH", "EpochAwareOptunaSearch", "told_state"]

TRIAL_EPOCH = "trial_epoch"  # every report's epoch across both stages (tune.worker): ASHA's time axis


def told_state(result: dict[str, Any] | None, metric: str, epochs_total: int, error: bool = False) -> str:
    """The state Optuna is told of a single-objective trial that ended with ``result`` (its last report; None when
    it never reported) of the configuration that trains ``epochs_total`` epochs: ``"FAIL"`` on an error, or a
    final value that is not a finite number; ``"PRUNED"`` without a ``metric`` value (Ray's rule: never ran) or
    when its ``trial_epoch`` is below ``epochs_total`` (stopped early by the scheduler); else ``"COMPLETE"``."""
    if error:
        return "FAIL"
    value = None if result is None else result.get(metric)
    if value is None:
        return "PRUNED"
    if int(result.get(TRIAL_EPOCH) or 0) < epochs_total:
        return "PRUNED"
    return "COMPLETE" if math.isfinite(float(value)) else "FAIL"


class EpochAwareOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna the state :func:`told_state` decides (module docstring). ``base``: the
    experiment's prepared config (a nested dict), which each trial's parameters complete into the configuration
    whose epochs its last result is compared with. Other arguments: ``OptunaSearch``'s."""

    def __init__(self, *, base: dict, **kwargs: Any):
        super().__init__(**kwargs)
        self._base = base

    @property
    def _single(self) -> bool:
        return not isinstance(self.metric, list)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self._single or trial_id in self._completed_trials:
            super().on_trial_result(trial_id, result)
            return
        stored = self._stored(trial_id)
        if not stored.state.is_finished():
            self._report(trial_id, stored, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not self._single or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        import optuna

        stored = self._stored(trial_id)
        if not stored.state.is_finished():  # else told before an interruption that the saved state predates
            epochs = 0 if error else run_epochs(apply_params(self._base, stored.params))
            state = told_state(result, self.metric, epochs, error)
            if not error and result and result.get(self.metric) is not None:
                self._report(trial_id, stored, result)  # a scheduler's stopping result reached no on_trial_result
            value = float(result[self.metric]) if state == "COMPLETE" else None
            self._ot_study.tell(self._ot_trials[trial_id], value, state=optuna.trial.TrialState[state],
                                skip_if_finished=True)
        self._completed_trials.add(trial_id)

    def _stored(self, trial_id: str) -> Any:
        """The Optuna study's current record of the trial (an ``optuna.trial.FrozenTrial``)."""
        number = self._ot_trials[trial_id].number
        return next(t for t in self._ot_study.get_trials(deepcopy=False) if t.number == number)

    def _report(self, trial_id: str, stored: Any, result: dict) -> None:
        """Report ``result``'s metric at its ``trial_epoch``, unless a value is stored at that epoch already."""
        epoch = int(result.get(TRIAL_EPOCH) or 0)
        if epoch not in stored.intermediate_values:
            self._ot_trials[trial_id].report(float(result[self.metric]), epoch)
