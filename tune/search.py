"""The main job: a Ray Tune search over hmh's two-stage training, then a final retrain of the best configuration.

``python -m tune.search --config tune/configs/demo.yaml [--space tune/spaces/X.yaml] [--address ...] [--resume]
[--set k=v]``

- Every trial is a driver (0.01 CPU, on the head node) that runs both stages as Ray Train runs
  (:mod:`tune.train`), forwarding each epoch's report to Tune. ``OptunaSearch`` (TPE, seeded by
  ``search.seed``, study in ``results/<experiment>/optuna.db``) proposes configurations from the YAML space
  (:mod:`tune.space`); ASHA stops poor trials at rungs of ``trial_epoch`` (both stages' epochs counted together).
- Objective: ``val/objective_mpjpe_current`` (:data:`hmh.results.OBJECTIVE`): the selected current-frame MPJPE on
  the validation split; during the generation stage the mean of all K stands in for the selector.
- ``max_concurrent_trials`` comes from the cluster's resources and each trial's workers; Train runs get a finite
  ``controller_failure_limit``. Config and space are checked before Ray starts.
- Then the best completed trial's configuration is retrained with the final budget (``search.final_*``) and
  evaluated on the test split; results, summary and plots are written (:mod:`hmh.results`).
- ``--resume`` continues an interrupted search with ``Tuner.restore`` (finished trials are not rerun, running
  ones resume from their Train checkpoints) and then does whatever is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmh import atomic
from hmh.config import Config, ConfigError, save_config, to_dict
from hmh.results import FINAL_SCHEMA, OBJECTIVE, TRIALS_SCHEMA, ExperimentPaths, final_rows, read_table, write_table
from hmh.search_summary import best_trial, write_summary
from tune.cli import add_config_args, echo, main, repo_path
from tune.space import SearchSpace, SpaceError, apply_params, default_space_path, load_space
from tune.train import check_same_config, prepare_config, run_two_stage, test_metrics

__all__ = ["Experiment", "driver", "final_config", "load_experiment", "run_search"]

log = logging.getLogger(__name__)
TUNE_NAME = "search"
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's resource of the head node (every cluster has exactly one)


@dataclass
class Experiment:
    """A checked search: the experiment config, its space and where it writes."""

    cfg: Config
    space: SearchSpace
    paths: ExperimentPaths

    @property
    def epochs_total(self) -> int:
        return self.cfg.train.generation_epochs + self.cfg.train.selection_epochs


def load_experiment(config: str, overrides: list[str], space: str | None = None, resume: bool = False) -> Experiment:
    """Load and check everything a search needs, before Ray starts (errors name the key or the file)."""
    from hmh.config import load_config

    cfg = load_config(repo_path(config), overrides)
    if cfg.data.val_fraction <= 0:
        raise ConfigError("data.val_fraction=0.0 is invalid for a search: the objective needs a validation split")
    epochs = cfg.train.generation_epochs + cfg.train.selection_epochs
    if cfg.search.grace_period > epochs:
        raise ConfigError(f"search.grace_period={cfg.search.grace_period} is invalid: expected <= the epochs of a "
                          f"trial (train.generation_epochs + train.selection_epochs = {epochs})")
    paths = ExperimentPaths.for_config(cfg.search.storage_path, cfg.search.experiment)
    space_path = Path(repo_path(space or cfg.search.space or str(default_space_path())))
    searched = load_space(space_path, cfg)
    if resume:
        if not paths.config.is_file():
            raise ConfigError(f"--resume: no search to resume in {paths.root} (no {paths.config.name})")
        check_same_config(paths.config, cfg, f"the search in {paths.root}")
        saved = load_space(paths.space, cfg)
        if saved.to_yaml() != searched.to_yaml():
            raise SpaceError(f"--resume: the search in {paths.root} used the space {paths.space}, which differs "
                             f"from {space_path}; pass --space {paths.space}")
    elif paths.config.exists() or Path(paths.root, TUNE_NAME).exists():
        raise ConfigError(f"search.experiment={cfg.search.experiment!r}: {paths.root} already holds a search; pass "
                          "--resume to continue it, or choose another search.experiment")
    return Experiment(cfg, searched, paths)


def driver(params: dict[str, Any], base: dict, root: str, ray_root: str) -> None:
    """One Tune trial: both stages of ``base`` with this trial's ``params``, reporting every epoch to Tune. The
    Train runs are named after the trial id, so a restored trial resumes them."""
    import ray.tune

    cfg = apply_params(base, params)
    paths = ExperimentPaths(Path(root), ray_root)
    trial_id = ray.tune.get_context().get_trial_id()
    run_two_stage(cfg, paths, trial_id, tensorboard_dir=str(paths.tensorboard / trial_id), report_to_tune=True)


def _trainable(exp: Experiment, base: dict):
    import ray.tune

    from tune.resources import DRIVER_CPUS

    fn = ray.tune.with_parameters(driver, base=base, root=str(exp.paths.root), ray_root=exp.paths.ray_root)
    # Drivers stay on the head node, and with them the Train controllers (Ray puts those on the driver's node): a
    # lost worker node then costs its Train workers a restart from their checkpoint, not the whole trial.
    return ray.tune.with_resources(fn, {"cpu": DRIVER_CPUS, HEAD_NODE_RESOURCE: 0.001})


def _tuner(exp: Experiment, base: dict, concurrent: int):
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from tune.export import ExportCallback
    from tune.space import DefineByRun

    s = exp.cfg.search
    searcher = OptunaSearch(space=DefineByRun(exp.space), metric=OBJECTIVE, mode="min",
                            points_to_evaluate=[dict(p) for p in exp.space.initial_points] or None,
                            study_name=s.experiment, storage=optuna.storages.RDBStorage(exp.paths.optuna_url),
                            seed=s.seed)
    scheduler = ASHAScheduler(time_attr="trial_epoch", max_t=exp.epochs_total, grace_period=s.grace_period,
                              reduction_factor=s.reduction_factor, stop_last_trials=False)
    export = ExportCallback(exp.paths, base, exp.space.keys, exp.epochs_total, s.experiment)
    return ray.tune.Tuner(
        _trainable(exp, base),
        tune_config=ray.tune.TuneConfig(metric=OBJECTIVE, mode="min", search_alg=searcher, scheduler=scheduler,
                                        num_samples=s.num_samples, max_concurrent_trials=concurrent),
        # Worker failures are Train's to retry (search.max_failures); a trial whose Train run still fails has a
        # deterministic problem, so Tune does not rerun it.
        run_config=ray.tune.RunConfig(name=TUNE_NAME, storage_path=exp.paths.ray_storage, callbacks=[export],
                                      failure_config=ray.tune.FailureConfig(max_failures=0)),
    )


def final_config(base: Config, params: dict[str, Any]) -> Config:
    """The best trial's configuration (``base`` with its ``params``) with the final budget:
    ``search.final_*_epochs`` (0 = the trials'), ``search.final_max_train_samples`` training samples (0 = all)."""
    cfg = apply_params(base, params)
    s = cfg.search
    train = dataclasses.replace(cfg.train, generation_epochs=s.final_generation_epochs or cfg.train.generation_epochs,
                                selection_epochs=s.final_selection_epochs or cfg.train.selection_epochs)
    data = dataclasses.replace(cfg.data, max_train_samples=s.final_max_train_samples)
    return dataclasses.replace(cfg, train=train, data=data)


def _final_retrain(exp: Experiment, base: Config, rows: list[dict]) -> dict[str, Any] | None:
    """Retrain the best completed trial's configuration (on the prepared ``base``) and write ``final.parquet``;
    returns the test metrics."""
    from hmh.report import write_metrics

    best = best_trial(rows)
    if best is None:
        echo("final retrain skipped: no trial completed its full budget")
        return None
    params = {k: best[f"config/{k}"] for k in exp.space.keys}
    cfg = final_config(base, params)
    echo(f"final retrain of trial {best['trial_id']} ({best['objective']:.2f} mm): "
         f"{cfg.train.generation_epochs} + {cfg.train.selection_epochs} epochs, "
         f"{cfg.data.max_train_samples or 'all'} training samples")
    result = run_two_stage(cfg, exp.paths, "final", tensorboard_dir=str(exp.paths.tensorboard / "final"), echo=echo)
    test = test_metrics(cfg, result.final.checkpoint)
    meta = {"best_trial_id": best["trial_id"], "best_objective": best["objective"],
            "checkpoint": result.final.checkpoint, "config": to_dict(cfg), "params": params}
    write_table(exp.paths.final, final_rows(test["metrics"], "test", test["samples"]), FINAL_SCHEMA, meta)
    write_metrics(exp.paths.final_dir, test["metrics"], f"final retrain, test split ({test['samples']} samples)",
                  extra={"checkpoint": result.final.checkpoint, "best_trial_id": best["trial_id"]})
    save_config(cfg, exp.paths.final_dir / "config.yaml")
    return test


def run_search(exp: Experiment, address: str | None = None, resume: bool = False) -> int:
    """Run (or resume) the search of ``exp``, then the final retrain and the exports. Returns an exit status:
    0 done, 130 interrupted (resume with ``--resume``)."""
    import ray.tune

    from hmh.report import metric_table
    from hmh.search_plots import write_plots
    from tune.export import FINISHED
    from tune.resources import init_ray, max_concurrent_trials
    from tune.storage import check_shared_storage

    base_cfg = prepare_config(exp.cfg, progress=sys.stderr.isatty())
    base = to_dict(base_cfg)
    dashboard = init_ray(address, echo=echo)
    check_shared_storage(exp.cfg.search.storage_path)
    if not resume:
        save_config(exp.cfg, exp.paths.config)
        atomic.write_text(exp.paths.space, exp.space.to_yaml())
    tune_path = f"{exp.paths.ray_storage}/{TUNE_NAME}"
    if resume and ray.tune.Tuner.can_restore(tune_path):
        echo(f"resuming the search in {tune_path}")
        tuner = ray.tune.Tuner.restore(tune_path, trainable=_trainable(exp, base), resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
    else:
        concurrent = max_concurrent_trials(ray.cluster_resources(), exp.cfg.search)
        echo(f"search {exp.cfg.search.experiment!r}: {exp.cfg.search.num_samples} trials, at most {concurrent} at "
             f"once, {exp.epochs_total} epochs each; results in {exp.paths.root}")
        tuner = _tuner(exp, base, concurrent)
    tuner.fit()
    rows = read_table(exp.paths.trials, TRIALS_SCHEMA)[0].to_pylist() if exp.paths.trials.is_file() else []
    finished = sum(r["status"] in FINISHED for r in rows)
    if finished < exp.cfg.search.num_samples:
        echo(f"search interrupted after {finished} finished trial(s); continue it with the same command and "
             "--resume")
        return 130
    test = _final_retrain(exp, base_cfg, rows) if exp.cfg.search.final_retrain else None
    summary = write_summary(exp.paths.root)
    plots = write_plots(exp.paths.root, exp.cfg.search.experiment)
    exp.paths.publish()
    if test is not None:
        echo(f"final retrain, test split ({test['samples']} samples), mm:\n{metric_table(test['metrics'])}")
    _where(exp.paths, summary, plots, dashboard)
    return 0


def _where(paths: ExperimentPaths, summary: Path, plots: list[Path], dashboard: str) -> None:
    lines = [f"results in {paths.root}:",
             f"  summary       {summary}  (reprint: hmh results summarize {paths.root})",
             f"  trials        {paths.trials}", f"  iterations    {paths.iterations}"]
    if paths.final.is_file():
        lines.append(f"  final table   {paths.final}, {paths.final_dir / 'metrics.md'}")
    lines += [f"  plots         {', '.join(p.name for p in plots)} in {paths.plots}",
              f"  optuna        optuna-dashboard {paths.optuna_url}  (pip install -e '.[dashboard]')",
              f"  tensorboard   tensorboard --logdir {paths.tensorboard}  (Tune's own: {paths.ray_storage}/"
              f"{TUNE_NAME})",
              f"  checkpoints   {paths.train_storage}"]
    if dashboard:
        lines.append(f"  Ray dashboard {dashboard} (while this process runs)")
    echo("\n".join(lines))


def run_args(args: argparse.Namespace) -> int:
    exp = load_experiment(args.config, args.overrides, args.space, args.resume)
    return run_search(exp, args.address, args.resume)


def build_parser(prog: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or "python -m tune.search", description=__doc__.split("\n\n")[0])
    add_config_args(parser, "tune/configs/demo.yaml")
    parser.add_argument("--space", default=None,
                        help="search space YAML (default: search.space, else tune/spaces/default.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted search of this experiment (Tuner.restore)")
    return parser


if __name__ == "__main__":
    sys.exit(main("tune.search", run_args, build_parser()))
