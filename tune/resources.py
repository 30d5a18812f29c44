"""Connecting to Ray and sizing trials: ``ray.init`` for a local machine or a cluster, each Train run's
``ScalingConfig``, and how many trials can run at once without waiting forever for a placement group."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping

from hmh.config import SearchConfig
from hmh.errors import HmhError
from tune.console import VERBOSE_ENV, filter_worker_echo, verbose

__all__ = ["DRIVER_CPUS", "ClusterError", "init_ray", "max_concurrent_trials", "scaling_config", "trial_resources",
           "worker_runtime_env"]

log = logging.getLogger(__name__)

DRIVER_CPUS = 0.01  # a Tune trial's driver only waits on its Train runs; 0 is refused by Tune
_EPS = 1e-9


class ClusterError(HmhError):
    """The cluster cannot run what the config asks for (the message names the config keys)."""


def init_ray(address: str | None = None, echo: Callable[[str], None] = print) -> str:
    """Start or join Ray and return the dashboard URL (also echoed).

    ``address`` None: a local single-node Ray with this machine's CPUs and GPUs, the dashboard on 127.0.0.1 (Ray
    Train's cleanup needs it), token authentication left on (Ray's default) and every port it opens on 127.0.0.1
    (:func:`_loopback_node`). ``address`` given (``auto``, ``HOST:PORT`` or ``ray://...``): join that cluster,
    whose ports are as its ``ray start`` opened them (docs/security.md); a loopback ``HOST`` (such as the address
    of another driver's local Ray) is kept as it is, where Ray would replace it by this machine's outward address.
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
            context = ray.init(num_cpus=os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1")
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


def max_concurrent_trials(cluster: Mapping[str, float], search: SearchConfig) -> int:
    """Trials that fit at once in ``cluster`` (``ray.cluster_resources()``), at most ``search.num_samples``.

    ``search.max_concurrent_trials`` > 0 is taken as given (autoscaling clusters, whose resources appear only
    when trials ask for them). Raises :class:`ClusterError` when not even one trial fits: Train would otherwise
    wait for its placement group forever.
    """
    if search.max_concurrent_trials > 0:
        return min(search.max_concurrent_trials, search.num_samples)
    need = trial_resources(search)
    fits = []
    for name, amount in need.items():
        if amount > 0:
            fits.append(math.floor(cluster.get(name, 0.0) / amount + _EPS))
    count = min(fits)
    if count < 1:
        have = ", ".join(f"{k} {cluster.get(k, 0.0):g}" for k in need)
        raise ClusterError(
            f"a trial needs CPU {need['CPU']:g}, GPU {need['GPU']:g} (search.num_workers={search.num_workers} x "
            f"search.cpus_per_worker={search.cpus_per_worker:g} / search.gpus_per_worker="
            f"{search.gpus_per_worker:g}) but the cluster has {have}; lower them, or set "
            "search.max_concurrent_trials for a cluster that autoscales"
        )
    return min(count, search.num_samples)


def scaling_config(search: SearchConfig):
    """``ray.train.ScalingConfig`` of every Train run: ``search.num_workers`` workers with
    ``search.cpus_per_worker`` CPUs and ``search.gpus_per_worker`` GPUs each (GPUs: NCCL; none: gloo)."""
    import ray.train

    resources = {"CPU": search.cpus_per_worker}
    if search.gpus_per_worker > 0:
        resources["GPU"] = search.gpus_per_worker
    return ray.train.ScalingConfig(num_workers=search.num_workers, use_gpu=search.gpus_per_worker > 0,
                                   resources_per_worker=resources)


def worker_runtime_env(search: SearchConfig) -> dict:
    """Runtime env of the Train workers: ``OMP_NUM_THREADS`` = their CPUs, rounded. Ray's own default floors a
    fractional share (1.99 -> 1), and OpenMP reads the variable once per process: the training thread that Train
    starts would otherwise compute with one thread."""
    env = {"OMP_NUM_THREADS": str(max(1, round(search.cpus_per_worker)))}
    return {"env_vars": env | ({VERBOSE_ENV: "1"} if verbose() else {})}
