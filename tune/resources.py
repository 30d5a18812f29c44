"""Connecting to Ray and sizing trials: ``ray.init`` for a local machine or a cluster, each Train run's
``ScalingConfig``, and how many trials run at once (:func:`trial_plan`).

How many trials run at once is what the cluster holds at its largest: on a fixed cluster (this machine, or nodes
started by hand) the nodes up now; on an autoscaling cluster the node types of its definition at their maximum
counts, read from ``search.cluster`` (a Ray cluster launcher config or a KubeRay manifest). Tune then keeps that many
trials going from the start, and the placement groups of those without nodes yet wait while the autoscaler adds
them. A worker that no node can hold, or a trial that the cluster cannot hold even at its largest, is refused at
start: Train would wait for its placement group forever."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmh.config import SearchConfig
from hmh.errors import HmhError
from tune.console import VERBOSE_ENV, filter_worker_echo, verbose

__all__ = ["DRIVER_CPUS", "GPU_ON_CPU_ENV", "Cluster", "ClusterError", "NodeType", "TrialPlan", "gpus_on_cpu",
           "init_ray", "live_cluster", "plan_trials", "read_cluster", "scaling_config", "trial_plan",
           "trial_resources", "trials_at_once", "worker_resources", "worker_runtime_env"]

log = logging.getLogger(__name__)

DRIVER_CPUS = 0.01  # a Tune trial's driver only waits on its Train runs; 0 is refused by Tune
HEAD_RESOURCE = "node:__internal_head__"  # Ray's resource of the head node, where the trial drivers run
# For tests only: "1" lets Train workers that hold GPUs (the logical GPUs of Ray's fake autoscaling nodes) train on
# the CPU over gloo (:func:`gpus_on_cpu`). Set it in the environment of `ray start`, which every node inherits.
GPU_ON_CPU_ENV = "HMH_TEST_GPU_ON_CPU"
_EPS = 1e-9
_SHOWN = ("CPU", "GPU")  # the resources a Train worker asks for (search.cpus_per_worker, search.gpus_per_worker)
_KEYS = {"CPU": "search.cpus_per_worker", "GPU": "search.gpus_per_worker"}
# Ray starts its workers at niceness 15, below every ordinary process. The Train workers do all the training, so
# beside any other busy process (another job, a build, a test runner) they would all but stop: a two-trial search
# that takes 1 min had not finished after 590 s beside two busy processes, and took 88 s at niceness 0. A local Ray
# started by init_ray keeps its workers at 0; a cluster's nodes keep what their `ray start` set.
LOCAL_WORKER_NICENESS = 0


class ClusterError(HmhError):
    """The cluster cannot run what the config asks for (the message names the config keys)."""


def init_ray(address: str | None = None, echo: Callable[[str], None] = print) -> str:
    """Start or join Ray and return the dashboard URL (also echoed).

    ``address`` None: a local single-node Ray with this machine's GPUs and the CPUs Ray counts (a container's CPU
    quota where one is set, not the host's cores, which ``os.cpu_count()`` gives), the dashboard on 127.0.0.1 (Ray
    Train's cleanup needs it), token authentication left on (Ray's default), every port it opens on 127.0.0.1
    (:func:`_loopback_node`) and its workers at normal priority (``LOCAL_WORKER_NICENESS``). ``address`` given
    (``auto``, ``HOST:PORT`` or ``ray://...``): join that cluster, whose ports are as its ``ray start`` opened them
    (docs/security.md); a loopback ``HOST`` (such as the address of another driver's local Ray) is kept as it is,
    where Ray would replace it by this machine's outward address.
    An already initialised Ray (tests, notebooks) is reused.
    """
    import ray

    if ray.is_initialized():
        echo(f"Ray: reusing this process's Ray session (GCS {ray.get_runtime_context().gcs_address})")
        return ""
    if address:
        with _loopback_node() if _is_loopback(address) else contextlib.nullcontext():
            context = ray.init(address=address, log_to_driver=True)
    else:
        _refuse_second_local_instance()
        with _loopback_node():
            context = ray.init(include_dashboard=True, dashboard_host="127.0.0.1",
                               _system_config={"worker_niceness": LOCAL_WORKER_NICENESS})
    filter_worker_echo()
    url = _url(context.dashboard_url or "")
    echo(f"Ray dashboard: {url or '(not available)'}")
    return url


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """While a local Ray starts, its node address is the loopback address, so that everything it listens on (GCS,
    raylet, object manager, and the Prometheus metrics endpoints of the dashboard, its agent and the autoscaler,
    which answer without the token) binds to 127.0.0.1. Ray 2.60 binds its metrics endpoints to loopback only
    when the node address is loopback, and resolves an explicit ``_node_ip_address="127.0.0.1"`` to the machine's
    outward address; the switch it honours is ``ray_constants.ENABLE_RAY_CLUSTER`` (environment variable
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read at ``import ray``), set to False here for the call."""
    from ray._private import ray_constants

    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def _is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` names this machine's loopback interface (``ray://`` and ``auto`` do not)."""
    host = address.rpartition(":")[0].strip("[]") if "://" not in address else ""
    return host in ("127.0.0.1", "localhost", "::1")


def _refuse_second_local_instance() -> None:
    """Two Ray instances on one machine confuse Ray Train's placement-group cleanup (it finds the newest one), so
    trials of the older one hang: join a running instance instead of starting a second."""
    try:
        from ray._private.services import find_gcs_addresses  # private, but the only way to see local instances
    except ImportError:
        return
    running = sorted(find_gcs_addresses())
    if running:
        raise ClusterError(f"a Ray instance is already running on this machine (GCS {', '.join(running)}); join it "
                           f"with --address {running[0]}, or stop it first (ray stop)")


def _url(address: str) -> str:
    return address if not address or "://" in address else f"http://{address}"


def trial_resources(search: SearchConfig) -> dict[str, float]:
    """What one trial holds while it trains: its driver plus one Train run's workers (``CPU``, ``GPU``)."""
    return {"CPU": DRIVER_CPUS + search.num_workers * search.cpus_per_worker,
            "GPU": search.num_workers * search.gpus_per_worker}


def worker_resources(search: SearchConfig) -> dict[str, float]:
    """What one Train worker asks for: ``search.cpus_per_worker`` CPUs and ``search.gpus_per_worker`` GPUs."""
    return {"CPU": search.cpus_per_worker, "GPU": search.gpus_per_worker}


@dataclass(frozen=True)
class NodeType:
    """Nodes of one shape: what one of them offers Ray (``resources``: ``CPU``, ``GPU``, ...) and how many of them
    the cluster has at most (``count``; 1 for the head)."""

    name: str
    resources: Mapping[str, float]
    count: int
    head: bool = False


@dataclass(frozen=True)
class Cluster:
    """A cluster at its largest: its node types (one of them the head) and at most ``max_workers`` worker nodes of
    all types together. ``source`` says where it was read (a file, or the nodes up now)."""

    source: str
    types: tuple[NodeType, ...]
    max_workers: int


def _slots(resources: Mapping[str, float], worker: Mapping[str, float]) -> int:
    """Workers of ``worker``'s request that fit on a node offering ``resources``."""
    return max(0, min(math.floor(resources.get(name, 0.0) / amount + _EPS)
                      for name, amount in worker.items() if amount > 0))


def _largest(cluster: Cluster, worker: Mapping[str, float]) -> list[tuple[NodeType, int]]:
    """``(node type, nodes)`` of ``cluster`` at its largest: the head, and the worker types at their counts, those
    that hold the most workers first, within ``cluster.max_workers``."""
    left = cluster.max_workers
    nodes = []
    for node_type in sorted(cluster.types, key=lambda t: (not t.head, -_slots(t.resources, worker))):
        count = 1 if node_type.head else min(node_type.count, left)
        left -= 0 if node_type.head else count
        if count > 0:
            nodes.append((node_type, count))
    return nodes


def trials_at_once(cluster: Cluster, search: SearchConfig) -> int:
    """Trials that fit at once in ``cluster`` at its largest: each trial's driver (:data:`DRIVER_CPUS`) on the head,
    and its ``search.num_workers`` workers on any nodes (Train's PACK placement spreads a trial's workers over nodes
    when one cannot hold them all)."""
    worker = worker_resources(search)
    nodes = _largest(cluster, worker)
    head = next((node_type for node_type, _ in nodes if node_type.head), None)
    if head is None:
        return 0
    others = sum(count * _slots(node_type.resources, worker) for node_type, count in nodes if not node_type.head)
    trials = (others + _slots(head.resources, worker)) // search.num_workers
    while trials > 0:
        cpus_left = head.resources.get("CPU", 0.0) - trials * DRIVER_CPUS
        if cpus_left > -_EPS and others + _slots({**head.resources, "CPU": cpus_left}, worker) >= (
                trials * search.num_workers):
            break
        trials -= 1
    return trials


def _shape(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {resources.get(name, 0.0):g}" for name in _SHOWN)


def _describe(nodes: list[tuple[NodeType, int]]) -> str:
    return "; ".join(f"{f'{count} x ' if count > 1 or not t.head else ''}{t.name}: {_shape(t.resources)}"
                     for t, count in nodes)


@dataclass(frozen=True)
class TrialPlan:
    """How a search uses a cluster: what one trial holds, how many trials fit at once on the nodes up now and on the
    cluster at its largest, how many Tune keeps going (``limit``), and the console ``lines`` that say so."""

    holds: dict[str, float]
    now: int
    largest: int
    limit: int
    lines: tuple[str, ...]


def plan_trials(search: SearchConfig, live: Cluster, defined: Cluster | None = None) -> TrialPlan:
    """The :class:`TrialPlan` of ``search`` on the nodes up now (``live``) and, for an autoscaling cluster, on its
    definition (``defined``, from ``search.cluster``) at its largest. Tune keeps ``min(largest,
    search.num_samples, search.max_concurrent_trials if set)`` trials going.

    Raises :class:`ClusterError` when no node can hold one worker (naming the ``search.*`` keys at fault and the
    node shapes) or when a trial does not fit even at the cluster's largest (naming ``search.num_workers``).
    """
    worker = worker_resources(search)
    where = defined or live
    nodes = [t for cluster in (live, defined) if cluster for t in cluster.types]
    hint = "" if defined else ("; if the cluster autoscales, name its definition with search.cluster (see "
                               "cluster/README.md)")
    if not any(_slots(t.resources, worker) for t in nodes):  # name the keys of the node type closest to holding one
        short = min(([name for name in _SHOWN if t.resources.get(name, 0.0) + _EPS < worker[name]] for t in nodes),
                    key=len)
        keys = " and ".join(f"{_KEYS[name]}={worker[name]:g}" for name in short)
        raise ClusterError(f"{keys}: no node can hold one Train worker ({_shape(worker)}); {where.source} has "
                           f"{_describe(_largest(where, worker))}{hint}")
    now = trials_at_once(live, search)
    largest = max(now, trials_at_once(defined, search)) if defined else now
    if largest < 1:
        raise ClusterError(f"search.num_workers={search.num_workers}: one trial's {search.num_workers} Train "
                           f"workers ({_shape(worker)} each) and its driver (CPU {DRIVER_CPUS:g} on the head) do not "
                           f"fit {where.source}, which has {_describe(_largest(where, worker))}{hint}")
    limit = min(largest, search.num_samples, search.max_concurrent_trials or largest)
    holds = trial_resources(search)
    lines = [f"one trial holds {_shape(holds)}: its driver (CPU {DRIVER_CPUS:g}, on the head node) and "
             f"{search.num_workers} Train worker(s) of {_shape(worker)}"]
    if defined is None:
        lines.append(f"trials at once: {now} on {live.source} ({_describe(_largest(live, worker))})")
    else:
        lines.append(f"trials at once: {now} on {live.source} ({_describe(_largest(live, worker))}), {largest} on "
                     f"{defined.source} at its largest ({_describe(_largest(defined, worker))}); {limit} start "
                     "now, and the workers of those without nodes wait while the autoscaler adds them")
    return TrialPlan(holds, now, largest, limit, tuple(lines))


def live_cluster() -> Cluster:
    """The nodes up now (``ray.nodes()``), as a :class:`Cluster` of one node type per shape."""
    import ray

    counts: dict[tuple[bool, tuple[float, ...]], int] = {}
    for node in ray.nodes():
        if node["Alive"]:
            resources = node["Resources"]
            key = (HEAD_RESOURCE in resources, tuple(float(resources.get(name, 0.0)) for name in _SHOWN))
            counts[key] = counts.get(key, 0) + 1
    types = tuple(NodeType("head" if head else "node", dict(zip(_SHOWN, shape, strict=True)), count, head)
                  for (head, shape), count in counts.items())
    total = sum(counts.values())
    return Cluster(f"the {total} node{'s' if total != 1 else ''} up now", types,
                   sum(t.count for t in types if not t.head))


def read_cluster(path: str) -> Cluster:
    """The node types of the cluster definition at ``path``: a Ray cluster launcher config (``available_node_types``
    with their ``resources`` and ``max_workers``, ``head_node_type``, ``max_workers``) or a KubeRay ``RayCluster`` /
    ``RayJob`` manifest, whose pod templates become node types through Ray's own KubeRay code (what the cluster's
    autoscaler sees: ``rayStartParams``, then the container's limits; ``maxReplicas``)."""
    from hmh.config import read_yaml_file

    data = read_yaml_file(Path(path))
    if isinstance(data, dict) and data.get("kind") in ("RayCluster", "RayJob"):
        return _kuberay_cluster(data, path)
    if isinstance(data, dict) and isinstance(data.get("available_node_types"), dict):
        return _launcher_cluster(data, path)
    raise ClusterError(f"{path}: not a cluster definition: expected a Ray cluster launcher config "
                       "(available_node_types) or a KubeRay RayCluster or RayJob manifest")


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ClusterError(f"{where}: expected a node count >= 0, got {value!r}")
    return value


def _launcher_cluster(config: dict, source: str) -> Cluster:
    """A launcher-style config (Ray's rules: a node type without ``max_workers`` takes the cluster's)."""
    types_config = config["available_node_types"]
    head_name = config.get("head_node_type")
    if head_name not in types_config:
        raise ClusterError(f"{source}: head_node_type={head_name!r} is not one of available_node_types "
                           f"({', '.join(types_config)})")
    cap = config.get("max_workers")
    types = []
    for name, spec in types_config.items():
        resources = spec.get("resources") if isinstance(spec, dict) else None
        if not isinstance(resources, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in resources.values()):
            raise ClusterError(f"{source}: available_node_types.{name}.resources must state what one node offers "
                               'Ray, e.g. {"CPU": 8, "GPU": 1}; got ' + repr(resources))
        head = name == head_name
        count = 1 if head else spec.get("max_workers", cap)
        if count is None:
            raise ClusterError(f"{source}: available_node_types.{name}.max_workers is not set, nor is max_workers")
        count = _count(count, f"{source}: available_node_types.{name}.max_workers")
        types.append(NodeType(name, {k: float(v) for k, v in resources.items()}, count, head))
    workers = sum(t.count for t in types if not t.head)
    cap = workers if cap is None else min(workers, _count(cap, f"{source}: max_workers"))
    return Cluster(source, tuple(types), cap)


def _kuberay_cluster(manifest: dict, source: str) -> Cluster:
    """A KubeRay ``RayCluster`` (or a ``RayJob``'s ``spec.rayClusterSpec``), read by Ray's KubeRay autoscaler code."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    spec = manifest.get("spec")
    if manifest["kind"] == "RayJob":
        spec = spec.get("rayClusterSpec") if isinstance(spec, dict) else None
    metadata = {"name": "hmh", "namespace": "default", **(manifest.get("metadata") or {})}  # the namespace only
    try:  # names Kubernetes objects in the provider section, which is not used here
        config = _derive_autoscaling_config_from_ray_cr({"metadata": metadata, "spec": spec})
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ClusterError(f"{source}: Ray's KubeRay autoscaler cannot read this {manifest['kind']}: "
                           f"{type(err).__name__}: {err}") from None
    return _launcher_cluster(config, source)


def trial_plan(search: SearchConfig) -> TrialPlan:
    """:func:`plan_trials` on the Ray cluster this process joined: its nodes up now, and ``search.cluster`` (a
    path, relative to the working directory or the repository) when set."""
    from tune.cli import repo_path

    if search.cluster and not Path(repo_path(search.cluster)).is_file():
        raise ClusterError(f"search.cluster={search.cluster!r}: no such file (expected the cluster's definition: a "
                           "Ray cluster launcher config or a KubeRay manifest, e.g. cluster/aws-gpu.yaml)")
    return plan_trials(search, live_cluster(), read_cluster(repo_path(search.cluster)) if search.cluster else None)


def gpus_on_cpu() -> bool:
    """For tests only: whether :data:`GPU_ON_CPU_ENV` is ``1``. Then Train workers that hold GPU resources train on
    the CPU over gloo, which is what lets Ray's fake autoscaling provider (logical GPUs, no CUDA device) run the
    GPU recipes' searches on a CPU machine: :func:`scaling_config` asks for the GPUs but lets Train pick gloo, and
    ``tune.worker`` trains on the CPU."""
    return os.environ.get(GPU_ON_CPU_ENV) == "1"


def scaling_config(search: SearchConfig):
    """``ray.train.ScalingConfig`` of every Train run: ``search.num_workers`` workers with
    ``search.cpus_per_worker`` CPUs and ``search.gpus_per_worker`` GPUs each (GPUs: NCCL; none: gloo; GPUs with
    :func:`gpus_on_cpu`, in tests: gloo)."""
    import ray.train

    resources = {"CPU": search.cpus_per_worker}
    if search.gpus_per_worker > 0:
        resources["GPU"] = search.gpus_per_worker
    config = ray.train.ScalingConfig(num_workers=search.num_workers, use_gpu=search.gpus_per_worker > 0,
                                     resources_per_worker=resources)
    if gpus_on_cpu():
        # TorchTrainer picks NCCL from use_gpu, which ScalingConfig checks against the GPUs asked for when it is
        # made; cleared afterwards, the workers still hold their GPUs and Train picks gloo.
        config.use_gpu = False
    return config


def worker_runtime_env(search: SearchConfig) -> dict:
    """Runtime env of the Train workers: ``OMP_NUM_THREADS`` = their CPUs, rounded. Ray's own default floors a
    fractional share (1.99 -> 1), and OpenMP reads the variable once per process: the training thread that Train
    starts would otherwise compute with one thread."""
    env = {"OMP_NUM_THREADS": str(max(1, round(search.cpus_per_worker)))}
    if verbose():
        env[VERBOSE_ENV] = "1"
    if gpus_on_cpu():
        env[GPU_ON_CPU_ENV] = "1"
    return {"env_vars": env}
