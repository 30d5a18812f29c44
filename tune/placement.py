"""Placement groups that ended Train runs left behind, removed by the Tune driver.

A Train run inside a Tune trial reserves its workers in a placement group that the run's controller, an actor the
trial owns, creates. When the trial ends before the run does (stopped by a scheduler, failed, interrupted), Ray
kills the controller, but a placement group lives as long as its job does. Ray 2.60 hands a group whose workers
have started to a detached ``PlacementGroupCleaner`` that asks the dashboard's State API whether the controller is
dead; when those queries fail, the group outlives its trial. A group whose workers were still starting (a trial
stopped just as its next stage began) is handed to no one. And a controller that dies with its trial while it
restarts its worker group can ask for a new group in its last moment: the GCS then makes a group whose record never
says its creator died (``creator_actor_dead`` stays false), though the actor table does. Either way every later
trial waits for workers until Train gives up ("worker group startup timed out"; seen in CI: one such group cost
the next search all 4 of its trials and 25 minutes, another the next 2 trials of a search; in the test suite, a
trial that ASHA stopped after its first epoch held the next trial's CPU until the test's time limit).

So the driver's :class:`ReleasePlacementGroups` (a Tune callback) asks the GCS itself, every few seconds of the Tune
loop, for this job's live groups whose creator was an actor that has died (by the group's record or by the actor
table), and removes those that are still there ``grace_s`` seconds after it first saw them (the time Ray's own
cleaner gets). No State API, no dashboard. Groups the driver itself made (Tune's trial bundles, which have no
creator actor) and those of live controllers are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
import ray.tune
from ray.util.placement_group import PlacementGroup, remove_placement_group

__all__ = ["GRACE_S", "Group", "ReleasePlacementGroups", "describe_groups", "job_groups"]

GRACE_S = 15.0  # Ray's cleaner checks every second, each State API query waiting up to 10 s
_CHECK_S = 2.0  # how often the Tune loop asks the GCS
_POLL_S = 0.5
_SETTLE_S = 3.0  # how long the end of an experiment waits for groups that dying controllers still ask for


@dataclass(frozen=True)
class Group:
    """One live placement group, as the GCS records it. ``made_by_actor``: an actor created it (a Train
    controller), not the driver; ``orphaned``: that actor has died (by the group's record or the actor table);
    ``state``: ``PENDING`` (waiting for resources), ``CREATED``, ...; ``bundles``: what each bundle reserves
    (``{"CPU": 1.0}``, ...); ``job``: the creator's job id (hex)."""

    made_by_actor: bool
    orphaned: bool
    state: str
    bundles: tuple[dict[str, float], ...]
    job: str


def job_groups(every_job: bool = False) -> dict[str, Group]:
    """This job's live placement groups (every job's with ``every_job``) by hex id, read from the GCS (Ray's
    internal accessor: the public ``placement_group_table`` leaves out who created a group)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    accessor = state._connect_and_get_accessor()
    job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id()).binary()
    dead: dict[bytes, bool] = {}  # creator actor id -> dead, by the actor table (asked once per actor)

    def creator_dead(data: gcs_pb2.PlacementGroupTableData) -> bool:
        if data.creator_actor_dead:
            return True
        if data.creator_actor_id not in dead:
            info = accessor.get_actor_info(ray.ActorID(data.creator_actor_id))  # None: no longer in the table
            dead[data.creator_actor_id] = (info is None or gcs_pb2.ActorTableData.FromString(info).state
                                           == gcs_pb2.ActorTableData.DEAD)
        return dead[data.creator_actor_id]

    groups = {}
    for raw in accessor.get_placement_group_table():
        data = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if (data.creator_job_id != job and not every_job) or data.state == gcs_pb2.PlacementGroupTableData.REMOVED:
            continue
        made_by_actor = not ray.ActorID(data.creator_actor_id).is_nil()
        bundles = tuple({name: value for name, value in bundle.unit_resources.items()
                         if not name.startswith("bundle_group")} for bundle in data.bundles)
        groups[data.placement_group_id.hex()] = Group(
            made_by_actor, made_by_actor and creator_dead(data),
            gcs_pb2.PlacementGroupTableData.PlacementGroupState.Name(data.state), bundles,
            ray.JobID(data.creator_job_id).hex())
    return groups


def describe_groups() -> list[str]:
    """One line per live placement group of every job, those waiting for resources first: its id, state, bundles
    and creator (the driver, a live actor or a dead one). What holds a cluster whose Train runs wait for workers."""
    lines = []
    for group_id, g in sorted(job_groups(every_job=True).items(), key=lambda item: item[1].state != "PENDING"):
        creator = "dead actor" if g.orphaned else "live actor" if g.made_by_actor else "driver"
        bundles = " + ".join("{" + ", ".join(f"{k} {v:g}" for k, v in sorted(b.items())) + "}" for b in g.bundles)
        lines.append(f"placement group {group_id[:12]} {g.state:<8} job {g.job} {creator:<10} {bundles}")
    return lines


def _remove(group_id: str) -> None:
    remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))


class ReleasePlacementGroups(ray.tune.Callback):
    """Runs in the Tune driver: removes the placement groups that dead Train controllers left behind.

    At each step of the Tune loop (at most every ``_CHECK_S`` seconds), a group whose creator actor has died is
    removed once ``grace_s`` seconds have passed since it was first seen so. At the end of the experiment, when
    Tune has stopped every trial, the driver waits up to ``grace_s`` for the controllers to end, then removes every
    group that an actor created during the experiment and that is still there, and any that a dying controller asks
    for in the seconds after."""

    def __init__(self, grace_s: float = GRACE_S, echo: Callable[[str], None] = print):
        self.grace_s = grace_s
        self.echo = echo
        self._before: set[str] = set()  # this job's live groups when the experiment started
        self._orphaned_since: dict[str, float] = {}  # group id -> time.monotonic() when first seen orphaned
        self._checked = -float("inf")

    def setup(self, **info) -> None:
        self._before = set(job_groups())

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        now = time.monotonic()
        if now - self._checked < _CHECK_S:
            return
        self._checked = now
        orphaned = {g for g, group in job_groups().items() if group.orphaned}
        self._orphaned_since = {g: self._orphaned_since.get(g, now) for g in orphaned}
        for group_id in [g for g, since in self._orphaned_since.items() if now - since >= self.grace_s]:
            self._release(group_id, "its Train run's controller ended without removing it")

    def on_experiment_end(self, trials: list, **info) -> None:
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and any(not g.orphaned for g in self._made_during().values()):
            time.sleep(_POLL_S)
        # A controller the GCS already counts as dead may still ask for a group while its process ends: after a
        # sweep that removed something, sweep again until _SETTLE_S pass with nothing new (at most grace_s more).
        settled, deadline = 0.0, time.monotonic() + self.grace_s
        while True:
            left = self._made_during()
            for group_id in left:
                self._release(group_id, "a Train run of this experiment left it behind")
            if left:
                settled = time.monotonic() + _SETTLE_S
            if time.monotonic() >= min(settled, deadline):
                return
            time.sleep(_POLL_S)

    def _made_during(self) -> dict[str, Group]:
        """The live groups that actors (Train controllers) created during the experiment."""
        return {g: group for g, group in job_groups().items() if group.made_by_actor and g not in self._before}

    def _release(self, group_id: str, why: str) -> None:
        self._orphaned_since.pop(group_id, None)
        if group_id in job_groups():  # Ray's own cleaner may have removed it meanwhile
            _remove(group_id)
            self.echo(f"removed placement group {group_id}: {why}")
