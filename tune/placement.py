"""The placement groups of a trial's Train runs, released by the Tune driver once the trial has ended.

A Train run inside a Tune trial reserves its workers in a placement group that the run's controller creates. When
the trial ends before the run does (stopped by ASHA, failed, interrupted), Ray 2.60 leaves the group to a detached
``PlacementGroupCleaner`` that asks the dashboard's State API whether the controller is dead. If those queries
fail (the cleaner's thread retries only the State API's own exception and dies on any other), the group outlives
its trial and every later trial waits for workers until Train gives up ("worker group startup timed out"; seen in
CI: one stopped trial's group cost the next search all 4 of its trials and 25 minutes).

So each run's controller records the groups it starts in Ray's internal key-value store under its trial's id
(:class:`RecordPlacementGroups`, a Train worker-group callback), and the driver's :class:`ReleasePlacementGroups`
(a Tune callback) removes those of an ended trial that are still there ``grace_s`` seconds after it ended (the
time Ray's own cleaner gets), talking to the GCS only: no dashboard involved.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray
import ray.tune
from ray.experimental import internal_kv
from ray.train.v2._internal.execution.callback import WorkerGroupCallback  # internal: Ray 2.60's extension point
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

__all__ = ["GRACE_S", "RecordPlacementGroups", "ReleasePlacementGroups", "recorded_groups", "record_group"]

NAMESPACE = "hmh_placement_groups"
GRACE_S = 30.0  # Ray's cleaner polls every second, each State API query waiting up to 10 s
_POLL_S = 0.5


def _key(trial_id: str) -> bytes:
    return trial_id.encode()


def recorded_groups(trial_id: str) -> list[str]:
    """The hex ids of the placement groups recorded for ``trial_id``, oldest first."""
    value = internal_kv._internal_kv_get(_key(trial_id), namespace=NAMESPACE)
    return value.decode().split() if value else []


def record_group(trial_id: str, group_id: str) -> None:
    """Add the placement group ``group_id`` (hex) to ``trial_id``'s record (one trial's runs are sequential)."""
    groups = recorded_groups(trial_id)
    if group_id not in groups:
        internal_kv._internal_kv_put(_key(trial_id), " ".join([*groups, group_id]), overwrite=True,
                                     namespace=NAMESPACE)


def _alive(group_id: str) -> PlacementGroup | None:
    """The placement group ``group_id`` while it holds or waits for resources, else None."""
    group = PlacementGroup(ray.PlacementGroupID.from_hex(group_id))
    return group if placement_group_table(group).get("state") not in (None, "REMOVED") else None


def _job_groups() -> set[str]:
    """The hex ids of the live placement groups this driver's job created (its trials' Train runs included: a
    placement group id ends with its job's id)."""
    job = ray.get_runtime_context().get_job_id()
    return {g for g, info in placement_group_table().items() if info["state"] != "REMOVED" and g.endswith(job)}


class RecordPlacementGroups(WorkerGroupCallback):
    """Runs in a Train run's controller: records each worker group's placement group under ``trial_id``."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id

    def after_worker_group_start(self, worker_group) -> None:
        group = worker_group.get_worker_group_state().placement_group_handle.placement_group
        record_group(self.trial_id, group.id.hex())


class ReleasePlacementGroups(ray.tune.Callback):
    """Runs in the Tune driver: removes the recorded placement groups that an ended trial left behind.

    A trial's groups are checked ``grace_s`` seconds after it completes or fails (at each step of the Tune loop),
    and at the end of the experiment, when Tune has stopped every trial, after at most ``grace_s`` more. Then any
    other live group of this job that was not there when the experiment started goes too: a run stopped while
    starting its workers has a group that no callback recorded."""

    def __init__(self, grace_s: float = GRACE_S, echo: Callable[[str], None] = print):
        self.grace_s = grace_s
        self.echo = echo
        self._ended: dict[str, float] = {}  # trial id -> time.monotonic() when it ended
        self._before: set[str] = set()  # this job's placement groups alive when the experiment started

    def setup(self, **info) -> None:
        self._before = _job_groups()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended[trial.trial_id] = time.monotonic()

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended[trial.trial_id] = time.monotonic()

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        due = time.monotonic() - self.grace_s
        for trial_id in [t for t, ended in self._ended.items() if ended <= due]:
            self.release(trial_id)

    def on_experiment_end(self, trials: list, **info) -> None:
        now = time.monotonic()
        for trial in trials:  # Tune has stopped every trial, also those it never reported ended (interrupted)
            self._ended.setdefault(trial.trial_id, now)
        deadline = max(self._ended.values(), default=now) + self.grace_s
        groups = [g for t in self._ended for g in recorded_groups(t)]  # final: no trial starts a run any more
        while time.monotonic() < deadline and any(_alive(g) for g in groups):
            time.sleep(_POLL_S)
        for trial_id in list(self._ended):
            self.release(trial_id)
        for group_id in _job_groups() - self._before:  # a run stopped while starting its workers records nothing
            group = _alive(group_id)
            if group is not None:
                remove_placement_group(group)
                self.echo(f"removed placement group {group_id}, which a stopped Train run of this search left "
                          "behind")

    def release(self, trial_id: str) -> None:
        """Remove ``trial_id``'s recorded placement groups that are still there, and forget its record."""
        for group_id in recorded_groups(trial_id):
            group = _alive(group_id)
            if group is not None:
                remove_placement_group(group)
                self.echo(f"trial {trial_id}: removed placement group {group_id}, which its stopped Train run "
                          "left behind (Ray Train's cleaner did not remove it)")
        internal_kv._internal_kv_del(_key(trial_id), namespace=NAMESPACE)
        self._ended.pop(trial_id, None)
