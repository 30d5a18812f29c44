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

``search.scheduler=brief_then_finish`` (:class:`BriefThenFinishSearch` with the scheduler :class:`BriefRung`):
the configurations are drawn in rounds of ``search.round_trials``; each trains ``search.grace_period`` epochs
(its brief), at which :class:`BriefRung` stops it; once every trial of a round is at its brief, the best
``round_trials // reduction_factor`` by the value reported there (:func:`kept`) are finished and the others told
PRUNED. Finishing a configuration is a new Tune trial whose config names the trial it continues
(:data:`CONTINUES`): it runs that trial's Train runs (named after it, so they resume from their checkpoint at the
brief) and reports to the same Optuna trial, which becomes COMPLETE with the final value. So Optuna holds one
trial per configuration, and a stopped one never as finished. The next round is drawn once the last trial of a
round has started, so a cluster's free slots are used; on one slot the finishing trials run before it, and the
sampler learns their finals first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from hmh.train.engine import run_epochs
from tune.space import apply_params

__all__ = ["CONTINUES", "TRIAL_EPOCH", "BriefRung", "BriefThenFinishSearch", "EpochAwareOptunaSearch", "continued",
           "kept", "round_sizes", "told_state"]

TRIAL_EPOCH = "trial_epoch"  # every report's epoch across both stages (tune.worker): ASHA's time axis
CONTINUES = "continues"  # a finishing trial's config key: the id of the trial whose Train runs it finishes


def continued(config: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A Tune trial's ``config`` split into its searched parameters and the trial it continues (None for a trial
    that starts its own runs)."""
    params = dict(config)
    return params, params.pop(CONTINUES, None)


def round_sizes(num_samples: int, round_trials: int) -> list[int]:
    """The rounds ``num_samples`` configurations are drawn in: ``round_trials`` each, the last one the rest."""
    full, rest = divmod(num_samples, round_trials)
    return [round_trials] * full + ([rest] if rest else [])


def kept(size: int, reduction_factor: int) -> int:
    """How many of a round of ``size`` trials are finished: the top 1/``reduction_factor``, at least one."""
    return max(1, size // reduction_factor)


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


class BriefRung(FIFOScheduler):
    """Tune's FIFO scheduler, except that a trial drawn by :class:`BriefThenFinishSearch` stops at trial-epoch
    ``brief_epochs`` (a finishing trial, :data:`CONTINUES`, runs on)."""

    def __init__(self, brief_epochs: int):
        super().__init__()
        self.brief_epochs = brief_epochs

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if CONTINUES not in trial.config and int(result.get(TRIAL_EPOCH) or 0) >= self.brief_epochs:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        """The line of Tune's status box (FIFO's would read "Using FIFO scheduling algorithm.")."""
        return (f"Using brief-then-finish rounds: each drawn trial stops after {self.brief_epochs} epoch(s); the "
                "best of each round are finished.")


class BriefThenFinishSearch(EpochAwareOptunaSearch):
    """"Train briefly, keep the best of each round, finish them" (module docstring), on a single objective.
    ``num_samples``: the configurations drawn, in rounds of ``round_trials`` (:func:`round_sizes`), of which
    :func:`kept` of ``reduction_factor`` are finished; ``echo``: where each round's decision is printed (None:
    nowhere; it is saved with the searcher, so a module-level function). Other
    arguments: :class:`EpochAwareOptunaSearch`'s. Its state (the rounds, the values at the brief, the trials
    waiting to be finished) is in ``__dict__``, which Tune saves and restores with the search."""

    def __init__(self, *, num_samples: int, round_trials: int, reduction_factor: int,
                 echo: Callable[[str], None] | None = print, **kwargs: Any):
        super().__init__(**kwargs)
        self._sizes = round_sizes(num_samples, round_trials)
        self._reduction = reduction_factor
        self._echo = echo
        self._rounds: list[list[str]] = []  # the drawn trials of each round
        self._configs: dict[str, dict] = {}  # each drawn trial's config
        self._at_brief: dict[str, float | None] = {}  # a drawn trial's value where it ended (None: nothing to rank)
        self._decided: set[int] = set()  # the rounds whose trials to finish are chosen
        self._queue: list[str] = []  # drawn trials to finish, best first

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._queue:
            drawn = self._queue.pop(0)
            self._ot_trials[trial_id] = self._ot_trials[drawn]  # it reports to the drawn trial's Optuna trial
            return {**self._configs[drawn], CONTINUES: drawn}
        if not self._rounds or len(self._rounds[-1]) == self._sizes[len(self._rounds) - 1]:
            if len(self._rounds) == len(self._sizes):  # every configuration is drawn
                return Searcher.FINISHED if len(self._decided) == len(self._sizes) else None
            self._rounds.append([])
        config = super().suggest(trial_id)
        self._rounds[-1].append(trial_id)
        self._configs[trial_id] = config
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._configs or trial_id in self._at_brief:  # a finishing trial, or told already
            super().on_trial_complete(trial_id, result, error)
            return
        stored = self._stored(trial_id)
        value = None if error or not result else result.get(self.metric)
        epochs = run_epochs(apply_params(self._base, stored.params))
        if (stored.state.is_finished() or value is None or not math.isfinite(float(value))
                or int(result.get(TRIAL_EPOCH) or 0) >= epochs):  # failed, nothing to rank, or trained its budget
            super().on_trial_complete(trial_id, result, error)
            self._at_brief[trial_id] = None
        else:
            self._report(trial_id, stored, result)
            self._at_brief[trial_id] = float(value)
            self._completed_trials.add(trial_id)
        self._decide()

    def _decide(self) -> None:
        """Choose the trials to finish of every round whose drawn trials have all ended at their brief."""
        import optuna

        for index, members in enumerate(self._rounds):
            if index in self._decided or len(members) < self._sizes[index]:
                continue
            if not all(t in self._at_brief for t in members):
                continue
            ranked = sorted((t for t in members if self._at_brief[t] is not None), key=self._at_brief.__getitem__)
            finish = ranked[:kept(len(members), self._reduction)]
            for trial_id in ranked[len(finish):]:
                self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED,
                                    skip_if_finished=True)
            self._queue.extend(finish)
            self._decided.add(index)
            values = ", ".join(f"{t} {self._at_brief[t]:.2f} mm" for t in finish) or "none"
            if self._echo:
                self._echo(f"round {index + 1}/{len(self._sizes)}: finishing {values}; stopped the other "
                           f"{len(ranked) - len(finish)} at their brief")
