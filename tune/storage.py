"""Is ``search.storage_path`` shared by every node of the Ray cluster?

On a multi-node cluster, checkpoints written by a Train worker on one node are read by the trial driver and by
restarted workers on other nodes, so a local ``search.storage_path`` must be the same shared file system (NFS,
EFS, a ``ReadWriteMany`` volume) on every node; URIs (``s3://``, ``gs://``, ...) always are.
:func:`check_shared_storage` writes a marker file under the storage path on this node and asks a tiny Ray task
pinned to each alive node whether it sees it. Single-node clusters are not checked.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hmh.results.tables import is_uri, storage_dir
from tune.resources import ClusterError

__all__ = ["PROBE_TIMEOUT_S", "Node", "SharedStorageError", "alive_nodes", "check_shared_storage", "probe_nodes"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0  # a node's probe task may first have to start a worker and unpack the job's working dir
MARKER_PREFIX = ".hmh-storage-check-"

Probe = Callable[[Sequence["Node"], str], dict[str, bool | None]]


class SharedStorageError(ClusterError):
    """``search.storage_path`` is a local path that some nodes of the cluster cannot see."""


@dataclass(frozen=True)
class Node:
    """An alive Ray node: its id (unique, also between raylets on one machine) and IP address."""

    node_id: str
    ip: str

    def __str__(self) -> str:
        return f"{self.ip} (node {self.node_id[:12]})"


def alive_nodes() -> list[Node]:
    """The cluster's alive nodes (``ray.nodes()``), in Ray's order."""
    import ray

    return [Node(n["NodeID"], n["NodeManagerAddress"]) for n in ray.nodes() if n.get("Alive")]


def _sees(path: str) -> bool:
    return os.path.isfile(path)


def probe_nodes(nodes: Sequence[Node], marker: str, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, bool | None]:
    """Whether each node sees the file ``marker``: a zero-CPU Ray task pinned to the node (hard affinity).
    Returns ``{node_id: True | False | None}``, None for a node whose task failed or did not answer in time."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(_sees)
    refs = {n.node_id: task.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        n.node_id, soft=False)).remote(marker) for n in nodes}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    answers: dict[str, bool | None] = {}
    for node_id, ref in refs.items():
        answers[node_id] = None
        if ref in ready:
            try:
                answers[node_id] = bool(ray.get(ref))
            except Exception as exc:  # a node that died or cannot run tasks: reported as "did not answer"
                log.warning("storage probe on node %s failed: %s", node_id, exc)
        else:
            ray.cancel(ref, force=True)
    return answers


def check_shared_storage(storage_path: str, nodes: Sequence[Node] | None = None, probe: Probe = probe_nodes) -> None:
    """Raise :class:`SharedStorageError` unless every node in ``nodes`` (default: the alive nodes of the
    connected Ray cluster) sees a marker file written under the local ``storage_path``. URIs and single-node
    clusters pass without a probe; nodes whose probe does not answer are logged, not failed. The marker is removed
    afterwards."""
    if is_uri(storage_path):
        return
    nodes = alive_nodes() if nodes is None else list(nodes)
    if len(nodes) < 2:
        return
    folder = storage_dir(storage_path)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{MARKER_PREFIX}{uuid.uuid4().hex}"
    marker.write_text("written by hmh to check that every Ray node sees this folder; safe to delete\n")
    try:
        answers = probe(nodes, str(marker))
    finally:
        marker.unlink(missing_ok=True)
    blind = [n for n in nodes if answers.get(n.node_id) is False]
    silent = [n for n in nodes if answers.get(n.node_id) is None]
    if silent:
        log.warning("search.storage_path %s: node(s) %s did not answer the shared-storage check", folder,
                    ", ".join(map(str, silent)))
    if not blind:
        log.info("search.storage_path %s is seen by %d of %d nodes", folder, len(nodes) - len(silent), len(nodes))
        return
    raise SharedStorageError(
        f"search.storage_path={storage_path!r} ({folder}) is not shared by the {len(nodes)} nodes of this Ray "
        f"cluster: a file written there on this node is not visible on node(s) {', '.join(map(str, blind))}. "
        "Checkpoints written on one node must be readable on the others: set search.storage_path to an s3:// or "
        "gs:// URI, or to an NFS path mounted at the same place on every node (see cluster/README.md)")
