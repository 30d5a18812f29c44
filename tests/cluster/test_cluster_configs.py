"""The cluster definitions in cluster/, checked offline: the launcher YAML with Ray's own validation, the KubeRay
manifests' fields, the runtime env's excludes with Ray's own packaging code, and cluster/submit (syntax, --help,
--dry-run command lines, refusals, and one real submission to a local token-auth Ray head)."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml
from localports import free_ports

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
SUBMIT = CLUSTER / "submit"
RAY = ROOT / ".venv" / "bin" / "ray"
RAY_VERSION = "2.60.0"
IMAGE = f"rayproject/ray:{RAY_VERSION}-py311-gpu"
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _pyproject_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


# ---------------------------------------------------------------- Ray cluster launcher (cluster/aws-gpu.yaml)


@pytest.fixture(scope="module")
def launcher() -> dict:
    return _load("aws-gpu.yaml")


def _prepared(config: dict) -> dict:
    """Ray 2.60's offline part of `ray up`: merge the provider's defaults, then the schema and semantic checks.

    `prepare_config` reads ray/autoscaler/aws/defaults.yaml and contacts nothing; `validate_config` runs
    ray-schema.json (jsonschema) and the head-type / min-max checks. What `ray up` does next (the AWS provider's
    bootstrap: IAM role, key pair, security group, AMI) needs boto3 and credentials, so it is not run here.
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_launcher_config_passes_rays_validation(launcher):
    prepared = _prepared(launcher)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"]
    assert prepared["cluster_name"] == "hmh-gpu"


@pytest.mark.parametrize(
    ("break_it", "error"),
    [
        (lambda c: c["available_node_types"]["gpu"].pop("resources"), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["gpu"]["resources"].update(GPU=0.5), jsonschema.ValidationError),
        (lambda c: c.update(idle_timeout=10), jsonschema.ValidationError),
        (lambda c: c.update(head_node_type="nope"), ValueError),
        (lambda c: c["available_node_types"]["gpu"].update(min_workers=9), ValueError),
    ],
    ids=["no-resources", "fractional-gpu", "unknown-key", "bad-head-type", "min-over-max"],
)
def test_rays_validation_rejects_broken_variants(launcher, break_it, error):
    broken = copy.deepcopy(launcher)
    break_it(broken)
    with pytest.raises(error):
        _prepared(broken)


def test_launcher_head_has_no_gpu_and_gpu_workers_autoscale(launcher):
    types = launcher["available_node_types"]
    head_name = launcher["head_node_type"]
    head = types[head_name]
    assert head["resources"]["GPU"] == 0
    assert head["resources"]["CPU"] >= 1
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))
    assert head["max_workers"] == 0

    gpu_types = {name: t for name, t in types.items() if name != head_name and t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no worker type declares a GPU resource"
    for name, node_type in gpu_types.items():
        assert node_type["node_config"]["InstanceType"].startswith(("g", "p")), name
        assert node_type["min_workers"] == 0, name
        assert 1 <= node_type["max_workers"] <= launcher["max_workers"], name
    assert launcher["idle_timeout_minutes"] > 0


def test_launcher_installs_the_pinned_stack(launcher):
    assert f"ray[default,tune,train]=={RAY_VERSION}" in _pyproject_dependencies()
    assert launcher["docker"]["image"] == IMAGE
    setup_dir = next(remote for remote, local in launcher["file_mounts"].items() if local == "./cluster")
    prepared = _prepared(launcher)
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert f"bash {setup_dir}/node-setup.sh" in prepared[key], key
    setup = (CLUSTER / "node-setup.sh").read_text()
    assert f'ray.__version__ != "{RAY_VERSION}"' in setup
    assert "sys.version_info[:2] != (3, 11)" in setup
    assert '"$here/node-requirements.txt"' in setup


def test_node_requirements_equal_pyproject_pins():
    lines = (CLUSTER / "node-requirements.txt").read_text().splitlines()
    pins = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert pins == _pyproject_dependencies()


def test_launcher_keeps_token_auth_on(launcher):
    text = (CLUSTER / "aws-gpu.yaml").read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    assert "-e RAY_AUTH_MODE=token" in launcher["docker"]["run_options"]
    assert launcher["file_mounts"]["~/.ray"] == "~/.ray"  # the token file the nodes and cluster/submit share
    starts = [
        cmd
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
        for cmd in launcher[key]
        if "ray start" in cmd
    ]
    assert len(starts) == 2
    for cmd in starts:
        assert "RAY_AUTH_MODE=token ray start" in cmd
    head_start = next(cmd for cmd in starts if "--head" in cmd)
    # Other nodes reach the dashboard's State API (Ray Train's placement-group cleanup); 127.0.0.1 would break that.
    assert "--dashboard-host=0.0.0.0" in head_start
    assert "security_group" not in launcher["provider"]  # Ray's default group: SSH from outside, all within


def test_launcher_commands_and_scripts_are_valid_bash(launcher):
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    for key in keys:
        for cmd in launcher[key]:
            result = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            assert result.returncode == 0, f"{key}: {cmd!r}: {result.stderr}"
    for script in (CLUSTER / "node-setup.sh", SUBMIT):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


# ---------------------------------------------------------------- KubeRay


def _kuberay_cluster_specs() -> list[tuple[str, dict, dict]]:
    raycluster = _load("kuberay-raycluster.yaml")
    rayjob = _load("kuberay-rayjob.yaml")
    return [("RayCluster", raycluster, raycluster["spec"]), ("RayJob", rayjob, rayjob["spec"]["rayClusterSpec"])]


@pytest.mark.parametrize(("kind", "obj", "spec"), _kuberay_cluster_specs(), ids=["RayCluster", "RayJob"])
def test_kuberay_cluster_spec(kind, obj, spec):
    assert obj["apiVersion"] == "ray.io/v1"
    assert obj["kind"] == kind
    assert obj["metadata"]["name"]
    assert obj["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    assert spec["rayVersion"] == RAY_VERSION
    assert spec["authOptions"] == {"mode": "token", "secretName": "hmh-ray-auth"}

    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    head_resources = head_container["resources"]
    assert "nvidia.com/gpu" not in head_resources.get("limits", {})
    assert "nvidia.com/gpu" not in head_resources.get("requests", {})
    assert any(port["containerPort"] == 8265 for port in head_container["ports"])
    # Trial drivers are pinned to the head (tune.search): it must offer CPUs to Ray.
    assert head["rayStartParams"].get("num-cpus", "1") != "0" and float(head_resources["limits"]["cpu"]) >= 1

    groups = spec["workerGroupSpecs"]
    assert groups
    pods = [head["template"]["spec"]]
    for group in groups:
        assert group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert "rayStartParams" in group
        assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        pods.append(group["template"]["spec"])

    for pod in pods:
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        container = pod["containers"][0]
        assert container["image"] == IMAGE
        assert "node-setup.sh && $KUBERAY_GEN_RAY_START_CMD" in container["args"][0]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert volumes[mounts["/mnt/shared"]]["persistentVolumeClaim"]["claimName"] == "hmh-shared"
        assert volumes[mounts["/opt/hmh"]]["configMap"]["name"] == "hmh-node-setup"
        env = {item["name"]: item.get("value") for item in container.get("env", [])}
        assert env["HMH_CACHE_DIR"].startswith("/mnt/shared/")
        assert "RAY_AUTH_MODE" not in env  # set to "token" by KubeRay from authOptions


def test_rayjob_runs_the_search_and_cleans_up():
    rayjob = _load("kuberay-rayjob.yaml")
    spec = rayjob["spec"]
    words = shlex.split(spec["entrypoint"])
    assert words[:5] == ["python", "-m", "tune.search", "--config", "tune/configs/blurhand.yaml"]
    assert words[words.index("--address") + 1] == "auto"
    assert "search.storage_path=/mnt/shared/results" in words
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"].startswith(("https://", "s3://", "gs://"))
    assert runtime_env["working_dir"].endswith(".zip")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"] == _load("kuberay-raycluster.yaml")["spec"]


# ---------------------------------------------------------------- the recipes: what they submit fits their nodes

# Where a copy-paste command sends the GPU search (tune/configs/blurhand.yaml) to a cluster.
RECIPE_DOCS = (ROOT / "README.md", ROOT / "docs" / "cluster.md", CLUSTER / "README.md", SUBMIT,
               CLUSTER / "aws-gpu.yaml", CLUSTER / "kuberay-raycluster.yaml")
RECIPE_CONFIG = "tune/configs/blurhand.yaml"
RECIPE_CLUSTERS = ("cluster/aws-gpu.yaml", "cluster/kuberay-raycluster.yaml", "cluster/kuberay-rayjob.yaml")
# Every node mounts the shared file system at /mnt/shared: the data, the MANO models and the results live there.
SHARED_KEYS = {"data.root": "/mnt/shared/data/BlurHand", "model.mano_path": "/mnt/shared/mano",
               "search.storage_path": "/mnt/shared/results"}


def _search_commands(path: Path) -> list[list[str]]:
    """The words of each ``cluster/submit`` command in ``path`` (Markdown, a script's help, or a YAML file's comments)
    that names ``--config``: continuation lines joined, inline code ended at its closing backtick."""
    lines = path.read_text().splitlines()
    if path.suffix == ".yaml":
        lines = [line.lstrip()[1:] for line in lines if line.lstrip().startswith("#")]
    commands = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        start = line.find("cluster/submit ")
        if start >= 0 and "--config" in line[start:].split("`")[0]:
            commands.append(shlex.split(line[start:].split("`")[0], comments=True))
    return commands


def _settings(words: list[str]) -> dict[str, str]:
    """The ``--set KEY=VALUE`` pairs of a command."""
    return dict(words[i + 1].split("=", 1) for i, word in enumerate(words[:-1]) if word == "--set")


def _recipe_commands() -> list[tuple[str, list[str]]]:
    """``(where, words)`` of every command that sends the GPU search to a cluster, the RayJob's entrypoint included."""
    found = [(f"{path.relative_to(ROOT)}: {' '.join(words)}", words) for path in RECIPE_DOCS
             for words in _search_commands(path) if words[words.index("--config") + 1] == RECIPE_CONFIG]
    entrypoint = _load("kuberay-rayjob.yaml")["spec"]["entrypoint"]
    return [*found, (f"cluster/kuberay-rayjob.yaml: {entrypoint}", shlex.split(entrypoint))]


def test_every_recipe_command_names_its_cluster_and_the_shared_storage():
    commands = _recipe_commands()
    named = set()
    for where, words in commands:
        settings = _settings(words)
        assert {key: settings.get(key) for key in SHARED_KEYS} == SHARED_KEYS, where
        assert settings.get("search.cluster") in RECIPE_CLUSTERS, where
        assert "search.max_concurrent_trials" not in settings, where  # sized from the cluster's definition
        named.add(settings["search.cluster"])
    assert named == set(RECIPE_CLUSTERS), named  # every recipe has a command to copy


@pytest.mark.parametrize("cluster_file", RECIPE_CLUSTERS)
def test_each_recipes_workers_fit_its_node_shapes(cluster_file):
    """The worker shape is stated once, in what the recipe submits (tune/configs/blurhand.yaml with its --set
    values); its node shapes are in the cluster definition: one worker fits a GPU node, and the cluster holds a
    trial from the head alone (what a search sees at its start) once it has grown."""
    from hmh.config import load_config
    from tune.resources import Cluster, plan_trials, read_cluster, trials_at_once, worker_resources

    (words, *_) = [w for _, w in _recipe_commands() if _settings(w).get("search.cluster") == cluster_file]
    overrides = [f"{k}={v}" for k, v in _settings(words).items() if k not in SHARED_KEYS]  # paths of the cluster
    search = load_config(str(ROOT / RECIPE_CONFIG), overrides).search
    assert search.cluster == cluster_file
    cluster = read_cluster(str(ROOT / cluster_file))
    worker = worker_resources(search)
    gpu_types = [t for t in cluster.types if not t.head and t.resources.get("GPU", 0) >= 1]
    assert gpu_types and all(worker[k] <= t.resources[k] for t in gpu_types for k in worker), (worker, gpu_types)
    head_only = Cluster("the head", tuple(t for t in cluster.types if t.head), 0)
    plan = plan_trials(search, head_only, cluster)
    assert plan.now == 0 and plan.largest == trials_at_once(cluster, search) >= 1
    assert plan.limit == min(plan.largest, search.num_samples)


def test_kuberay_shared_volume_is_read_write_many():
    claim = _load("kuberay-shared.yaml")
    assert (claim["kind"], claim["metadata"]["name"]) == ("PersistentVolumeClaim", "hmh-shared")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"]


# ---------------------------------------------------------------- runtime env


def test_runtime_env_ships_the_code_without_data_results_or_venv(tmp_path):
    from ray._private.runtime_env.packaging import _zip_files

    runtime_env = _load("runtime_env.yaml")
    assert runtime_env["working_dir"] == "."
    assert not {"pip", "conda", "uv"} & set(runtime_env)  # nodes bring the dependencies
    assert all(isinstance(value, str) for value in runtime_env["env_vars"].values())

    tree = tmp_path / "repo"
    shipped = [
        "hmh/data/blurhand.py",
        "tune/configs/blurhand.yaml",
        "cluster/submit",
        "pyproject.toml",
        "results/reference/table.md",
    ]
    left_out = [
        ".venv/bin/python",
        ".git/HEAD",
        "data/BlurHand/img.jpg",
        "results/demo/trials.parquet",
        "runs/default/ckpt.pt",
        "hmh/__pycache__/x.cpython-311.pyc",
        "hmh.egg-info/PKG-INFO",
        ".pytest_cache/v/x",
        "build/lib/x.py",
    ]
    for rel in shipped + left_out:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    archive = tmp_path / "package.zip"
    _zip_files(str(tree), runtime_env["excludes"], str(archive), include_gitignore=False)
    names = set(zipfile.ZipFile(archive).namelist())
    assert names == set(shipped)


# ---------------------------------------------------------------- cluster/submit


def _submit(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(SUBMIT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def clean_env(tmp_path) -> dict[str, str]:
    """The caller's environment without Ray address or auth variables, with an empty HOME."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_ENV + ("HMH_CLUSTER_PYTHON", "HMH_RAY")}
    home = tmp_path / "home"
    home.mkdir()
    env["HOME"] = str(home)
    return env


def test_submit_help(clean_env):
    result = _submit("--help", env=clean_env)
    assert result.returncode == 0
    for word in ("--dry-run", "--no-wait", "--address", "--runtime-env", "RAY_AUTH_TOKEN_PATH", "tune.search"):
        assert word in result.stdout


def test_submit_dry_run_prints_the_exact_command(clean_env, tmp_path):
    token = tmp_path / "token"
    token.write_text("not-a-real-token")
    env = dict(clean_env, RAY_AUTH_TOKEN_PATH=str(token))
    result = _submit(
        "--dry-run",
        "--no-wait",
        "--submission-id",
        "s1",
        "--",
        "--config",
        "hmh/config/presets/cpu.yaml",
        "--space",
        str(ROOT / "hmh/config/presets/paper.yaml"),
        "--set",
        f"search.cluster={CLUSTER / 'aws-gpu.yaml'}",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    words = shlex.split(result.stdout)
    assert words[:2] == ["RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={token}"]
    assert words[2] == str(RAY) and words[3:5] == ["job", "submit"]
    sep = words.index("--")
    options = words[5:sep]
    assert options[options.index("--address") + 1] == "http://127.0.0.1:8265"
    assert options[options.index("--runtime-env") + 1] == str(CLUSTER / "runtime_env.yaml")
    assert options[options.index("--working-dir") + 1] == str(ROOT)
    assert options[options.index("--submission-id") + 1] == "s1"
    assert "--no-wait" in options
    assert words[sep + 1 :] == [
        "python",
        "-m",
        "tune.search",
        "--config",
        "hmh/config/presets/cpu.yaml",
        "--space",
        "hmh/config/presets/paper.yaml",
        "--set",
        "search.cluster=cluster/aws-gpu.yaml",  # read by the job in its working directory
        "--address",
        "auto",
    ]
    assert "not-a-real-token" not in result.stdout + result.stderr


def test_submit_dry_run_address_interpreter_and_token_sources(clean_env):
    env = dict(clean_env, RAY_ADDRESS="http://10.1.2.3:8265", RAY_AUTH_TOKEN="secret-token-value")
    result = _submit("--dry-run", "--python", "/opt/py/bin/python", "--config", "cpu", env=env)
    assert result.returncode == 0, result.stderr
    assert "secret-token-value" not in result.stdout + result.stderr
    words = shlex.split(result.stdout)
    assert words[0] == "RAY_AUTH_MODE=token" and not words[1].startswith("RAY_AUTH_TOKEN")
    assert words[words.index("--address") + 1] == "http://10.1.2.3:8265"
    assert words[words.index("--") + 1 :] == [
        "/opt/py/bin/python",
        "-m",
        "tune.search",
        "--config",
        "cpu",
        "--address",
        "auto",
    ]

    home_token = Path(clean_env["HOME"]) / ".ray" / "auth_token"
    home_token.parent.mkdir()
    home_token.write_text("t")
    result = _submit(
        "--dry-run",
        "--address",
        "http://head:8265",
        "--",
        "--address",
        "10.0.0.1:6379",
        "--config",
        "cpu",
        env=clean_env,
    )
    assert result.returncode == 0, result.stderr
    words = shlex.split(result.stdout)
    assert words[1] == f"RAY_AUTH_TOKEN_PATH={home_token}"
    sep = words.index("--")
    assert words[words.index("--address") + 1] == "http://head:8265"
    assert words[sep + 1 :] == ["python", "-m", "tune.search", "--address", "10.0.0.1:6379", "--config", "cpu"]


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        (["--config", "cpu"], {}, "no Ray auth token"),
        (["--config", "cpu"], {"RAY_AUTH_TOKEN_PATH": "/nonexistent/token"}, "not a readable, non-empty token"),
        (["--config", "/etc/hostname"], {"RAY_AUTH_TOKEN": "t"}, "outside the working directory"),
        (["--config", "tune/configs/no-such.yaml"], {"RAY_AUTH_TOKEN": "t"}, "no such file"),
        (["--address"], {"RAY_AUTH_TOKEN": "t"}, "needs a value"),
        (["--runtime-env", "/nonexistent.yaml", "--config", "cpu"], {"RAY_AUTH_TOKEN": "t"}, "not found"),
        (["--config", "cpu", "--set", "search.cluster=cluster/no-such.yaml"], {"RAY_AUTH_TOKEN": "t"},
         "--set search.cluster=cluster/no-such.yaml: no such file in the working directory"),
        (["--config", "cpu", "--set", "search.cluster=/etc/cluster.yaml"], {"RAY_AUTH_TOKEN": "t"},
         "outside the working directory"),
        (["--config", "cpu", "--set", "search.cluster=aws"], {"RAY_AUTH_TOKEN": "t"},
         "--set search.cluster=aws: expected a cluster definition file"),
    ],
    ids=["no-token", "bad-token-path", "config-outside-repo", "missing-config", "address-no-value", "no-runtime-env",
         "missing-cluster-file", "cluster-outside-repo", "cluster-not-a-file"],
)
def test_submit_refuses_clearly(clean_env, args, extra_env, message):
    result = _submit("--dry-run", *args, env=dict(clean_env, **extra_env))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def _kill_leftovers(marker: str) -> None:
    """SIGKILL any process this test started that outlived its `ray start --block` (found by the unique temp dir)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.ray
def test_submit_sends_a_job_to_a_token_auth_ray_head(clean_env):
    """A real `ray job submit` through cluster/submit to a local head with token auth on.

    The entrypoint's interpreter is replaced by `true` (`true -m tune.search ...` exits 0), so this checks the
    transport (auth token, runtime env, working-dir upload and its excludes), not the search.
    """
    workdir = tempfile.mkdtemp(prefix="hmhsub", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    token = Path(workdir) / "token"
    token.write_text("hmh-test-" + os.urandom(16).hex())
    gcs, dashboard, agent, client = free_ports(4)
    env = dict(clean_env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
    address = f"http://127.0.0.1:{dashboard}"
    head = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--block",
            "--num-cpus=1",
            f"--port={gcs}",
            f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={agent}",
            f"--ray-client-server-port={client}",
            "--dashboard-host=127.0.0.1",
            f"--temp-dir={workdir}/ray",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert head.poll() is None, "ray start --head exited"
            probe = subprocess.run(
                [str(RAY), "job", "list", "--address", address], env=env, capture_output=True, text=True, timeout=60
            )
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, f"the head did not come up: {probe.stderr[-2000:]}"
            time.sleep(2)

        wrong = Path(workdir) / "wrong-token"
        wrong.write_text("not-the-cluster-token")
        refused = _submit(
            "--address",
            address,
            "--python",
            "true",
            "--config",
            "cpu",
            env=dict(clean_env, RAY_AUTH_TOKEN_PATH=str(wrong)),
            timeout=120,
        )
        assert refused.returncode != 0
        assert "Invalid authentication token" in refused.stdout + refused.stderr

        ok = _submit(
            "--address",
            address,
            "--python",
            "true",
            "--submission-id",
            "hmh-submit-test",
            "--config",
            "cpu",
            env=dict(clean_env, RAY_AUTH_TOKEN_PATH=str(token)),
            timeout=180,
        )
        assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
        assert "Job 'hmh-submit-test' succeeded" in ok.stdout + ok.stderr

        unpacked = Path(workdir, "ray", "session_latest", "runtime_resources", "working_dir_files")
        packages = [p for p in unpacked.iterdir() if p.is_dir()]
        assert len(packages) == 1
        shipped = {p.name for p in packages[0].iterdir()}
        assert {"cluster", "hmh", "tune", "pyproject.toml"} <= shipped
        assert not {".venv", ".git", "data", "runs"} & shipped
    finally:
        head.terminate()  # `ray start --block` stops the processes it started, then exits
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        _kill_leftovers(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
