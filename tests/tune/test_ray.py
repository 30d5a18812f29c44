"""Ray Train + Tune end to end on one session-scoped local Ray cluster (2 CPUs), on a tiny config.

- a 2-trial search completes with one trial stopped early by ASHA (and writes its result files);
- search.scheduler=brief_then_finish trains both trials briefly and finishes the better one from its checkpoint;
- the two-objective demo (tune/configs/demo_pareto.yaml) writes a non-dominated Pareto front of MPJPE and ms per
  image and retrains the point search.pick chose;
- a Train stage resumes from its checkpoint after one of its DDP workers is killed;
- ``hmh train`` and a Ray Train worker run a stage on one engine: the same metric keys and checkpoint contents;
- an interrupted search (SIGINT) resumes with ``--resume`` without rerunning the finished trial, then retrains the
  best configuration;
- a second local Ray instance is refused (two confuse Ray Train's cleanup and hang trials);
- the local Ray's workers run at the driver's priority, not Ray's niceness 15;
- no placement group outlives its Train run's controller: the driver removes those that Ray Train's own cleaner
  left behind or never saw, and those a controller asked for as its trial died, whose record never says so;
- the console: a failing worker's traceback reaches it; Ray Train's per-report lines and Tune's per-trial boxes do
  not, Tune's trial table does (tune.console);
- the search-efficiency benchmark replays its arms through Tuner + OptunaSearch + ASHA over a table;
- the reproduction study runs its arms (the no-MSF one on its partner's generator), writes its tables, and a second
  run finds every arm finished.

(Invalid configs and spaces are rejected before Ray starts: tests/tune/test_search_space.py.)
"""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from hmh.results.tables import FINAL_SCHEMA, ExperimentPaths, read_table, write_table

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")]

REPO = Path(__file__).resolve().parents[2]
TINY = """\
base: {demo}
model: {{image_size: 64, embed_dim: 16, num_heads: 2, mht_blocks: 1, num_hypotheses: 2}}
selection: {{top_n: 1, decoder_blocks: 1}}
data: {{synthetic_train: 64, synthetic_test: 16, synthetic_size: 64, synthetic_subframes: 3, val_fraction: 0.25,
        max_train_samples: 32, max_eval_samples: 8}}
train: {{generation_epochs: 2, selection_epochs: 1, batch_size: 8, eval_batch_size: 8}}
search: {{experiment: tiny, num_samples: 2, grace_period: 1, reduction_factor: 2, num_workers: 1,
          cpus_per_worker: 1.0, max_failures: 1, final_retrain: false, final_generation_epochs: 1,
          final_selection_epochs: 1, final_max_train_samples: 16, storage_path: {storage}}}
"""
# demo.yaml's model on a fraction of its data (64 training images an epoch, the final retrain's too): an epoch takes
# seconds; starting each trial's Ray Train runs takes most of the test's 2.5-4.5 min
SMALL_DATA = ["data.synthetic_train=240", "data.synthetic_test=64", "data.synthetic_size=96", "data.val_fraction=0.2",
              "data.max_train_samples=64", "data.max_eval_samples=32", "search.final_max_train_samples=64"]
# one worker per trial instead of demo.yaml's two (DDP): two trials at once on a 2-core machine
ONE_WORKER = ["search.num_workers=1", "search.cpus_per_worker=0.99"]
# Trial 1 learns (lr 1e-3: the validation MPJPE drops ~15 mm in its first epoch on this config); trial 2 barely
# moves (lr 1e-9), so ASHA's first rung must stop it.
ORDERED_SPACE = """\
parameters:
  optim.lr: {type: loguniform, low: 1.0e-9, high: 1.0e-2}
initial_points:
  - {optim.lr: 1.0e-3}
  - {optim.lr: 1.0e-9}
"""
SMALL_SPACE = """\
parameters:
  model.num_hypotheses: {type: categorical, values: [2, 3]}
  selection.top_n: {type: int, low: 1, high: model.num_hypotheses}
  optim.lr: {type: loguniform, low: 3.0e-4, high: 1.0e-3}
"""


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for every test here: 2 CPUs, dashboard on (Train's cleanup needs it), token auth on."""
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"
    import ray

    from tune.resources import init_ray

    assert not ray.is_initialized()
    init_ray(None)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_experiment(tmp_path: Path, space: str) -> tuple[Path, Path]:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(demo=REPO / "tune" / "configs" / "demo.yaml", storage=tmp_path / "results"))
    space_path = tmp_path / "space.yaml"
    space_path.write_text(space)
    return config, space_path


def test_two_trial_search_stops_one_trial_early(ray_address, tmp_path: Path, capfd) -> None:
    import optuna
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tune.search import load_experiment, run_search

    config, space = write_experiment(tmp_path, ORDERED_SPACE)
    exp = load_experiment(str(config), [], str(space))
    assert run_search(exp) == 0
    trials = pd.read_parquet(exp.paths.trials).sort_values("trial_index").reset_index(drop=True)
    assert list(trials["status"]) == ["TERMINATED", "TERMINATED"]
    assert list(trials["config/optim.lr"]) == [1e-3, 1e-9]
    assert list(trials["stopped_early"]) == [False, True], trials[["objective", "epochs_done"]]
    assert list(trials["epochs_done"]) == [3, 1] and list(trials["epochs_total"]) == [3, 3]
    assert list(trials["objective_source"]) == ["final", "mean_of_k"]
    assert trials["val/best_of_k/mpjpe_current"].notna().all()
    assert trials.loc[0, "objective"] == trials.loc[0, "val/final/mpjpe_current"]
    assert Path(trials.loc[0, "checkpoint_path"], "checkpoint.pt").is_file()

    iterations = pd.read_parquet(exp.paths.iterations)
    first = iterations[iterations["trial_id"] == trials.loc[0, "trial_id"]]
    assert list(first["trial_epoch"]) == [1, 2, 3]
    assert list(first["stage"]) == ["generation", "generation", "selection"]
    assert first["objective"].notna().all() and first["train/loss/total"].notna().all()
    console = capfd.readouterr()
    printed = console.out
    assert "BlurHand train (" not in console.out + console.err  # the workers' dataset lines (tune.console)
    url = next(line.split()[2] for line in printed.splitlines() if line.strip().startswith("optuna "))
    study = optuna.load_study(study_name="tiny", storage=url)  # the printed optuna-dashboard command's study
    done, stopped = sorted(study.trials, key=lambda t: -t.params["optim.lr"])
    assert (done.params["optim.lr"], stopped.params["optim.lr"]) == (1e-3, 1e-9)
    # Optuna learns the trial ASHA stopped as PRUNED with its epoch-1 value, the other as COMPLETE (tune.searcher)
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == trials.loc[0, "objective"]
    assert done.intermediate_values[3] == done.value and set(done.intermediate_values) <= {1, 2, 3}
    assert stopped.state == optuna.trial.TrialState.PRUNED
    assert stopped.intermediate_values == {1: trials.loc[1, "objective"]}
    logdir = next(line.split()[3] for line in printed.splitlines() if line.strip().startswith("tensorboard "))
    tensorboard = Path(logdir)  # the printed `tensorboard --logdir` folder
    for trial_id in trials["trial_id"]:
        events = EventAccumulator(str(tensorboard / trial_id), size_guidance={"images": 0})
        events.Reload()
        assert "generation/val/mean_of_k/mpjpe_current" in events.Tags()["scalars"], trial_id
        assert "generation/hypotheses" in events.Tags()["images"], trial_id
    summary = exp.paths.summary.read_text()
    assert "2 (1 completed, 1 stopped early, 0 errored)" in summary
    assert (exp.paths.plots / "objective_vs_trial.png").is_file()
    assert not exp.paths.final.exists()  # search.final_retrain is off in this test
    assert _placement_groups_left() == []  # the stopped trial's Train workers were released


def test_brief_then_finish_finishes_the_better_trial_from_its_checkpoint(ray_address, tmp_path: Path,
                                                                         capfd) -> None:
    """search.scheduler=brief_then_finish, one round of both trials: each trains 1 epoch, then the one that learns
    is finished by a third Tune trial that resumes its Train run; Optuna holds one trial per configuration."""
    import optuna

    from hmh.results.search_summary import summarize
    from tune.search import load_experiment, run_search

    config, space = write_experiment(tmp_path, ORDERED_SPACE)
    exp = load_experiment(str(config), ["search.scheduler=brief_then_finish", "search.round_trials=2"], str(space))
    assert run_search(exp) == 0
    trials = pd.read_parquet(exp.paths.trials).sort_values("trial_index").reset_index(drop=True)
    assert list(trials["config/optim.lr"]) == [1e-3, 1e-9, 1e-3]
    assert list(trials["epochs_done"]) == [1, 1, 3] and list(trials["stopped_early"]) == [True, True, False]
    continues = read_table(exp.paths.trials)[1]["continues"]
    assert continues == {trials.loc[2, "trial_id"]: trials.loc[0, "trial_id"]}
    iterations = pd.read_parquet(exp.paths.iterations)
    finishing = iterations[iterations["trial_id"] == trials.loc[2, "trial_id"]]
    assert 1 not in set(finishing["trial_epoch"]) and finishing["trial_epoch"].max() == 3  # resumed, not rerun
    study = optuna.load_study(study_name="tiny", storage=exp.paths.optuna_url)
    finished, stopped = sorted(study.trials, key=lambda t: -t.params["optim.lr"])
    assert finished.state == optuna.trial.TrialState.COMPLETE and finished.value == trials.loc[2, "objective"]
    assert finished.intermediate_values[1] == trials.loc[0, "objective"] and max(finished.intermediate_values) == 3
    assert stopped.state == optuna.trial.TrialState.PRUNED
    assert stopped.intermediate_values == {1: trials.loc[1, "objective"]}
    out = capfd.readouterr().out
    assert f"round 1/1: finishing {trials.loc[0, 'trial_id']} " in out
    assert "3 (1 completed, 2 stopped early, 1 of them finished by a later trial, 0 errored)" in summarize(
        exp.paths.root)
    assert _placement_groups_left() == []


def _placement_groups_left() -> list[dict]:
    from ray.util.placement_group import placement_group_table

    return [g for g in placement_group_table().values() if g["state"] != "REMOVED"]


def test_placement_groups_that_dead_controllers_left_behind_are_removed(ray_address) -> None:
    """As Train controllers killed with their trial leave them: made by an actor that has died, ready (workers
    started) or pending (workers starting). The driver's own groups and those of live actors stay until the end."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from tune.placement import ReleasePlacementGroups, describe_groups, job_groups

    @ray.remote(num_cpus=0)
    class Controller:
        def reserve(self, cpus: float) -> str:
            return placement_group([{"CPU": cpus}]).id.hex()

    own = placement_group([{"CPU": 0.5}])  # made by the driver, as Tune's trial bundles are
    ray.get(own.ready(), timeout=60)
    lines: list[str] = []
    callback = ReleasePlacementGroups(grace_s=1.0, echo=lines.append)
    callback.setup()
    alive, killed = Controller.remote(), Controller.remote()
    kept = ray.get(alive.reserve.remote(0.5))
    started = ray.get(killed.reserve.remote(0.5))
    starting = ray.get(killed.reserve.remote(1.5))  # 2 CPUs: pending while the others hold theirs
    ray.kill(killed)
    deadline = time.monotonic() + 30
    while not (job_groups()[started].orphaned and job_groups()[starting].orphaned):
        assert time.monotonic() < deadline, job_groups()
        time.sleep(0.2)
    callback.on_step_begin(0, [])  # first seen orphaned: Ray's own cleaner gets grace_s
    assert {started, starting} <= set(job_groups()) and lines == []
    described, job = describe_groups(), job_groups()[kept].job  # what a failed Ray test reports (tests/conftest.py)
    assert described[0] == f"placement group {starting[:12]} PENDING  job {job} dead actor {{CPU 1.5}}"  # first
    assert f"placement group {kept[:12]} CREATED  job {job} live actor {{CPU 0.5}}" in described
    assert f"placement group {own.id.hex()[:12]} CREATED  job {job} driver     {{CPU 0.5}}" in described
    time.sleep(2.5)  # grace_s, and the Tune loop's pause between checks
    callback.on_step_begin(1, [])
    assert set(job_groups()) == {own.id.hex(), kept}
    assert sorted(lines) == sorted(f"removed placement group {g}: its Train run's controller ended without removing "
                                   "it" for g in (started, starting))

    # At the end of an experiment, what an actor made during it goes once grace_s has passed, its creator alive or not.
    start = time.monotonic()
    callback.on_experiment_end([])
    assert 1.0 <= time.monotonic() - start < 10 and set(job_groups()) == {own.id.hex()}
    assert lines[-1] == f"removed placement group {kept}: a Train run of this experiment left it behind"
    remove_placement_group(own)
    ray.kill(alive)


def test_groups_a_controller_asked_for_as_its_trial_died_are_removed(ray_address) -> None:
    """A Train controller dies with the trial that owns it; a group it asked for in its last moment can be made by
    the GCS with a record that never says its creator died. The actor table does, so those go too."""
    import ray
    from ray.util.placement_group import placement_group

    from tune.placement import ReleasePlacementGroups, job_groups

    @ray.remote(num_cpus=0)
    class Controller:  # asks for groups until it dies, as a controller restarting its worker group does
        def reserve(self) -> None:
            while True:
                placement_group([{"CPU": 0.001}])
                time.sleep(0.005)

    @ray.remote(num_cpus=0)
    class Trial:
        def start(self) -> None:
            self.controller = Controller.remote()
            self.controller.reserve.remote()

    before = set(job_groups())
    for _ in range(3):
        trial = Trial.remote()
        ray.get(trial.start.remote(), timeout=60)
        time.sleep(1.0)
        ray.kill(trial)  # its controller dies with it (owner fate-sharing)
    made = {g: group for g, group in job_groups().items() if g not in before}
    deadline = time.monotonic() + 30  # the GCS learns of each death in its own time
    while not all(group.orphaned for group in made.values()):
        assert time.monotonic() < deadline, [g for g, group in made.items() if not group.orphaned]
        time.sleep(0.5)
        made = {g: group for g, group in job_groups().items() if g not in before}
    assert made and all(group.made_by_actor for group in made.values())

    callback = ReleasePlacementGroups(grace_s=0.0, echo=lambda line: None)
    callback.setup()
    callback.on_step_begin(0, [])
    assert not set(job_groups()) & set(made)


def test_two_objective_demo_search_writes_a_non_dominated_front(ray_address, tmp_path: Path, capfd) -> None:
    from hmh.results.pareto import dominates
    from hmh.results.tables import COST_KEYS, COST_OBJECTIVE
    from tune.search import load_experiment, run_search

    exp = load_experiment(str(REPO / "tune" / "configs" / "demo_pareto.yaml"),
                          [f"search.storage_path={tmp_path / 'results'}", "search.final_generation_epochs=1",
                           "search.final_selection_epochs=1", *SMALL_DATA, *ONE_WORKER])
    assert run_search(exp) == 0
    trials = pd.read_parquet(exp.paths.trials)
    assert len(trials) == 4 and set(trials["status"]) == {"TERMINATED"}
    # no ASHA: every trial its full budget, 3 epochs, or 2 where top_n = K skips the selection stage
    assert not trials["stopped_early"].any() and (trials["epochs_done"] == trials["epochs_total"]).all()
    skips = trials["config/selection.top_n"] == trials["config/model.num_hypotheses"]
    assert (trials["epochs_total"] == skips.map({True: 2, False: 3})).all()
    assert (trials[list(COST_KEYS)] > 0).all().all(), trials[list(COST_KEYS)]
    assert set(trials["config/model.num_hypotheses"]) >= {2, 8}  # the space's initial points

    front = pd.read_parquet(exp.paths.pareto)
    assert list(front.columns) == ["trial_id", "trial_index", "k", "top_n", "mpjpe", "ms", "ms_batch8", "picked"]
    assert len(front) >= 1 and front[["k", "top_n", "mpjpe", "ms", "ms_batch8"]].notna().all().all()
    points = list(zip(front["mpjpe"], front["ms"], strict=True))
    assert not any(dominates(a, b) for a in points for b in points)  # non-dominated among themselves
    by_id = trials.set_index("trial_id")
    for _, point in front.iterrows():  # each point is its trial's K, top-n, objective and cost
        t = by_id.loc[point["trial_id"]]
        assert (point["k"], point["top_n"]) == (t["config/model.num_hypotheses"], t["config/selection.top_n"])
        assert (point["mpjpe"], point["ms"]) == (t["objective"], t[COST_OBJECTIVE])
    for trial_id, t in by_id.iterrows():  # and every other completed trial is dominated by one of them
        mine = (t["objective"], t[COST_OBJECTIVE])
        assert trial_id in set(front["trial_id"]) or any(dominates(q, mine) for q in points), trial_id
    picked = front[front["picked"]]
    assert len(picked) == 1 and picked["mpjpe"].iloc[0] == front["mpjpe"].min()  # search.pick: min_mpjpe
    _, final_meta = read_table(exp.paths.final, FINAL_SCHEMA)
    assert final_meta["best_trial_id"] == picked["trial_id"].iloc[0] and final_meta["pick"] == "min_mpjpe"

    import optuna

    study = optuna.load_study(study_name="demo_pareto", storage=exp.paths.optuna_url)
    assert len(study.directions) == 2 and all(len(t.values) == 2 for t in study.trials)
    summary = exp.paths.summary.read_text()
    assert f"## Pareto front: {len(front)} of 4 completed trials" in summary
    assert f"## Picked configuration: trial {picked['trial_id'].iloc[0]}" in summary
    assert (exp.paths.plots / "pareto.png").is_file()
    assert "ms per image" in capfd.readouterr().out


def _kill_a_worker_after_first_checkpoint(run_dir: Path, killed: list[int], deadline: float) -> None:
    from ray.util.state import list_actors

    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while time.time() < deadline:
        if snapshot.is_file() and "generation-epoch001" in snapshot.read_text(errors="replace"):
            workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            if workers:
                pid = int(workers[-1]["pid"])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.1)


def test_stage_resumes_from_its_checkpoint_after_a_worker_is_killed(ray_address, tmp_path: Path) -> None:
    from hmh.config import load_config
    from hmh.models.checkpoint import load_checkpoint
    from tune.train import prepare_config, run_stage

    config, _ = write_experiment(tmp_path, ORDERED_SPACE)
    cfg = prepare_config(load_config(config, ["train.generation_epochs=4", "search.num_workers=2",
                                              "search.cpus_per_worker=0.99"]), progress=False)
    paths = ExperimentPaths.for_config(cfg.search.storage_path, cfg.search.experiment)
    run_dir = Path(paths.train_storage, "killed-generation")
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint,
                              args=(run_dir, killed, time.time() + 240), daemon=True)
    killer.start()
    result = run_stage(cfg, "generation", paths, "killed")
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    last = load_checkpoint(run_dir / "generation-epoch004" / "checkpoint.pt")
    assert last["epoch"] == 4
    assert last["metrics"]["restored_epoch"] >= 1  # the restarted group resumed from a checkpoint, not epoch 0
    assert json.loads((run_dir / "hmh_stage.json").read_text())["checkpoint"] == result.checkpoint


def test_hmh_train_and_a_ray_train_worker_run_a_stage_alike(ray_address, tmp_path: Path) -> None:
    """One engine (hmh.train.engine.run_stage), two callbacks: a generation stage through hmh train and through
    Ray Train
    reports the same metric keys and writes checkpoints of the same contents."""
    import torch

    from hmh.config import load_config
    from hmh.models.checkpoint import load_checkpoint
    from hmh.train.runner import run_training
    from tune.train import prepare_config, run_stage

    config, _ = write_experiment(tmp_path, ORDERED_SPACE)
    cfg = prepare_config(load_config(config, ["train.generation_epochs=1", "train.selection_epochs=0"]),
                         progress=False)
    paths = ExperimentPaths.for_config(cfg.search.storage_path, cfg.search.experiment)
    on_ray = run_stage(cfg, "generation", paths, "alike")
    local = run_training(cfg, tmp_path / "local", echo=lambda line: None, progress=False)
    assert set(on_ray.metrics) == set(local.history["generation"][0])
    assert on_ray.metrics["trial_epoch"] == local.history["generation"][0]["trial_epoch"] == 1
    ray_ckpt = load_checkpoint(Path(on_ray.checkpoint) / "checkpoint.pt")
    local_ckpt = load_checkpoint(tmp_path / "local" / "checkpoints" / "generation_best.pt")
    assert set(ray_ckpt) == set(local_ckpt)
    assert set(ray_ckpt["metrics"]) == set(local_ckpt["metrics"])
    assert (ray_ckpt["stage"], ray_ckpt["epoch"]) == (local_ckpt["stage"], local_ckpt["epoch"]) == ("generation", 1)
    for part in ("model", "optimizer"):
        ours, theirs = ray_ckpt[part], local_ckpt[part]
        assert set(ours) == set(theirs), part
    shapes = [{k: tuple(v.shape) for k, v in c["model"]["generator"].items() if isinstance(v, torch.Tensor)}
              for c in (ray_ckpt, local_ckpt)]
    assert shapes[0] == shapes[1]


def test_a_second_local_ray_instance_is_refused(ray_address, tmp_path: Path) -> None:
    config, space = write_experiment(tmp_path, ORDERED_SPACE)
    proc = subprocess.run([sys.executable, "-m", "tune.search", "--config", str(config), "--space", str(space)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "already running on this machine" in proc.stderr and ray_address in proc.stderr
    assert not (tmp_path / "results" / "tiny" / "experiment.yaml").exists()  # nothing recorded: it can start later


def test_local_ray_workers_run_at_the_drivers_priority(ray_address) -> None:
    """init_ray's local Ray starts its workers at the driver's niceness, not Ray's +15, below which any busy
    process on the machine starves the Train workers (tune.resources.LOCAL_WORKER_NICENESS)."""
    import ray

    @ray.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote(), timeout=120) == os.nice(0)


def test_a_failing_workers_traceback_reaches_the_console(ray_address, tmp_path: Path, capfd) -> None:
    import dataclasses

    from hmh.config import load_config
    from tune.train import prepare_config, run_stage

    config, _ = write_experiment(tmp_path, ORDERED_SPACE)
    cfg = prepare_config(load_config(config, ["train.generation_epochs=1", "search.max_failures=0"]), progress=False)
    missing = tmp_path / "no-such-root"
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(missing)))
    paths = ExperimentPaths.for_config(cfg.search.storage_path, cfg.search.experiment)
    with pytest.raises(Exception):  # noqa: B017 (Ray wraps the worker's error in its own types)
        run_stage(cfg, "generation", paths, "failing")
    time.sleep(2)  # the driver echoes worker output asynchronously (other tests' lines may be in it too)
    printed = capfd.readouterr()
    console = printed.out + printed.err
    assert "Error in training function" in console and "Traceback (most recent call last)" in console


def test_interrupted_search_resumes_without_rerunning_finished_trials(ray_address, tmp_path: Path) -> None:
    from hmh.results.search_summary import summarize
    from tune.search import load_experiment, run_search

    config, space = write_experiment(tmp_path, SMALL_SPACE)
    args = [sys.executable, "-m", "tune.search", "--config", str(config), "--space", str(space),
            "--address", ray_address, "--set", "search.final_retrain=true"]
    paths = ExperimentPaths.for_config(str(tmp_path / "results"), "tiny")
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                if paths.trials.is_file():
                    statuses = pd.read_parquet(paths.trials)["status"]
                    if (statuses == "TERMINATED").any():
                        break
                time.sleep(0.3)
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == 130, (tmp_path / "first.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    before = pd.read_parquet(paths.trials)
    finished = before[before["status"] == "TERMINATED"]
    assert len(finished) == 1 and not paths.final.exists()
    finished_id = finished["trial_id"].iloc[0]
    iterations = pd.read_parquet(paths.iterations)
    finished_epochs = list(iterations[iterations["trial_id"] == finished_id]["trial_epoch"])

    exp = load_experiment(str(config), ["search.final_retrain=true"], str(space), resume=True)
    assert run_search(exp, resume=True) == 0
    after = pd.read_parquet(paths.trials)
    assert len(after) == 2 and set(after["status"]) == {"TERMINATED"}
    again = after[after["trial_id"] == finished_id]
    assert again["time_total_s"].iloc[0] == finished["time_total_s"].iloc[0]  # not rerun
    iterations = pd.read_parquet(paths.iterations)
    assert list(iterations[iterations["trial_id"] == finished_id]["trial_epoch"]) == finished_epochs
    assert_each_trial_told_once(paths, after)
    final = pd.read_parquet(paths.final)
    assert list(final["reduction"]) == ["best_of_k", "final", "label_oracle", "mean_of_k", "random_n", "hyp0"]
    assert final["mpjpe_current"].notna().all() and set(final["split"]) == {"test"}
    assert "Final retrain: test split" in summarize(paths.root)


def assert_each_trial_told_once(paths: ExperimentPaths, trials: pd.DataFrame) -> None:
    """Each Tune trial of ``trials.parquet`` is one finished Optuna trial: PRUNED with its values up to the epoch
    ASHA stopped it at, or COMPLETE with its objective at its last epoch (tune.searcher), whatever --resume did."""
    import optuna

    study = optuna.load_study(study_name=paths.root.name, storage=paths.optuna_url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == len(trials), [(t.state, t.params) for t in study.trials]
    for _, row in trials.iterrows():
        (told,) = [t for t in finished if all(row[f"config/{k}"] == v for k, v in t.params.items())]
        assert max(told.intermediate_values) == row["epochs_done"], (told.intermediate_values, row["epochs_done"])
        if row["stopped_early"]:
            assert told.state == optuna.trial.TrialState.PRUNED
        else:
            assert told.state == optuna.trial.TrialState.COMPLETE and told.value == row["objective"]


def test_reproduction_study_runs_its_arms_and_finds_them_finished(ray_address, tmp_path: Path, capfd) -> None:
    from hmh.config import load_config
    from hmh.results.study import StudyPaths, summarize
    from tune.study import run_study

    config, _ = write_experiment(tmp_path, ORDERED_SPACE)
    cfg = load_config(str(config), ["search.experiment=study"])
    option = {"selector_name": "evidence", "selector_set": ["selection.evidence=both"]}
    assert run_study(cfg, [1, 2], msf_k=2, **option) == 0
    paths = StudyPaths(tmp_path / "results" / "study")
    test = pd.read_parquet(paths.test)
    assert set(test["arm"]) == {"constant", "k1", "k2", "k2-evidence", "k2-no-msf"}
    k2 = test[test["arm"] == "k2"].set_index("reduction")
    assert {"final", "best_of_k", "label_oracle", "mean_of_k", "random_n"} <= set(k2.index)
    assert k2.loc["best_of_k", "mpjpe_current"] <= k2.loc["mean_of_k", "mpjpe_current"]
    k1 = test[test["arm"] == "k1"].set_index("reduction")  # one hypothesis: no selector, its final is that one
    assert set(k1.index) == {"final", "best_of_k", "label_oracle", "mean_of_k", "random_n", "hyp0"}
    assert k1.loc["final", "mpjpe_current"] == k1.loc["mean_of_k", "mpjpe_current"]
    epochs = pd.read_parquet(paths.epochs)
    stages = {arm: list(group["stage"]) for arm, group in epochs.groupby("arm")}
    assert stages == {"k1": ["generation"] * 2, "k2": ["generation", "generation", "selection"],
                      "k2-no-msf": ["selection"], "k2-evidence": ["selection"]}
    for arm in ("k2-no-msf", "k2-evidence"):  # both on k2's generator
        assert not (tmp_path / "results" / "study" / "train" / f"{arm}-generation").exists()
    summary = summarize(paths.root)
    assert paths.summary.read_text() == summary
    for check in ("final (", "selection gain (", "best of K falls as K grows (K = 1, 2)",
                  "MSF final <= w/o MSF at the last epoch (", "k2: final (", "k2-evidence: final ("):
        line = next(x for x in summary.splitlines() if x.startswith("- ") and check in x)
        assert line.startswith(("- PASS: ", "- FAIL: ")), line
    assert (paths.plots / "best_of_k_vs_k.png").is_file() and (paths.plots / "selection_epochs.png").is_file()
    console = capfd.readouterr()
    for noise in ("Reporting training result", "TrainingReport(", "PreemptionWatcher", "Checkpoint successfully",
                  "started with configuration", "Trial result"):
        assert noise not in console.out + console.err, noise  # tune.console keeps Ray's per-report detail out
    assert "[study] k2: generation epoch 1" in console.out
    assert "== Status ==" in console.out and "| arm " in console.out  # Tune's trial table, with its arm column
    assert "| k2-evidence | `selection.evidence=both` |" in summary
    assert run_study(cfg, [1, 2], msf_k=2, **option) == 0
    assert "all finished" in capfd.readouterr().out


def _search_efficiency():
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_efficiency", REPO / "benchmarks" / "search_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(module)  # Ray's workers cannot import it (a script, run as __main__)
    return module


def test_search_efficiency_replays_every_arm_through_tune(ray_address, tmp_path: Path) -> None:
    """The tabular benchmark's replay on a made-up table (an objective that falls with the epochs, lowest at K=8,
    lr 1e-3): every arm's searches go through Tuner + OptunaSearch (+ ASHA) and stop at the trial-epoch budget (ASHA
    fits more trials into it than running every trial in full), and the report (with each epoch's rank agreement
    with the final) and the anytime plot are written. An incomplete table is refused naming the file."""
    bench = _search_efficiency()
    epochs, rows = 3, []
    for config_id, point in enumerate(bench.grid_points()):
        final = 20.0 + 8.0 / point["model.num_hypotheses"] + abs(math.log10(point["optim.lr"]) + 3.0) * 5.0
        for epoch in range(1, epochs + 1):
            rows.append({"config_id": config_id, **point, "trial_epoch": epoch, "objective": final + 10.0 / epoch,
                         "stage": "generation", "seconds": 1.0})
    table = tmp_path / "table.parquet"
    write_table(table, rows[:-1], bench.TABLE_SCHEMA)
    with pytest.raises(SystemExit, match="table.parquet: 48 of 48 configurations, incomplete curves"):
        bench.load_curves(table)
    write_table(table, rows, bench.TABLE_SCHEMA)
    out = tmp_path / "efficiency.md"
    assert bench.main(["replay", "--table", str(table), "--seeds", "2", "--budget", "18", "--out", str(out)]) == 0
    text = out.read_text()
    for arm in bench.ARMS:
        assert f"| {arm.name} |" in text
    assert "| 1 | generation (mean of K) | 1.00 |" in text  # every epoch ranks the configurations as the final
    assert (tmp_path / "efficiency.png").stat().st_size > 0
    random_asha, random_fifo = bench.ARMS[-2:]
    assert random_asha.asha and not random_fifo.asha
    asha = bench.replay(random_asha, 0, 18, bench.load_curves(table)[0], epochs)
    fifo = bench.replay(random_fifo, 0, 18, bench.load_curves(table)[0], epochs)
    assert len(fifo) == len(asha) == 18  # both searches stop at the trial-epoch budget
    assert len({trial for trial, _, _ in fifo}) == 6  # 6 trials run in full
    assert len({trial for trial, _, _ in asha}) > 6  # ASHA stopped some at a rung, and ran more trials
