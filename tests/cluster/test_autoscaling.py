"""The GPU recipes' search on an autoscaling cluster, on one CPU machine: Ray 2.60's fake autoscaling provider
(`ray start --head --autoscaling-config=CONFIG` with ``RAY_FAKE_CLUSTER=1``, what
``ray.cluster_utils.AutoscalingCluster`` does) starts real raylets for CONFIG's node types when placement groups wait
for them, and removes idle ones.

CONFIG's GPU node types are those of the recipes, scaled down: ``aws-gpu`` from cluster/aws-gpu.yaml's ``gpu`` type
and ``kuberay-gpu`` from the KubeRay worker group's pod (read by ``tune.resources.read_cluster``, as the search
reads them), their GPUs kept (logical: no CUDA device exists) and their CPUs divided by :data:`CPU_SCALE`, one node
of each at most; the head is cluster/aws-gpu.yaml's, scaled alike. The search names CONFIG as ``search.cluster``
and is started with no ``search.max_concurrent_trials``; ``HMH_TEST_GPU_ON_CPU=1`` (``tune.resources.gpus_on_cpu``)
lets its Train workers, which hold the GPUs, train on the CPU over gloo. One run shows:

- the search sizes itself from CONFIG at its largest (2 trials at once) while no GPU node is up yet;
- GPU nodes start from zero, and both trials' workers are placed on them, one node each, at the same time;
- a GPU node killed (its raylet and every process it started, SIGKILL) after a trial's first registered checkpoint
  costs that trial a restart of its worker group from that checkpoint; the search and its final retrain complete;
- idle GPU nodes are removed afterwards, down to the head alone but for a node that a resource request of Ray
  Train's still holds (:meth:`FakeCluster.gpu_nodes_held_if_shrunk`: up to 180 s after the search).

Nothing here calls ``ray stop`` or ``AutoscalingCluster.start()`` (both kill every Ray instance on the machine):
the cluster runs in its own sessions, tagged with an environment variable that cleanup finds. Two Ray instances on
one machine hang each other's trials, so the test refuses to start beside another one; it is marked ``slow`` and
runs in its own pytest process from ``make test-cluster`` (under the machine's Ray lock where there is one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from localports import free_ports
from processes import sigkill, wait_for

from tune.resources import Cluster, NodeType, read_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RAY = ROOT / ".venv" / "bin" / "ray"
PYTHON = sys.executable
CPU_SCALE = 8  # a recipe's node CPUs / the fake node's (a g5.2xlarge or KubeRay GPU pod: 8 -> 1)
MARKER_ENV = "HMH_TEST_CLUSTER"  # on every process of the test cluster: found by /proc/<pid>/environ
NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # the fake provider's node id, in every process of its nodes
DROP_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
FAKE_HEAD = "ray.head.default"  # the fake provider's head node type
# grace_period = the epochs of a trial: no trial is stopped early. Both trials run at once, one worker each.
TINY = """\
base: {root}/tune/configs/demo.yaml
model: {{image_size: 64, embed_dim: 16, num_heads: 2, mht_blocks: 1, num_hypotheses: 2}}
selection: {{top_n: 1, decoder_blocks: 1}}
data: {{synthetic_train: 96, synthetic_test: 16, synthetic_size: 64, synthetic_subframes: 3, val_fraction: 0.25,
        max_train_samples: 64, max_eval_samples: 8}}
train: {{generation_epochs: 4, selection_epochs: 1, batch_size: 8, eval_batch_size: 8}}
search: {{experiment: autoscaling, num_samples: 2, grace_period: 5, reduction_factor: 2, num_workers: 1,
          cpus_per_worker: {cpus}, gpus_per_worker: {gpus}, max_failures: 2, final_generation_epochs: 1,
          final_selection_epochs: 1, final_max_train_samples: 16, storage_path: {storage}, cluster: {cluster}}}
"""
SPACE = """\
parameters:
  optim.lr: {type: loguniform, low: 3.0e-4, high: 1.0e-3}
"""


def _scaled(node_type: NodeType) -> dict[str, int]:
    """A recipe's node shape on the fake cluster: its GPUs, its CPUs / :data:`CPU_SCALE` (at least 1)."""
    return {"CPU": max(1, round(node_type.resources["CPU"] / CPU_SCALE)), "GPU": round(node_type.resources["GPU"])}


def _gpu_type(cluster: Cluster) -> NodeType:
    (gpu,) = [t for t in cluster.types if not t.head and t.resources.get("GPU", 0) >= 1]
    return gpu


def fake_config(gcs_address: str) -> dict:
    """The fake provider's launcher config: the head of cluster/aws-gpu.yaml and one GPU node type per recipe,
    scaled down, at most one node of each; idle nodes go after 15 s."""
    aws = read_cluster(str(ROOT / "cluster" / "aws-gpu.yaml"))
    kuberay = read_cluster(str(ROOT / "cluster" / "kuberay-raycluster.yaml"))
    head = next(t for t in aws.types if t.head)
    types = {FAKE_HEAD: {"resources": _scaled(head), "node_config": {}, "max_workers": 0}}
    for name, cluster in (("aws-gpu", aws), ("kuberay-gpu", kuberay)):
        types[name] = {"resources": _scaled(_gpu_type(cluster)), "node_config": {}, "min_workers": 0, "max_workers": 1}
    return {
        "cluster_name": "hmh-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.25,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "head_node_type": FAKE_HEAD, "available_node_types": types, "auth": {"ssh_user": "ubuntu"},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return {k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)}


def _processes(predicate: Callable[[int, dict[str, str]], bool]) -> list[int]:
    """Pids of this machine's processes (not this one) whose ``(pid, environment)`` satisfy ``predicate``."""
    pids = (int(proc.name) for proc in Path("/proc").iterdir() if proc.name.isdigit())
    return [pid for pid in pids if pid != os.getpid() and predicate(pid, _environ(pid))]


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


class FakeCluster:
    """A head started with `ray start --head --block --autoscaling-config=...` in its own session (token auth on),
    whose autoscaler starts the fake nodes; every process carries :data:`MARKER_ENV` for cleanup."""

    def __init__(self, base_env: dict[str, str]):
        from ray._private.services import get_node_ip_address

        self.workdir = Path(tempfile.mkdtemp(prefix="hmhas", dir="/tmp"))  # short: socket paths <= 107 bytes
        self.tag = self.workdir.name
        self.token = self.workdir / "token"
        self.token.write_text("hmh-test-" + os.urandom(16).hex())
        self.gcs_port, self.dashboard_port = free_ports(2)
        self.address = f"{get_node_ip_address()}:{self.gcs_port}"  # the fake nodes join the head there
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.config_path = self.workdir / "autoscaling.yaml"
        self.config = fake_config(self.address)
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.env = dict(base_env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token),
                        RAY_USAGE_STATS_ENABLED="0", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2", HMH_TEST_GPU_ON_CPU="1")
        self.cluster_env = dict(self.env, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
                                AUTOSCALER_HEARTBEAT_TIMEOUT_S="10", **{MARKER_ENV: self.tag})
        self.log = self.workdir / "head.log"
        self.head: subprocess.Popen | None = None

    def start(self) -> None:
        agent, agent_grpc, metrics, runtime_env, manager, objects, client = free_ports(7)
        head = self.config["available_node_types"][FAKE_HEAD]["resources"]
        command = [str(RAY), "start", "--head", "--block", f"--port={self.gcs_port}", f"--num-cpus={head['CPU']}",
                   f"--num-gpus={head['GPU']}", f"--autoscaling-config={self.config_path}",
                   f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
                   f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                   f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                   f"--node-manager-port={manager}", f"--object-manager-port={objects}",
                   f"--ray-client-server-port={client}", f"--temp-dir={self.workdir}/ray", "--disable-usage-stats"]
        with open(self.log, "w") as log:
            self.head = subprocess.Popen(command, env=self.cluster_env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        def up() -> object:
            assert self.head.poll() is None, f"ray start --head exited\n{self.describe()}"
            return self._try(lambda: self.get("/api/version"))

        wait_for("the head's dashboard", up, 120, self.describe)
        wait_for("the head node to register", lambda: len(self.alive_nodes()) == 1, 60, self.describe)

    def get(self, path: str) -> dict:
        request = urllib.request.Request(self.dashboard + path,
                                         headers={"Authorization": f"Bearer {self.token.read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read().decode() or "null")

    @staticmethod
    def _try(fn: Callable[[], object]) -> object:
        try:
            return fn()
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def state(self, resource: str, filters: dict[str, str]) -> list[dict]:
        """Ray's State API (the dashboard's): every ``resource`` (nodes, actors) matching ``filters``."""
        query = "&".join(f"filter_keys={k}&filter_predicates=%3D&filter_values={v}" for k, v in filters.items())
        reply = self._try(lambda: self.get(f"/api/v0/{resource}?limit=10000&detail=true&{query}")) or {}
        return ((reply.get("data") or {}).get("result") or {}).get("result") or []

    def alive_nodes(self) -> dict[str, dict]:
        return {n["node_id"]: n for n in self.state("nodes", {"state": "ALIVE"})}

    def train_workers(self, state: str | None = None) -> list[dict]:
        """Ray Train's worker actors (alive and dead unless ``state``): ``node_id``, ``required_resources``, ..."""
        return self.state("actors", {"class_name": "RayTrainWorker"} | ({"state": state} if state else {}))

    def gpu_nodes_held_if_shrunk(self) -> tuple[int] | None:
        """``(n,)`` once every GPU node is gone but the ``n`` that ``request_resources()`` constraints still hold,
        else None. Ray Train 2.60's controllers register their workers with an AutoscalingCoordinator that asks the
        autoscaler to keep room for them; a controller that dies with its trial (one ASHA stops at its last epoch
        is killed with it) never withdraws that request, which then holds a node until it expires (180 s)."""
        status = (self._try(lambda: self.get("/api/cluster_status?format=0")) or {}).get("data") or {}
        report = (status.get("clusterStatus") or {}).get("loadMetricsReport") or {}
        held = sum(count for bundle, count in report.get("requestDemand") or [] if bundle.get("GPU"))
        nodes = self.alive_nodes()
        return (held,) if nodes and len(nodes) - 1 <= held else None

    def monitor_log(self) -> str:
        """What the autoscaler logged (which node types it added and removed, and why)."""
        return "".join(log.read_text(errors="replace") for log in self.workdir.glob("ray/session_latest/logs/"
                                                                                      "monitor.*"))

    def node_pids(self, node_id: str) -> list[int]:
        """Every process of the fake node ``node_id``: raylet, agents, workers (they inherit its environment)."""
        return _processes(lambda pid, env: env.get(MARKER_ENV) == self.tag and env.get(NODE_ID_ENV) == node_id)

    def describe(self) -> str:
        parts = [f"--- head.log ---\n{self.log.read_text(errors='replace')[-2000:]}"] if self.log.exists() else []
        for log in sorted(self.workdir.glob("ray/session_latest/logs/monitor.*")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
        parts.append(f"--- nodes up ---\n{sorted(self.alive_nodes())}")
        return "\n".join(parts)

    def leftovers(self) -> list[int]:
        return _processes(lambda pid, env: env.get(MARKER_ENV) == self.tag)

    def stop(self) -> None:
        """Stop the head (SIGTERM lets `ray start --block` stop what it started), then SIGKILL what is left: the
        fake nodes, which the autoscaler starts and does not stop on exit."""
        if self.head is not None and self.head.poll() is None:
            self.head.terminate()
            try:
                self.head.wait(timeout=20)
            except subprocess.TimeoutExpired:
                sigkill([self.head.pid])
        for _ in range(5):
            leftovers = self.leftovers()
            if not leftovers:
                break
            sigkill(leftovers)
            time.sleep(1)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def cluster():
    import ray
    from ray._private.services import find_gcs_addresses

    running = find_gcs_addresses()
    assert not running and not ray.is_initialized(), (
        f"another Ray instance is running on this machine (GCS {running}) or in this process; two hang each other: "
        "run this test alone (make test-cluster), under the machine's Ray lock")
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    local = FakeCluster(env)
    try:
        yield local
    finally:
        local.stop()
    assert not local.leftovers(), "processes of the test cluster outlived it"


def _job(tmp_path: Path, cluster: FakeCluster) -> tuple[Path, Path, Path]:
    """The search's config (the recipes' GPU workers scaled as the nodes are, one per trial), its space, and the
    storage folder."""
    gpu = cluster.config["available_node_types"]["aws-gpu"]["resources"]
    storage = tmp_path / "shared"
    config = tmp_path / "autoscaling.yaml"
    config.write_text(TINY.format(root=ROOT, cpus=float(gpu["CPU"]), gpus=float(gpu["GPU"]), storage=storage,
                                  cluster=cluster.config_path))
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return config, space, storage


def test_search_grows_gpu_nodes_from_zero_survives_a_lost_node_and_shrinks(cluster: FakeCluster,
                                                                          tmp_path: Path) -> None:
    start = time.monotonic()
    cluster.start()
    (head,) = cluster.alive_nodes()  # no GPU node before the search asks for one
    config, space, storage = _job(tmp_path, cluster)
    root = storage / "autoscaling"
    console = tmp_path / "search.log"
    with open(console, "w") as out:
        search = subprocess.Popen([PYTHON, "-m", "tune.search", "--config", str(config), "--space", str(space),
                                   "--address", cluster.address], cwd=ROOT, env=cluster.env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def describe() -> str:
        return f"--- search console ---\n{console.read_text(errors='replace')[-6000:]}\n{cluster.describe()}"

    try:
        def checkpointed_trial() -> str | None:
            """A trial whose generation run registered its first checkpoint (the controller's snapshot names it:
            what a restarted worker group resumes from) and is still training."""
            for run in (root / "train").glob("*-generation"):
                snapshot = FakeCluster._try((run / "checkpoint_manager_snapshot.json").read_text) or ""
                if "generation-epoch001" in snapshot and "generation-epoch004" not in snapshot:
                    return run.name.removesuffix("-generation")
            return None

        trial = wait_for("a trial's first registered checkpoint", checkpointed_trial, 240, describe, interval=0.1)
        # Its Train worker: the process of the test cluster working in the run's folder (Train's chdir).
        pids = _processes(lambda pid, env: env.get(MARKER_ENV) == cluster.tag
                          and _cwd(pid).endswith(f"/{trial}-generation"))
        nodes = {_environ(pid).get(NODE_ID_ENV) for pid in pids}
        assert len(nodes) == 1 and head not in nodes, (pids, nodes, describe())
        (node,) = nodes
        # Both trials train at once, each on a GPU node that joined after the search started.
        alive = wait_for("both trials' workers on two GPU nodes",
                          lambda: (w := cluster.train_workers("ALIVE")) and len({x["node_id"] for x in w}) == 2 and w,
                          10, describe, interval=0.2)
        assert head not in {w["node_id"] for w in alive}, (alive, describe())
        killed_wall = time.time()
        sigkill(cluster.node_pids(node))
        assert not (root / "train" / f"{trial}-selection").exists(), "the kill came too late: the trial had finished"

        search.wait(timeout=300)
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
            search.wait(timeout=30)
    text = console.read_text(errors="replace")
    assert search.returncode == 0, describe()

    plan = f"trials at once: 0 on the 1 node up now (head: CPU 1, GPU 0), 2 on {cluster.config_path} at its largest"
    assert plan in text and "at most 2 at once" in text, describe()
    print("\n".join(line for line in text.splitlines() if line.startswith(("one trial holds", "trials at once"))))
    trials = pd.read_parquet(root / "trials.parquet").set_index("trial_id")
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}, trials.to_string()
    assert list(trials["epochs_done"]) == [5, 5], trials["epochs_done"]
    iterations = pd.read_parquet(root / "iterations.parquet")
    resumed = iterations[(iterations["trial_id"] == trial) & (iterations["stage"] == "generation")]
    assert int(resumed["restored_epoch"].max()) >= 1, resumed[["trial_epoch", "restored_epoch"]]  # not from scratch
    restarted = [p.stat().st_mtime for p in (root / "train" / f"{trial}-generation").glob("generation-epoch*/"
                                                                                         "checkpoint.pt")
                 if p.stat().st_mtime > killed_wall]
    assert restarted, "no checkpoint written after the kill"
    assert (root / "final.parquet").is_file() and "final retrain" in text, describe()

    workers = cluster.train_workers()
    assert workers and all(w["node_id"] != head for w in workers), workers  # every worker ran on a GPU node
    # Each held one GPU (a bundle of its trial's placement group: Ray names the resource GPU_group_<i>_<group>).
    assert all({k for k, v in w["required_resources"].items() if k.startswith("GPU_group_") and v == 1}
               for w in workers), [w["required_resources"] for w in workers]
    launched = cluster.monitor_log()
    assert "node(s) of type aws-gpu" in launched and "node(s) of type kuberay-gpu" in launched, cluster.describe()

    ended = time.monotonic()
    held = wait_for("the idle GPU nodes to be removed", cluster.gpu_nodes_held_if_shrunk, 90, cluster.describe)
    assert "(idle)" in cluster.monitor_log(), cluster.describe()  # the autoscaler removed them as idle
    print(f"autoscaling search: {len({w['node_id'] for w in workers})} GPU nodes used; the trial's first checkpoint "
          f"after the kill {min(restarted) - killed_wall:.0f} s after it (restored from epoch "
          f"{int(resumed['restored_epoch'].max())}); the idle GPU nodes gone {time.monotonic() - ended:.0f} s after "
          f"the search, but {held[0]} held by a resource request of Ray Train's (it expires after 180 s); "
          f"{time.monotonic() - start:.0f} s in all")

