"""tune.resources without a running Ray: a local Ray started by the drivers listens on 127.0.0.1 only (its node
address is the loopback one while ``ray.init`` runs, which is what makes Ray 2.60 bind its token-less Prometheus
metrics endpoints to loopback; ``ray.init`` is replaced here), and how many trials run at once: on the nodes up now,
or on an autoscaling cluster's definition at its largest (cluster/aws-gpu.yaml, the KubeRay manifests), with the
refusals that name the key at fault."""

import dataclasses
import types
from pathlib import Path

import pytest
import yaml

from hmh.config import SearchConfig, load_config
from tune.resources import (
    DRIVER_CPUS,
    GPU_ON_CPU_ENV,
    Cluster,
    ClusterError,
    NodeType,
    gpus_on_cpu,
    plan_trials,
    read_cluster,
    scaling_config,
    trials_at_once,
    worker_runtime_env,
)


def test_a_local_ray_starts_on_the_loopback_address(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from ray._private import ray_constants, services

    import tune.resources as resources

    seen = []

    def fake_init(**kwargs):
        seen.append((services.get_node_ip_address(), kwargs.get("dashboard_host"), kwargs.get("num_cpus")))
        return types.SimpleNamespace(dashboard_url="127.0.0.1:8265")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(resources, "_refuse_second_local_instance", lambda: None)
    monkeypatch.setattr(resources, "filter_worker_echo", lambda: None)
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    assert resources.init_ray(None, echo=lambda text: None) == "http://127.0.0.1:8265"
    # no num_cpus: Ray counts the CPUs itself, a container's CPU quota included (os.cpu_count() sees the host's)
    assert seen == [("127.0.0.1", "127.0.0.1", None)]
    assert ray_constants.ENABLE_RAY_CLUSTER == enabled  # only for the call: joining a cluster is unaffected


@pytest.mark.parametrize(("address", "loopback"), [("10.0.0.1:6379", False), ("auto", False),
                                                   ("127.0.0.1:6379", True), ("localhost:6379", True)])
def test_a_loopback_address_to_join_is_kept(monkeypatch: pytest.MonkeyPatch, address: str, loopback: bool) -> None:
    """Ray replaces a loopback HOST by this machine's outward address, where a local run's Ray does not listen;
    other addresses reach Ray as they are."""
    import ray
    from ray._private import ray_constants, services

    import tune.resources as resources

    seen = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.append(ray_constants.ENABLE_RAY_CLUSTER) or
                        types.SimpleNamespace(dashboard_url=""))
    monkeypatch.setattr(resources, "filter_worker_echo", lambda: None)
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    resources.init_ray(address, echo=lambda text: None)
    assert seen == [enabled and not loopback]  # False: Ray keeps loopback addresses as they are
    assert ray_constants.ENABLE_RAY_CLUSTER == enabled
    if loopback:
        with resources._loopback_node():
            assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"


# ---------------------------------------------------------------- how many trials run at once (no Ray starts)

ROOT = Path(__file__).resolve().parents[2]
AWS = str(ROOT / "cluster" / "aws-gpu.yaml")
KUBERAY = str(ROOT / "cluster" / "kuberay-raycluster.yaml")


def _search(**values) -> SearchConfig:
    return dataclasses.replace(load_config("tune/configs/blurhand.yaml").search, **values)


def _live(*nodes: dict[str, float]) -> Cluster:
    """Nodes up now, the first the head (as tune.resources.live_cluster reports them)."""
    types = tuple(NodeType("head" if i == 0 else "node", node, 1, i == 0) for i, node in enumerate(nodes))
    return Cluster(f"the {len(nodes)} node{'s' if len(nodes) > 1 else ''} up now", types, len(nodes) - 1)


@pytest.mark.parametrize(("nodes", "workers", "cpus", "expected"), [
    ([{"CPU": 2}], 2, 0.99, 1),  # tune/configs/demo.yaml on 2 cores: 2 x 0.99 + 0.01 for the driver
    ([{"CPU": 8}], 2, 1.0, 3),  # 3 x 2.01 <= 8 < 4 x 2.01
    ([{"CPU": 4}], 2, 1.0, 1),  # 2 x 2.01 > 4: the drivers' slivers count
    ([{"CPU": 2}, {"CPU": 1}], 1, 1.0, 2),  # tests/tune/test_multinode.py: one trial's worker on each node
])
def test_a_fixed_cluster_runs_what_its_nodes_hold(nodes, workers, cpus, expected) -> None:
    search = _search(num_workers=workers, cpus_per_worker=cpus, gpus_per_worker=0.0, num_samples=10)
    plan = plan_trials(search, _live(*nodes))
    assert (plan.now, plan.largest, plan.limit) == (expected, expected, expected)
    assert plan.holds == {"CPU": pytest.approx(DRIVER_CPUS + workers * cpus), "GPU": 0.0}
    assert plan.lines[1].startswith(f"trials at once: {expected} on the {len(nodes)} node")


def test_a_fixed_cluster_that_can_never_hold_a_trial_is_refused() -> None:
    with pytest.raises(ClusterError, match=r"^search\.num_workers=3: one trial's 3 Train workers .* do not fit the "
                       r"1 node up now, which has head: CPU 2, GPU 0; if the cluster autoscales, name its definition "
                       r"with search\.cluster"):
        plan_trials(_search(num_workers=3, cpus_per_worker=0.99, gpus_per_worker=0.0), _live({"CPU": 2}))
    with pytest.raises(ClusterError, match=r"^search\.gpus_per_worker=1: no node can hold one Train worker "
                       r"\(CPU 1, GPU 1\); the 1 node up now has head: CPU 4, GPU 0; if the cluster autoscales"):
        plan_trials(_search(num_workers=1, cpus_per_worker=1.0), _live({"CPU": 4}))


def test_an_autoscaling_cluster_is_sized_at_its_largest_from_its_definition() -> None:
    """cluster/aws-gpu.yaml at the start of a search: the head alone is up, and 4 GPU nodes can join."""
    head_only = _live({"CPU": 4, "GPU": 0})
    plan = plan_trials(_search(), head_only, read_cluster(AWS))
    assert (plan.now, plan.largest, plan.limit) == (0, 2, 2)  # 2 workers of {CPU 8, GPU 1} per trial, 4 nodes
    assert plan.holds == {"CPU": pytest.approx(16.01), "GPU": 2.0}
    assert plan.lines[0] == ("one trial holds CPU 16.01, GPU 2: its driver (CPU 0.01, on the head node) and 2 Train "
                             "worker(s) of CPU 8, GPU 1")
    assert plan.lines[1] == (f"trials at once: 0 on the 1 node up now (head: CPU 4, GPU 0), 2 on {AWS} at its "
                             "largest (head: CPU 4, GPU 0; 4 x gpu: CPU 8, GPU 1); 2 start now, and the workers of "
                             "those without nodes wait while the autoscaler adds them")
    one_node_up = _live({"CPU": 4, "GPU": 0}, {"CPU": 8, "GPU": 1})
    assert plan_trials(_search(), one_node_up, read_cluster(AWS)).now == 0  # half a trial's workers
    assert plan_trials(_search(num_samples=1), head_only, read_cluster(AWS)).limit == 1
    assert plan_trials(_search(max_concurrent_trials=1), head_only, read_cluster(AWS)).limit == 1
    assert plan_trials(_search(max_concurrent_trials=9), head_only, read_cluster(AWS)).limit == 2  # a cap, no more
    assert plan_trials(_search(num_workers=1), head_only, read_cluster(KUBERAY)).largest == 4


@pytest.mark.parametrize(("values", "message"), [
    ({"cpus_per_worker": 12.0}, r"^search\.cpus_per_worker=12: no node can hold one Train worker \(CPU 12, GPU 1\); "
                                r".*aws-gpu\.yaml has head: CPU 4, GPU 0; 4 x gpu: CPU 8, GPU 1$"),
    ({"gpus_per_worker": 2.0}, r"^search\.gpus_per_worker=2: no node can hold one Train worker"),
    ({"cpus_per_worker": 16.0, "gpus_per_worker": 2.0},
     r"^search\.cpus_per_worker=16 and search\.gpus_per_worker=2: no node can hold"),
    ({"num_workers": 5}, r"^search\.num_workers=5: one trial's 5 Train workers \(CPU 8, GPU 1 each\) and its driver "
                         r"\(CPU 0\.01 on the head\) do not fit .*aws-gpu\.yaml, which has head: CPU 4, GPU 0"),
], ids=["cpus", "gpus", "both", "workers"])
def test_a_request_no_node_type_can_hold_is_refused_naming_the_key(values, message) -> None:
    with pytest.raises(ClusterError, match=message):
        plan_trials(_search(**values), _live({"CPU": 4, "GPU": 0}), read_cluster(AWS))


def test_a_head_without_cpus_holds_no_trial_driver(tmp_path: Path) -> None:
    config = yaml.safe_load(Path(AWS).read_text())
    config["available_node_types"]["head"]["resources"] = {"CPU": 0, "GPU": 0}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ClusterError, match=r"its driver \(CPU 0\.01 on the head\) do not fit"):
        plan_trials(_search(), _live({"CPU": 0, "GPU": 0}), read_cluster(str(path)))


def test_the_cap_on_worker_nodes_takes_the_types_that_hold_most_first(tmp_path: Path) -> None:
    config = yaml.safe_load(Path(AWS).read_text())
    config["max_workers"] = 3
    config["available_node_types"]["small"] = {"resources": {"CPU": 8, "GPU": 0}, "max_workers": 10,
                                               "node_config": {}}
    config["available_node_types"]["big"] = {"resources": {"CPU": 16, "GPU": 2}, "max_workers": 1, "node_config": {}}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    cluster = read_cluster(str(path))
    assert cluster.max_workers == 3
    # big (2 workers) and 2 x gpu (1 each): 4 workers, 2 trials; the CPU-only type holds none of these workers.
    assert trials_at_once(cluster, _search(num_samples=10)) == 2


def test_kuberay_manifests_are_read_as_rays_kuberay_autoscaler_reads_them() -> None:
    raycluster = read_cluster(KUBERAY)
    rayjob = read_cluster(str(ROOT / "cluster" / "kuberay-rayjob.yaml"))
    assert raycluster.types == rayjob.types and raycluster.max_workers == rayjob.max_workers == 4
    shapes = {t.name: ({k: t.resources[k] for k in ("CPU", "GPU")}, t.count, t.head) for t in raycluster.types}
    assert shapes == {"headgroup": ({"CPU": 4.0, "GPU": 0.0}, 1, True), "gpu": ({"CPU": 8.0, "GPU": 1.0}, 4, False)}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["available_node_types"]["gpu"].pop("resources"),
     r"available_node_types\.gpu\.resources must state what one node offers Ray"),
    (lambda c: c.update(head_node_type="nope"), r"head_node_type='nope' is not one of available_node_types"),
    (lambda c: [c.pop("max_workers"), c["available_node_types"]["gpu"].pop("max_workers")],
     r"available_node_types\.gpu\.max_workers is not set, nor is max_workers"),
    (lambda c: c["available_node_types"]["gpu"].update(max_workers=-1), r"gpu\.max_workers: expected a node count"),
    (lambda c: c.clear() or c.update(kind="Deployment"), r"not a cluster definition"),
], ids=["no-resources", "bad-head", "no-max", "negative-max", "not-a-cluster"])
def test_a_cluster_definition_it_cannot_read_is_one_line_naming_the_key(tmp_path: Path, edit, message) -> None:
    config = yaml.safe_load(Path(AWS).read_text())
    edit(config)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ClusterError, match=message) as info:
        read_cluster(str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_workers_holding_gpus_train_on_the_cpu_only_when_tests_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """HMH_TEST_GPU_ON_CPU=1: the workers still ask for their GPUs (placement, autoscaling), and Train picks gloo."""
    from ray.train.torch import TorchTrainer

    search = _search(num_workers=2, cpus_per_worker=1.0, gpus_per_worker=1.0)
    monkeypatch.delenv(GPU_ON_CPU_ENV, raising=False)
    assert not gpus_on_cpu()
    config = scaling_config(search)
    assert config.use_gpu and config._resources_per_worker_not_none == {"CPU": 1.0, "GPU": 1.0}
    assert TorchTrainer(lambda c: None, scaling_config=config).backend_config.backend == "nccl"
    assert GPU_ON_CPU_ENV not in worker_runtime_env(search)["env_vars"]

    monkeypatch.setenv(GPU_ON_CPU_ENV, "1")
    config = scaling_config(search)
    assert not config.use_gpu and config._resources_per_worker_not_none == {"CPU": 1.0, "GPU": 1.0}
    assert TorchTrainer(lambda c: None, scaling_config=config).backend_config.backend == "gloo"
    assert worker_runtime_env(search)["env_vars"][GPU_ON_CPU_ENV] == "1"  # the workers train on the CPU


def test_a_missing_cluster_definition_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import tune.resources as resources

    monkeypatch.setattr(resources, "live_cluster", lambda: _live({"CPU": 4, "GPU": 0}))
    with pytest.raises(ClusterError, match=r"^search\.cluster='cluster/no-such\.yaml': no such file"):
        resources.trial_plan(_search(cluster="cluster/no-such.yaml"))
    assert resources.trial_plan(_search(cluster="cluster/aws-gpu.yaml")).limit == 2  # relative to the repository
