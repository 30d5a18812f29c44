"""A real two-node Ray cluster on this machine: a head and a second node started with `ray start` (two raylets, one
GCS, token authentication on), the search submitted with cluster/submit, as docs/cluster.md's "Trying it on one
machine".

- placement: two concurrent trials on a 2-CPU head and a 1-CPU second node, one 1-CPU Train worker each; the trial
  drivers stay on the head (tune.search pins them there), so one trial's worker must run on each node;
- fault injection: the second node is SIGKILLed (its raylet and every process it started) while a trial's worker
  trains there; Train restarts the worker group on the head from its last checkpoint, the search completes and the
  trial that had finished before is untouched. The recovery time is printed and written to ``recovery.json``.

Nothing here calls ``ray.init`` (other test modules run a local Ray in this process): the cluster is driven through
`ray start`, cluster/submit and the dashboard's HTTP API (Jobs and State), with the cluster's auth token.
Run under the machine-wide lock: ``flock /tmp/hmh-ray.lock pytest tests/tune/test_multinode.py -m cluster``.
"""

from __future__ import annotations

import json
import os
import shutil
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

from tune.resources import LOCAL_WORKER_NICENESS

pytestmark = [pytest.mark.cluster, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]
RAY = ROOT / ".venv" / "bin" / "ray"
PYTHON = sys.executable
SUBMIT = ROOT / "cluster" / "submit"
MARKER_ENV = "HMH_TEST_CLUSTER"  # set on every process of the test cluster: found by /proc/<pid>/environ
NODE_ENV = "HMH_TEST_NODE"
DROP_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
            "HMH_CLUSTER_PYTHON", "HMH_RAY")
# grace_period = the epochs of a trial (ASHA's max_t): no trial is stopped early.
TINY = """\
base: demo.yaml
model: {{image_size: 64, embed_dim: 16, num_heads: 2, mht_blocks: 1, num_hypotheses: 2}}
selection: {{top_n: 1, decoder_blocks: 1}}
data: {{synthetic_train: 64, synthetic_test: 16, synthetic_size: 64, synthetic_subframes: 3, val_fraction: 0.25,
        max_train_samples: 32, max_eval_samples: 8}}
train: {{generation_epochs: {epochs}, selection_epochs: 1, batch_size: 8, eval_batch_size: 8}}
search: {{experiment: multinode, num_samples: 2, max_concurrent_trials: {concurrent}, grace_period: {total},
          reduction_factor: 2, num_workers: 1, cpus_per_worker: 1.0, max_failures: 1, final_retrain: false,
          storage_path: {storage}}}
"""
SPACE = """\
parameters:
  optim.lr: {type: loguniform, low: 3.0e-4, high: 1.0e-3}
"""


def _session_id(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])  # fields after the command: state ppid pgrp session


def _pids_of(sessions: set[int], name: str, value: str) -> list[int]:
    """Processes in one of ``sessions`` (each `ray start` leads its own; Ray's processes stay in it) or whose
    environment holds ``name=value`` (inherited from the raylet, unless the process title overwrote it)."""
    needle = f"{name}={value}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        pid = int(proc.name)
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if _session_id(pid) in sessions or needle in environ.split(b"\0"):
            pids.append(pid)
    return pids


class LocalCluster:
    """A head and extra nodes started with `ray start --block` in their own sessions, all tagged with a unique
    environment variable so that cleanup finds every process (workers rename their command lines)."""

    def __init__(self, base_env: dict[str, str]):
        self.workdir = Path(tempfile.mkdtemp(prefix="hmhmn", dir="/tmp"))  # short: socket paths <= 107 bytes
        self.tag = self.workdir.name
        self.token = self.workdir / "token"
        self.token.write_text("hmh-test-" + os.urandom(16).hex())
        self.env = dict(base_env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token),
                        RAY_USAGE_STATS_ENABLED="0", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
                        RAY_worker_niceness=str(LOCAL_WORKER_NICENESS))  # as init_ray's local Ray
        self.env[MARKER_ENV] = self.tag
        self.gcs_port, self.dashboard_port = free_ports(2)
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.logs = self.workdir / "logs"
        self.logs.mkdir()

    def _start(self, name: str, args: list[str]) -> None:
        agent, agent_grpc, metrics, runtime_env, manager, objects = free_ports(6)
        env = dict(self.env, **{NODE_ENV: f"{self.tag}-{name}"})
        command = [str(RAY), "start", "--block", f"--temp-dir={self.workdir}/{name}", "--disable-usage-stats",
                   f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                   f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                   f"--node-manager-port={manager}", f"--object-manager-port={objects}", *args]
        with open(self.logs / f"{name}.log", "w") as log:
            self.nodes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def start_head(self, num_cpus: int) -> None:
        client = free_ports(1)[0]
        self._start("head", ["--head", f"--num-cpus={num_cpus}", "--num-gpus=0", f"--port={self.gcs_port}",
                             f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
                             f"--ray-client-server-port={client}"])
        wait_for("the head's dashboard", lambda: self._try(lambda: self.get("/api/version")), 120, self.describe)
        wait_for("the head node to register", lambda: len(self.alive_nodes()) == 1, 60, self.describe)

    def add_node(self, name: str, num_cpus: int) -> str:
        """Start a node joining the head; returns its node id."""
        before = set(self.alive_nodes())
        self._start(name, [f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={num_cpus}", "--num-gpus=0"])
        new = wait_for(f"node {name} to join", lambda: set(self.alive_nodes()) - before, 120, self.describe)
        (node_id,) = new
        return node_id

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.dashboard + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token.read_text().strip()}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read().decode() or "null")

    def get(self, path: str) -> dict:
        return self.request("GET", path)

    @staticmethod
    def _try(fn: Callable[[], object]) -> object:
        try:
            return fn()
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def _state(self, resource: str, filters: dict[str, str]) -> list[dict]:
        query = "&".join(f"filter_keys={k}&filter_predicates=%3D&filter_values={v}" for k, v in filters.items())
        reply = self.get(f"/api/v0/{resource}?limit=10000&detail=true&{query}")
        return reply["data"]["result"]["result"]

    def alive_nodes(self) -> dict[str, dict]:
        nodes = self._try(lambda: self._state("nodes", {"state": "ALIVE"})) or []
        return {n["node_id"]: n for n in nodes}

    def head_node_id(self) -> str:
        return next(node_id for node_id, n in self.alive_nodes().items() if n["is_head_node"])

    def train_workers(self, state: str | None = None) -> list[dict]:
        """Ray Train's worker actors (every job, alive and dead): ``node_id``, ``pid``, ``state``."""
        filters = {"class_name": "RayTrainWorker"} | ({"state": state} if state else {})
        return self._try(lambda: self._state("actors", filters)) or []

    def job(self, job_id: str) -> dict:
        return self.get(f"/api/jobs/{job_id}")

    def job_logs(self, job_id: str) -> str:
        reply = self._try(lambda: self.get(f"/api/jobs/{job_id}/logs")) or {}
        return reply.get("logs", "")

    def wait_job(self, job_id: str, timeout: float) -> dict:
        terminal = {"SUCCEEDED", "FAILED", "STOPPED"}
        return wait_for(f"job {job_id} to end",
                         lambda: (info := self._try(lambda: self.job(job_id))) and info["status"] in terminal and info,
                         timeout, lambda: self.describe(job_id), interval=2)

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL the node's `ray start` and every process it started (raylet, agents, workers)."""
        proc = self.nodes[name]
        pids = [proc.pid, *_pids_of({proc.pid}, NODE_ENV, f"{self.tag}-{name}")]
        sigkill(pids)
        proc.wait(timeout=10)
        return pids

    def describe(self, job_id: str = "") -> str:
        """What to read when something fails: the job's logs, `ray start` output, Ray's own error logs."""
        parts = []
        if job_id:
            parts.append(f"--- job {job_id} logs (last 6000 chars) ---\n{self.job_logs(job_id)[-6000:]}")
        for log in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-1500:]}")
        for log in sorted(self.workdir.glob("*/session_latest/logs/*.err")):
            text = log.read_text(errors="replace").strip()
            if text and ("Error" in text or "Traceback" in text):
                parts.append(f"--- {log.relative_to(self.workdir)} ---\n{text[-1500:]}")
        return "\n".join(parts)[-20000:]

    def leftovers(self) -> list[int]:
        return _pids_of({p.pid for p in self.nodes.values()}, MARKER_ENV, self.tag)

    def stop(self) -> None:
        """Stop every node (SIGTERM lets `ray start --block` stop its processes), then SIGKILL whatever is left."""
        for proc in reversed(list(self.nodes.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.nodes.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sigkill([proc.pid])
        for _ in range(5):
            leftovers = self.leftovers()
            if not leftovers:
                break
            sigkill(leftovers)
            time.sleep(1)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def cluster():
    from ray._private.services import find_gcs_addresses

    running = find_gcs_addresses()
    assert not running, (f"another Ray instance is running on this machine (GCS {running}); two hang each other: "
                         "stop it, and run this test under `flock /tmp/hmh-ray.lock`")
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env["HMH_CACHE_DIR"] = os.environ["HMH_CACHE_DIR"]  # tests/conftest.py: the session's synthetic data and MANO
    local = LocalCluster(env)
    try:
        yield local
    finally:
        local.stop()
    assert not local.leftovers(), "processes of the test cluster outlived it"


def _job_tree(tmp_path: Path, epochs: int, concurrent: int) -> tuple[Path, Path]:
    """The job's working directory (what a user's checkout holds: hmh, tune, cluster, pyproject.toml) with the
    experiment config and space; returns ``(working_dir, storage)``."""
    tree = tmp_path / "job"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("hmh", "tune", "cluster"):
        shutil.copytree(ROOT / name, tree / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tree)
    storage = tmp_path / "shared"
    config = TINY.format(epochs=epochs, total=epochs + 1, concurrent=concurrent, storage=storage)
    (tree / "tune" / "configs" / "multinode.yaml").write_text(config)
    (tree / "tune" / "spaces" / "multinode.yaml").write_text(SPACE)
    return tree, storage


def _submit(cluster: LocalCluster, tree: Path, job_id: str) -> None:
    env = dict(cluster.env)
    env.pop(MARKER_ENV)
    result = subprocess.run(
        [str(SUBMIT), "--address", cluster.dashboard, "--python", PYTHON, "--working-dir", str(tree),
         "--submission-id", job_id, "--no-wait", "--config", "tune/configs/multinode.yaml",
         "--space", "tune/spaces/multinode.yaml"],
        env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + cluster.describe()


def _assert_results_complete(storage: Path, epochs_total: int, logs: str) -> pd.DataFrame:
    root = storage / "multinode"
    for name in ("trials.parquet", "iterations.parquet", "summary.md", "experiment.yaml", "space.yaml", "optuna.db"):
        assert (root / name).is_file(), f"{root / name} missing\n{logs}"
    trials = pd.read_parquet(root / "trials.parquet")
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}, trials.to_string()
    assert list(trials["epochs_done"]) == [epochs_total] * 2, trials[["trial_id", "epochs_done"]]
    assert trials["objective"].notna().all()
    iterations = pd.read_parquet(root / "iterations.parquet")
    for trial_id in trials["trial_id"]:
        epochs = sorted(iterations.loc[iterations["trial_id"] == trial_id, "trial_epoch"])
        assert epochs == list(range(1, epochs_total + 1)), (trial_id, epochs)
        assert list((root / "tensorboard" / trial_id).glob("events.out.tfevents.*")), trial_id
    assert "2 (2 completed" in (root / "summary.md").read_text()
    assert list((root / "plots").glob("*.png"))
    assert not list(storage.glob(".hmh-storage-check-*"))  # the shared-storage check cleaned up after itself
    return trials


def test_search_places_trials_on_both_nodes(cluster: LocalCluster, tmp_path: Path) -> None:
    start = time.monotonic()
    cluster.start_head(num_cpus=2)
    second = cluster.add_node("second", num_cpus=1)
    head = cluster.head_node_id()
    tree, storage = _job_tree(tmp_path, epochs=2, concurrent=0)  # 0: from the resources, 3 CPU // 1.01 = 2
    _submit(cluster, tree, "hmh-multinode")
    info = cluster.wait_job("hmh-multinode", timeout=300)
    logs = cluster.describe("hmh-multinode")
    assert info["status"] == "SUCCEEDED", logs
    console = cluster.job_logs("hmh-multinode")
    assert "at most 2 at once" in console, logs
    assert f"search.storage_path {storage} is seen by 2 of 2 nodes" in console, logs  # tune.storage's probe
    _assert_results_complete(storage, epochs_total=3, logs=logs)
    workers = cluster.train_workers()
    placed = [w for w in workers if w["node_id"]]  # a worker whose group went before it was placed has no node
    assert {w["node_id"] for w in placed} == {head, second}, (workers, logs)
    print(f"two-node search: {len(workers)} Train worker groups, {time.monotonic() - start:.0f} s in all")


def test_killed_node_trial_resumes_on_the_head(cluster: LocalCluster, tmp_path: Path) -> None:
    """Trials run one at a time. While the head's second CPU is held by a placeholder job, the Train workers can
    only run on the second node; trial 2 is left to checkpoint once there, the placeholder is stopped (the head
    now has room) and the second node is killed."""
    start = time.monotonic()
    cluster.start_head(num_cpus=2)
    cluster.request("POST", "/api/jobs/", {"entrypoint": "sleep 900", "submission_id": "hmh-placeholder",
                                           "entrypoint_num_cpus": 1})
    wait_for("the placeholder job", lambda: cluster.job("hmh-placeholder")["status"] == "RUNNING", 60,
              lambda: cluster.describe("hmh-placeholder"))
    second = cluster.add_node("second", num_cpus=1)
    head = cluster.head_node_id()
    tree, storage = _job_tree(tmp_path, epochs=4, concurrent=1)
    root = storage / "multinode"
    _submit(cluster, tree, "hmh-fault")

    def first_trial_done() -> str | None:
        if not (root / "trials.parquet").is_file():
            return None
        trials = pd.read_parquet(root / "trials.parquet")
        done = trials[trials["status"] == "TERMINATED"]
        return done["trial_id"].iloc[0] if len(done) else None

    describe = lambda: cluster.describe("hmh-fault")  # noqa: E731
    first = wait_for("the first trial to finish", first_trial_done, 240, describe, interval=1)
    before = pd.read_parquet(root / "trials.parquet").set_index("trial_id").loc[first]
    iterations_before = pd.read_parquet(root / "iterations.parquet")
    iterations_before = iterations_before[iterations_before["trial_id"] == first].reset_index(drop=True)

    def second_trial_checkpointed() -> Path | None:
        """The second trial's generation run once Train's controller has registered its first checkpoint: the
        folder appears when rank 0 uploads it, a moment before the controller records it in its snapshot (only a
        registered checkpoint is what a restarted worker group gets from ``get_checkpoint``)."""
        for run in (root / "train").glob("*-generation"):
            snapshot = run / "checkpoint_manager_snapshot.json"
            if not run.name.startswith(first) and "generation-epoch001" in str(LocalCluster._try(snapshot.read_text)):
                return run
        return None

    run = wait_for("the second trial's first registered checkpoint", second_trial_checkpointed, 180, describe,
                    interval=0.2)
    alive = cluster.train_workers("ALIVE")
    assert [w["node_id"] for w in alive] == [second], (alive, describe())  # trial 2 trains on the second node
    cluster.request("POST", "/api/jobs/hmh-placeholder/stop")
    wait_for("the placeholder to stop", lambda: cluster.job("hmh-placeholder")["status"] == "STOPPED", 60)
    checkpoints_before = {p.name for p in run.glob("generation-epoch*")}
    selection = run.with_name(run.name.replace("-generation", "-selection"))
    killed_at, killed_wall = time.monotonic(), time.time()
    cluster.kill_node("second")
    assert not selection.exists(), "the kill came too late: the generation stage had finished"

    restarted = wait_for("Train to restart the worker group on the head",
                          lambda: [w for w in cluster.train_workers("ALIVE") if w["node_id"] == head], 180, describe,
                          interval=0.2)
    restarted_at = time.monotonic()

    def new_checkpoint() -> bool:  # a checkpoint written after the kill (the restarted group may redo an epoch)
        files = [*run.glob("generation-epoch*/checkpoint.pt"), *selection.glob("selection-epoch*/checkpoint.pt")]
        return any(LocalCluster._try(lambda f=f: f.stat().st_mtime > killed_wall) for f in files)

    wait_for("the first checkpoint after the restart", new_checkpoint, 180, describe, interval=0.2)
    reported_at = time.monotonic()
    info = cluster.wait_job("hmh-fault", timeout=300)
    logs = cluster.describe("hmh-fault")
    assert info["status"] == "SUCCEEDED", logs
    trials = _assert_results_complete(storage, epochs_total=5, logs=logs).set_index("trial_id")

    after = trials.loc[first]  # the trial that had finished is untouched
    for key in ("status", "objective", "epochs_done", "time_total_s", "config/optim.lr"):
        assert after[key] == before[key], (key, before[key], after[key])
    iterations = pd.read_parquet(root / "iterations.parquet")
    pd.testing.assert_frame_equal(iterations[iterations["trial_id"] == first].reset_index(drop=True),
                                  iterations_before)
    resumed = iterations[(iterations["trial_id"] != first) & (iterations["stage"] == "generation")]
    restored = int(resumed["restored_epoch"].max())
    assert restored >= 1, resumed[["trial_epoch", "restored_epoch"]]  # resumed from a checkpoint, not epoch 0
    assert {w["node_id"] for w in restarted} == {head}
    recovery = {"kill_to_worker_group_restarted_s": round(restarted_at - killed_at, 1),
                "kill_to_first_checkpoint_after_restart_s": round(reported_at - killed_at, 1),
                "restored_epoch": restored, "checkpoints_before_kill": sorted(checkpoints_before),
                "test_total_s": round(time.monotonic() - start, 1)}
    (tmp_path / "recovery.json").write_text(json.dumps(recovery, indent=2))
    print(f"recovery after killing the second node: {json.dumps(recovery)} ({tmp_path / 'recovery.json'})")
