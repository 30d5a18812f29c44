"""One distributed two-stage training run on Ray Train: ``python -m tune.train --config ... [--set k=v]``.

Each stage is a ``ray.train.torch.TorchTrainer`` over :func:`tune.worker.train_fn_per_worker` with
``search.num_workers`` workers (``search.cpus_per_worker`` / ``search.gpus_per_worker`` each) and
``FailureConfig(max_failures=search.max_failures)``: a crashed worker group restarts from the last checkpoint.
Runs are named deterministically (``<run>-generation``, ``<run>-selection`` under ``results/<experiment>/train``),
so running the same command again resumes an interrupted run; a finished stage is recorded in
``hmh_stage.json`` in its run folder and skipped. Each stage keeps the checkpoint ``hmh train`` would keep
(:func:`hmh.train.engine.keeps_last`: the lowest validation objective, or the last with ``train.keep: last`` or
without a
validation split); the selection stage starts from the generation stage's, and is skipped where
:func:`hmh.train.engine.selection_skipped` says so (top_n = K). With ``search.generator`` (a checkpoint of hmh train or
of a search, its ``model.*`` checked against the config before Ray starts) no generation stage is trained: the
selection stage starts from that generator. Afterwards the final checkpoint is evaluated on the test split in a Ray
task with one worker's resources.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmh.config import Config, ConfigError, flatten, load_config, save_config
from hmh.files import atomic
from hmh.results.tables import OBJECTIVE, ExperimentPaths
from hmh.train.engine import keeps_last, selection_skipped, stage_epochs
from tune.cli import add_config_args, echo, main, repo_path
from tune.console import train_logging_config
from tune.worker import StageSpec, evaluate_checkpoint, train_fn_per_worker

__all__ = ["RunCheckpoints", "StageCheckpoint", "check_same_config", "prepare_config", "run_stage", "run_two_stage",
           "test_metrics"]

log = logging.getLogger(__name__)

MARKER = "hmh_stage.json"
Echo = Callable[[str], None]


@dataclass
class StageCheckpoint:
    """A finished stage: its best checkpoint (a Train checkpoint folder or URI; for a given generator,
    ``search.generator``: an hmh checkpoint file or folder) and that checkpoint's metrics (none for a given
    generator)."""

    stage: str
    checkpoint: str
    metrics: dict[str, Any]


@dataclass
class RunCheckpoints:
    generation: StageCheckpoint
    selection: StageCheckpoint | None

    @property
    def final(self) -> StageCheckpoint:
        """The checkpoint to evaluate: the selection stage's, or the generation stage's without one."""
        return self.selection or self.generation


def prepare_config(cfg: Config, progress: bool = True) -> Config:
    """Resolve what workers must not do themselves, on the driver before Ray starts: ``search.generator`` checked
    (:func:`given_generator`), the dataset (built into the cache once when ``data.root`` is empty) as an absolute
    ``data.root``, indexed here once (its sample counts are logged here, once: the workers' dataset lines stay off
    the console, :func:`tune.console.quiet_worker_logs`), and the synthetic MANO files. ``train.generator`` (hmh
    train's) is refused: the Ray drivers take a given generator from ``search.generator``."""
    from hmh.train.runner import build_datasets, data_root

    if cfg.train.generator:
        raise ConfigError(f"train.generator={cfg.train.generator!r}: only hmh train reads it; the Ray Train and Tune "
                          "drivers take a given generator from search.generator (leave train.generator empty)")
    mano = cfg.model.mano_path and str(Path(cfg.model.mano_path).expanduser().absolute())
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mano_path=mano))
    generator = given_generator(cfg) if cfg.search.generator else ""
    root = Path(data_root(cfg, progress=progress)).expanduser().absolute()
    if cfg.model.mano_path == "":
        from hmh.mano.model import synthetic_model_dir

        synthetic_model_dir()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(root)),
                              search=dataclasses.replace(cfg.search, generator=generator))
    build_datasets(cfg, root, ("train", "val"))
    return cfg


def given_generator(cfg: Config) -> str:
    """``search.generator`` as an absolute path, once it is checked: an hmh checkpoint (a file, or a Train
    checkpoint folder holding one; of either stage) whose ``model.*`` and ``loss.mode_hypothesis`` are ``cfg``'s
    (``model.pretrained`` aside, as for hmh train's ``train.generator``; ``cfg``'s ``model.mano_path`` absolute). Raises
    :class:`~hmh.config.ConfigError` (one line naming the key and the file) otherwise."""
    from hmh.models.checkpoint import CheckpointError, check_same_generator, checkpoint_config, load_checkpoint

    path = Path(cfg.search.generator).expanduser().absolute()
    try:
        theirs = checkpoint_config(load_checkpoint(path), path)
    except CheckpointError as err:
        raise ConfigError(f"search.generator={cfg.search.generator!r}: {err}") from None
    if theirs.model.mano_path:
        mano_path = str(Path(theirs.model.mano_path).expanduser().absolute())
        theirs = dataclasses.replace(theirs, model=dataclasses.replace(theirs.model, mano_path=mano_path))
    check_same_generator(theirs, cfg, f"search.generator={cfg.search.generator!r}")
    return str(path)


def _marker_read(run_dir: str) -> dict | None:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(f"{run_dir}/{MARKER}")
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read().decode())


def _marker_write(run_dir: str, data: dict) -> None:
    import pyarrow.fs

    text = json.dumps(data, indent=2, allow_nan=True)
    if "://" not in run_dir:
        atomic.write_text(Path(run_dir) / MARKER, text)
        return
    fs, path = pyarrow.fs.FileSystem.from_uri(f"{run_dir}/{MARKER}")
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode())


def _best(result, keep_last: bool) -> tuple[str, dict[str, Any]]:
    """``(path, metrics)`` of the checkpoint a stage keeps (:func:`hmh.train.engine.keeps_last`): the lowest-objective
    checkpoint of a Train result, or its latest."""
    candidates = result.best_checkpoints or []
    if not candidates:
        raise RuntimeError(f"Train run {result.path} finished without a checkpoint")
    if keep_last:
        checkpoint, metrics = max(candidates, key=lambda cm: cm[1].get("epoch", 0))
    else:
        def score(cm) -> float:
            value = cm[1].get(OBJECTIVE, math.nan)
            return math.inf if value is None or math.isnan(value) else value

        checkpoint, metrics = min(candidates, key=score)
    return checkpoint.path, dict(metrics)


def run_stage(cfg: Config, stage: str, paths: ExperimentPaths, run: str, *, generator_checkpoint: str = "",
              tensorboard_dir: str = "", report_to_tune: bool = False, echo: Echo = log.info) -> StageCheckpoint:
    """Train ``stage`` of ``cfg`` as the Train run ``<run>-<stage>`` (resumed if it exists; skipped if it
    finished). ``report_to_tune``: inside a Tune trial, forward every report to Tune (``TuneReportCallback``)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from tune.interrupt import interruptible, sigint_restored
    from tune.resources import scaling_config, worker_runtime_env

    name = f"{run}-{stage}"
    run_dir = f"{paths.train_storage}/{name}"
    done = _marker_read(run_dir)
    epochs = stage_epochs(stage, cfg)
    if done is not None and done.get("epochs") == epochs:
        echo(f"{name}: finished earlier, best checkpoint {done['checkpoint']}")
        return StageCheckpoint(stage, done["checkpoint"], done["metrics"])
    keep_last = keeps_last(cfg, cfg.data.val_fraction > 0)
    spec = StageSpec(config=dataclasses.asdict(cfg), stage=stage, generator_checkpoint=generator_checkpoint,
                     tensorboard_dir=tensorboard_dir)
    callbacks = []
    if report_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    checkpoint_config = (ray.train.CheckpointConfig(num_to_keep=1) if keep_last else
                         ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=OBJECTIVE,
                                                    checkpoint_score_order="min"))
    trainer = interruptible(TorchTrainer(
        train_fn_per_worker,
        train_loop_config=spec.to_dict(),
        scaling_config=scaling_config(cfg.search),
        run_config=ray.train.RunConfig(
            name=name, storage_path=paths.train_storage, callbacks=callbacks, checkpoint_config=checkpoint_config,
            worker_runtime_env=worker_runtime_env(cfg.search), logging_config=train_logging_config(),
            failure_config=ray.train.FailureConfig(max_failures=cfg.search.max_failures,
                                                   controller_failure_limit=cfg.search.controller_failure_limit),
        ),
    ))
    echo(f"{name}: training {epochs} epoch(s) on {cfg.search.num_workers} worker(s) -> {run_dir}")
    with sigint_restored():
        result = trainer.fit()
    checkpoint, metrics = _best(result, keep_last)
    _marker_write(run_dir, {"epochs": epochs, "checkpoint": checkpoint, "metrics": metrics})
    echo(f"{name}: done, best checkpoint {checkpoint} (objective {metrics.get(OBJECTIVE, math.nan):.2f} mm)")
    return StageCheckpoint(stage, checkpoint, metrics)


def run_two_stage(cfg: Config, paths: ExperimentPaths, run: str, *, tensorboard_dir: str = "",
                  report_to_tune: bool = False, echo: Echo = log.info) -> RunCheckpoints:
    """Generation, then selection from the checkpoint the generation stage keeps, unless
    :func:`hmh.train.engine.selection_skipped` (as ``hmh train`` does). With ``search.generator`` (absolute:
    :func:`prepare_config`) that checkpoint stands for the generation stage, which is not trained (its metrics are
    not read): the selection stage trains on its generator, frozen."""
    if cfg.search.generator:
        generation = StageCheckpoint("generation", cfg.search.generator, {})
        echo(f"{run}: generation stage skipped: the generator of {cfg.search.generator}")
    else:
        generation = run_stage(cfg, "generation", paths, run, tensorboard_dir=tensorboard_dir,
                               report_to_tune=report_to_tune, echo=echo)
    selection = None
    skipped = selection_skipped(cfg)
    if skipped:
        echo(f"{run}: selection stage skipped: {skipped}")
    else:
        selection = run_stage(cfg, "selection", paths, run, generator_checkpoint=generation.checkpoint,
                              tensorboard_dir=tensorboard_dir, report_to_tune=report_to_tune, echo=echo)
    return RunCheckpoints(generation, selection)


def test_metrics(cfg: Config, checkpoint: str, split: str = "test") -> dict[str, Any]:
    """:func:`tune.worker.evaluate_checkpoint` on every sample of ``split``, as a Ray task with one worker's
    resources. Returns ``{"metrics", "samples", "root"}``."""
    import ray

    from tune.resources import worker_runtime_env

    # "DEFAULT": called inside a Tune trial (the study's), the task must not be captured into the trial's small
    # placement group; it takes one worker's resources from the cluster like the Train runs do.
    options: dict[str, Any] = {"num_cpus": cfg.search.cpus_per_worker, "runtime_env": worker_runtime_env(cfg.search),
                               "scheduling_strategy": "DEFAULT"}
    if cfg.search.gpus_per_worker > 0:
        options["num_gpus"] = cfg.search.gpus_per_worker
    task = ray.remote(evaluate_checkpoint).options(**options)
    return ray.get(task.remote(checkpoint, split, 0))


def check_same_config(path: Path, cfg: Config, what: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse to resume ``what`` with a different config than the one recorded at ``path`` (the dotted keys in
    ``ignore`` may differ)."""
    if not path.is_file():
        return
    saved = flatten(load_config(path))
    for key, value in flatten(cfg).items():
        if key not in ignore and saved.get(key) != value:
            raise ConfigError(f"{what} was started with {key}={saved.get(key)!r} ({path}), now {value!r}: use the "
                              "same config to resume, or another name / experiment")


def run_args(args: argparse.Namespace) -> int:
    from hmh.eval.report import metric_table, write_metrics
    from hmh.train.runner import check_inputs
    from tune.resources import init_ray
    from tune.storage import check_shared_storage

    cfg = load_config(repo_path(args.config), args.overrides)
    check_inputs(cfg, echo)  # before the dataset is built or Ray starts
    cfg = prepare_config(cfg, progress=sys.stderr.isatty())
    paths = ExperimentPaths.for_config(cfg.search.storage_path, cfg.search.experiment)
    out = paths.root / "runs" / args.name
    check_same_config(out / "config.yaml", cfg, f"run {args.name!r} of {paths.root}")
    save_config(cfg, out / "config.yaml")
    init_ray(args.address, echo=echo)
    check_shared_storage(cfg.search.storage_path)
    tensorboard = paths.tensorboard / args.name
    try:
        result = run_two_stage(cfg, paths, args.name, tensorboard_dir=str(tensorboard), echo=echo)
        test = test_metrics(cfg, result.final.checkpoint)
    except KeyboardInterrupt:
        echo(f"run {args.name!r} interrupted: its checkpoints stay in {paths.train_storage}/{args.name}-*; run the "
             "same command to resume it")
        return 130
    json_path, md_path = write_metrics(out, test["metrics"], f"test split ({test['samples']} samples) of "
                                       f"{test['root']}", extra={"checkpoint": result.final.checkpoint})
    echo("test metrics (mm):\n" + metric_table(test["metrics"]))
    echo(f"outputs:\n  config       {out / 'config.yaml'}\n  checkpoints  {paths.train_storage}/{args.name}-*\n"
         f"  tensorboard  {tensorboard}  (tensorboard --logdir {tensorboard})\n  metrics      {md_path}, {json_path}")
    return 0


def build_parser(prog: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or "python -m tune.train", description=__doc__.split("\n\n")[0])
    add_config_args(parser, "tune/configs/demo.yaml")
    parser.add_argument("--name", default="run",
                        help="run name: the same name resumes an interrupted run (default: run)")
    return parser


if __name__ == "__main__":
    sys.exit(main("tune.train", run_args, build_parser()))
