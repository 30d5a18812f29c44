"""The main job: a Ray Tune search over hmh's two-stage training, then a final retrain of the best configuration.

``python -m tune.search --config tune/configs/demo.yaml [--space tune/spaces/X.yaml] [--address ...] [--resume]
[--set k=v]``

- Every trial is a driver (0.01 CPU, on the head node) that runs both stages as Ray Train runs
  (:mod:`tune.train`), forwarding each epoch's report to Tune. ``OptunaSearch`` (TPE, seeded by
  ``search.seed``, study in ``results/<experiment>/optuna.db``, tied to the experiment: :mod:`tune.optuna_db`)
  proposes configurations from the YAML space (:mod:`tune.space`); ASHA stops poor trials at rungs of
  ``trial_epoch`` (both stages' epochs counted together), and Optuna learns them as PRUNED with their values per
  epoch, the trials that ran their full budget as COMPLETE (:mod:`tune.searcher`). ``search.scheduler=
  brief_then_finish`` instead: synchronous rounds of ``search.round_trials`` trials, each trained
  ``search.grace_period`` epochs, of which the best ``round_trials // reduction_factor`` then finish their budget
  from their checkpoints (:class:`tune.searcher.BriefThenFinishSearch`); ``search.num_samples`` configurations
  are drawn, and each finished one is one more Tune trial that continues its runs.
- ``search.generator``: a selection-only search. Every trial (and the final retrain) takes that checkpoint's
  generator, frozen, and trains the selection stage alone; the space may search no generation key
  (:data:`GENERATION_KEYS`; ``tune/spaces/selection.yaml``), and the checkpoint's ``model.*`` must be the config's.
- Objective: ``val/objective_mpjpe_current`` (:data:`hmh.results.tables.OBJECTIVE`): the selected current-frame MPJPE on
  the validation split; during the generation stage ``train.generation_objective`` (the mean of all K by default)
  stands in (:func:`hmh.train.loop.objective_source`).
- Two objectives (``search.objectives=mpjpe_ms``): that MPJPE and the inference cost, ms per image at batch 1
  (:data:`hmh.results.tables.COST_OBJECTIVE`, measured in each trial's workers), through Optuna's multi-objective TPE
  (``OptunaSearch`` with metric and mode lists). Nothing stops a trial early then: ASHA ranks trials by one number
  at each rung, and ranking by MPJPE alone would stop exactly the cheap configurations a front needs (a cheap trial
  is worse by MPJPE early on and stays on the front); every trial runs its full budget (FIFO). The front goes to
  ``pareto.parquet`` and ``plots/pareto.png``, and the final retrain takes the point ``search.pick`` chooses
  (:func:`hmh.results.pareto.choose`); when none qualifies the search stops with that error after writing the front, and
  ``--resume --set search.pick=...`` retrains another point.
- ``max_concurrent_trials`` is what the cluster holds at its largest (:func:`tune.resources.trial_plan`: the nodes
  up now, or an autoscaling cluster's definition named by ``search.cluster``); Train runs get a finite
  ``controller_failure_limit``. Config and space are checked before Ray starts.
- Then the best completed trial's configuration (two objectives: the picked point's) is retrained with the final
  budget (``search.final_*``) and evaluated on the test split; results, summary and plots are written
  (:mod:`hmh.results.tables`).
- ``--resume`` continues an interrupted search with ``Tuner.restore`` (finished trials are not rerun, running
  ones resume from their Train checkpoints) and then does whatever is left; an interrupted final retrain resumes
  from its last checkpoint. Ctrl-C anywhere ends with one line saying what is kept, and exit status 130
  (:mod:`tune.interrupt`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmh.config import Config, ConfigError, SearchConfig, save_config, to_dict
from hmh.files import atomic
from hmh.results import pareto
from hmh.results.search_summary import best_trial, write_summary
from hmh.results.tables import (
    COST_OBJECTIVE,
    FINAL_SCHEMA,
    OBJECTIVE,
    OBJECTIVE_KEYS,
    TRIALS_SCHEMA,
    ExperimentPaths,
    final_rows,
    read_table,
    write_table,
)
from tune.cli import add_config_args, echo, main, repo_path
from tune.console import tune_console
from tune.optuna_db import check_study, create_study, fingerprint, finished_trials
from tune.space import SearchSpace, SpaceError, apply_params, default_space_path, load_space
from tune.train import check_same_config, prepare_config, run_two_stage, test_metrics
from tune.tune_state import check_tune_state, restore_tuner

__all__ = ["GENERATION_KEYS", "Experiment", "driver", "final_config", "load_experiment", "run_search"]

log = logging.getLogger(__name__)
TUNE_NAME = "search"
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's resource of the head node (every cluster has exactly one)
RESUMABLE = ("search.pick", "search.cluster")  # keys --resume may change: pick chooses among finished trials,
# cluster only sizes how many run at once
# Config keys that only the generation stage reads (the models' build, hmh.train.losses.generation_loss,
# hmh.train.loop.make_optimizer / make_scheduler for that stage): a selection-only search (search.generator) keeps
# them as its checkpoint's generator was trained with.
GENERATION_KEYS = ("model.", "loss.joint_3d", "loss.proj", "loss.mano", "loss.diversity", "loss.diversity_alpha",
                   "loss.winner", "loss.mode_hypothesis", "optim.lr", "optim.milestones", "optim.gamma")


@dataclass
class Experiment:
    """A checked search: the experiment config, its space and where it writes."""

    cfg: Config
    space: SearchSpace
    paths: ExperimentPaths

    @property
    def epochs_total(self) -> int:
        return self.cfg.train.generation_epochs + self.cfg.train.selection_epochs

    @property
    def objectives(self) -> tuple[str, ...]:
        """The minimised metric keys (:data:`hmh.results.tables.OBJECTIVE_KEYS` of ``search.objectives``)."""
        return OBJECTIVE_KEYS[self.cfg.search.objectives]

    @property
    def two_objectives(self) -> bool:
        return len(self.objectives) == 2

    @property
    def brief_then_finish(self) -> bool:
        return self.cfg.search.scheduler == "brief_then_finish"

    @property
    def tune_trials(self) -> int:
        """The Tune trials of the search at most: one per configuration, and with brief_then_finish one more per
        configuration finished (:func:`tune.searcher.kept` of each round)."""
        from tune.searcher import kept, round_sizes

        s = self.cfg.search
        if not self.brief_then_finish:
            return s.num_samples
        return s.num_samples + sum(kept(n, s.reduction_factor) for n in round_sizes(s.num_samples, s.round_trials))

    @property
    def fingerprint(self) -> str:
        """What ties ``optuna.db``'s study to this experiment (:mod:`tune.optuna_db`)."""
        return fingerprint(self.cfg, self.space.to_yaml(), RESUMABLE)


def load_experiment(config: str, overrides: list[str], space: str | None = None, resume: bool = False) -> Experiment:
    """Load and check everything a search needs, before Ray starts (errors name the key or the file)."""
    from hmh.config import load_config

    cfg = load_config(repo_path(config), overrides)
    if cfg.data.val_fraction <= 0:
        raise ConfigError("data.val_fraction=0.0 is invalid for a search: the objective needs a validation split")
    epochs = cfg.train.generation_epochs + cfg.train.selection_epochs
    if cfg.search.objectives == "mpjpe" and cfg.search.grace_period > epochs:
        raise ConfigError(f"search.grace_period={cfg.search.grace_period} is invalid: expected <= the epochs of a "
                          f"trial (train.generation_epochs + train.selection_epochs = {epochs})")
    if cfg.search.objectives == "mpjpe_ms" and cfg.search.scheduler != "asha":
        raise ConfigError(f"search.scheduler={cfg.search.scheduler!r} is invalid with search.objectives='mpjpe_ms': "
                          "a two-objective search stops no trial early (leave search.scheduler as 'asha')")
    if cfg.search.objectives == "mpjpe_ms" and cfg.train.selection_epochs < 1:
        raise ConfigError("search.objectives='mpjpe_ms' is invalid with train.selection_epochs=0: the cost objective "
                          "is of the generator + selector, so trials need a selection stage")
    paths = ExperimentPaths.for_config(cfg.search.storage_path, cfg.search.experiment)
    space_path = Path(repo_path(space or cfg.search.space or str(default_space_path())))
    searched = load_space(space_path, cfg)
    if cfg.search.generator:
        _check_selection_only(cfg, searched)
    exp = Experiment(cfg, searched, paths)
    if resume:
        if not paths.config.is_file():
            raise ConfigError(f"--resume: no search to resume in {paths.root} (no {paths.config.name})")
        check_same_config(paths.config, cfg, f"the search in {paths.root}", ignore=RESUMABLE)
        saved = load_space(paths.space, cfg)
        if saved.to_yaml() != searched.to_yaml():
            raise SpaceError(f"--resume: the search in {paths.root} used the space {paths.space}, which differs "
                             f"from {space_path}; pass --space {paths.space}")
        check_tune_state(Path(paths.root, TUNE_NAME))
        if paths.optuna_db.exists() or Path(paths.root, TUNE_NAME).exists():  # else the search never started
            check_study(paths.optuna_db, cfg.search.experiment, exp.fingerprint)
    elif paths.config.exists() or Path(paths.root, TUNE_NAME).exists() or paths.optuna_db.exists():
        raise ConfigError(f"search.experiment={cfg.search.experiment!r}: {paths.root} already holds a search; pass "
                          "--resume to continue it, or choose another search.experiment")
    from hmh.train.runner import check_inputs

    check_inputs(cfg, echo)  # the data root, the MANO files and the ImageNet weights
    return exp


def _check_selection_only(cfg: Config, space: SearchSpace) -> None:
    """A search on ``search.generator``'s generator searches the selection stage alone: no generation key in the
    space, and a selection stage in every trial (:func:`hmh.train.engine.selection_skipped` says why not, for the
    config and for each parameter at each end of its range)."""
    from hmh.train.engine import selection_skipped

    given = f"search.generator={cfg.search.generator!r}"
    touched = [key for key in space.keys if key.startswith(GENERATION_KEYS)]
    if touched:
        raise SpaceError(f"{space.source}: parameter {touched[0]!r} is of the generation stage, which {given} "
                         "fixes: search selection keys only (e.g. tune/spaces/selection.yaml), or leave "
                         "search.generator empty")
    skipped = selection_skipped(cfg)
    if skipped:
        raise ConfigError(f"{given}: its trials would train nothing, as the selection stage is skipped: {skipped}")
    for param in space.params:
        for value in param.values if param.kind == "categorical" else space.bounds(param, {}):
            skipped = selection_skipped(apply_params(cfg, {param.key: value}))
            if skipped:
                raise SpaceError(f"{space.source}: parameter {param.key!r} = {value!r} skips the selection stage "
                                 f"({skipped}), the only stage a trial of {given} trains: narrow its range")


def driver(params: dict[str, Any], base: dict, root: str, ray_root: str) -> None:
    """One Tune trial: both stages of ``base`` with this trial's ``params``, reporting every epoch to Tune. The
    Train runs are named after the trial id (a finishing trial's: after the trial it continues), so a restored
    trial resumes them."""
    import ray.tune

    from tune.searcher import continued

    params, continues = continued(params)
    cfg = apply_params(base, params)
    paths = ExperimentPaths(Path(root), ray_root)
    run = continues or ray.tune.get_context().get_trial_id()  # a finishing trial resumes the runs of the one it
    # continues (search.scheduler=brief_then_finish)
    run_two_stage(cfg, paths, run, tensorboard_dir=str(paths.tensorboard / run), report_to_tune=True)


def _trainable(exp: Experiment, base: dict):
    import ray.tune

    from tune.resources import DRIVER_CPUS

    fn = ray.tune.with_parameters(driver, base=base, root=str(exp.paths.root), ray_root=exp.paths.ray_root)
    # Drivers stay on the head node, and with them the Train controllers (Ray puts those on the driver's node): a
    # lost worker node then costs its Train workers a restart from their checkpoint, not the whole trial.
    return ray.tune.with_resources(fn, {"cpu": DRIVER_CPUS, HEAD_NODE_RESOURCE: 0.001})


def _table_metrics(exp: Experiment) -> dict[str, str]:
    """The trial table's metric columns: the trial epoch and each objective."""
    titles = {OBJECTIVE: "mpjpe (mm)", COST_OBJECTIVE: "ms/image"}
    return {"trial_epoch": "epoch", **{key: titles.get(key, key) for key in exp.objectives}}


def _table_parameters(exp: Experiment) -> dict[str, str]:
    """The trial table's parameter columns: K and top-n where searched (hmh's lines print every parameter)."""
    return {key: title for key, title in (("model.num_hypotheses", "K"), ("selection.top_n", "top_n"))
            if key in exp.space.keys}


def optuna_sampler(s: SearchConfig) -> Any:
    """The Optuna sampler ``search.sampler`` names, seeded by ``search.seed``: TPE (``tpe_startup_trials`` random
    trials first, univariate or multivariate; ``benchmarks/search_efficiency.py`` measures both) or random."""
    import optuna

    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.tpe_startup_trials,
                                      multivariate=s.tpe_multivariate)


def _tuner(exp: Experiment, base: dict, concurrent: int):
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    from tune.export import ExportCallback
    from tune.placement import ReleasePlacementGroups
    from tune.searcher import BriefRung, BriefThenFinishSearch, EpochAwareOptunaSearch
    from tune.space import DefineByRun

    s = exp.cfg.search
    # One objective: metric and mode are strings, and TuneConfig names them for ASHA. Two: lists, set on the
    # searcher only (Tune's TuneConfig takes one metric), and no scheduler: FIFO, every trial its full budget.
    metric, mode = ((exp.objectives[0], "min") if not exp.two_objectives
                    else (list(exp.objectives), ["min"] * len(exp.objectives)))
    # A trial stopped before its last epoch reaches Optuna as PRUNED, not as COMPLETE with an early value.
    options = dict(base=base, space=DefineByRun(exp.space), metric=metric, mode=mode,
                   points_to_evaluate=[dict(p) for p in exp.space.initial_points] or None, study_name=s.experiment,
                   storage=optuna.storages.RDBStorage(exp.paths.optuna_url), sampler=optuna_sampler(s))
    if exp.brief_then_finish:
        searcher = BriefThenFinishSearch(num_samples=s.num_samples, round_trials=s.round_trials,
                                         reduction_factor=s.reduction_factor, echo=echo, **options)
        scheduler = BriefRung(s.grace_period)
    else:
        searcher = EpochAwareOptunaSearch(**options)
        scheduler = None if exp.two_objectives else ASHAScheduler(
            time_attr="trial_epoch", max_t=exp.epochs_total, grace_period=s.grace_period,
            reduction_factor=s.reduction_factor, stop_last_trials=False)
    export = ExportCallback(exp.paths, base, exp.space.keys, exp.epochs_total, s.experiment, exp.objectives)
    tune_metric, tune_mode = (None, None) if exp.two_objectives else (metric, mode)
    return ray.tune.Tuner(
        _trainable(exp, base),
        tune_config=ray.tune.TuneConfig(metric=tune_metric, mode=tune_mode, search_alg=searcher,
                                        scheduler=scheduler, num_samples=exp.tune_trials,
                                        max_concurrent_trials=concurrent),
        # Worker failures are Train's to retry (search.max_failures); a trial whose Train run still fails has a
        # deterministic problem, so Tune does not rerun it.
        run_config=ray.tune.RunConfig(name=TUNE_NAME, storage_path=exp.paths.ray_storage,
                                      callbacks=[export, ReleasePlacementGroups(echo=echo)],
                                      failure_config=ray.tune.FailureConfig(max_failures=0),
                                      **tune_console(_table_metrics(exp), _table_parameters(exp))),
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


def _chosen_trial(exp: Experiment, rows: list[dict]) -> dict | None:
    """The trial row the final retrain takes: the best completed trial, or with two objectives the point of the
    Pareto front ``search.pick`` chooses (``pareto.parquet`` is written first, with it marked; on a
    :class:`hmh.results.pareto.PickError` without one). None when no trial completed."""
    if not exp.two_objectives:
        return best_trial(rows)
    pick = exp.cfg.search.pick
    front = pareto.front(rows)
    if not front:
        pareto.write_front(exp.paths, front, pick, None)
        return None
    earlier = pareto.read_front(exp.paths)[1].get("picked") if exp.paths.pareto.is_file() else None
    try:
        picked = pareto.choose(front, pick)
    except pareto.PickError:
        pareto.write_front(exp.paths, front, pick, None)
        raise
    if exp.cfg.search.final_retrain and earlier not in (None, picked.trial_id):
        raise ConfigError(f"search.pick={pick!r} chooses trial {picked.trial_id}, but the final retrain of this "
                          f"search was started on trial {earlier} ({exp.paths.pareto}); resume with the pick that "
                          "chose it, or run another search.experiment")
    pareto.write_front(exp.paths, front, pick, picked)
    echo(f"Pareto front: {len(front)} point(s); search.pick={pick} takes trial {picked.trial_id} (K={picked.k}, "
         f"top-n={picked.top_n}, {picked.mpjpe:.2f} mm, {picked.ms:.3g} ms per image)")
    return next(r for r in rows if r["trial_id"] == picked.trial_id)


def _final_retrain(exp: Experiment, base: Config, chosen: dict) -> dict[str, Any]:
    """Retrain the ``chosen`` trial's configuration (on the prepared ``base``) and write ``final.parquet``;
    returns the test metrics."""
    from hmh.eval.report import write_metrics

    params = {k: chosen[f"config/{k}"] for k in exp.space.keys}
    cfg = final_config(base, params)
    cost = f", {chosen[COST_OBJECTIVE]:.3g} ms per image" if exp.two_objectives else ""
    epochs = (f"{cfg.train.selection_epochs} selection epochs on the generator of {cfg.search.generator}"
              if cfg.search.generator else f"{cfg.train.generation_epochs} + {cfg.train.selection_epochs} epochs")
    echo(f"final retrain of trial {chosen['trial_id']} ({chosen['objective']:.2f} mm{cost}): {epochs}, "
         f"{cfg.data.max_train_samples or 'all'} training samples")
    result = run_two_stage(cfg, exp.paths, "final", tensorboard_dir=str(exp.paths.tensorboard / "final"), echo=echo)
    test = test_metrics(cfg, result.final.checkpoint)
    meta = {"best_trial_id": chosen["trial_id"], "best_objective": chosen["objective"],
            "checkpoint": result.final.checkpoint, "config": to_dict(cfg), "params": params,
            "pick": exp.cfg.search.pick if exp.two_objectives else None}
    write_table(exp.paths.final, final_rows(test["metrics"], "test", test["samples"]), FINAL_SCHEMA, meta)
    write_metrics(exp.paths.final_dir, test["metrics"], f"final retrain, test split ({test['samples']} samples)",
                  extra={"checkpoint": result.final.checkpoint, "best_trial_id": chosen["trial_id"]})
    save_config(cfg, exp.paths.final_dir / "config.yaml")
    return test


def run_search(exp: Experiment, address: str | None = None, resume: bool = False) -> int:
    """Run (or resume) the search of ``exp``, then the final retrain and the exports. Returns an exit status:
    0 done, 130 interrupted (resume with ``--resume``). Raises :class:`hmh.results.pareto.PickError` (after writing the
    front, the summary and the plots) when no point of a two-objective search's front satisfies ``search.pick``."""
    import ray.tune

    from tune.export import FINISHED
    from tune.interrupt import sigint_restored
    from tune.resources import init_ray, trial_plan
    from tune.storage import check_shared_storage

    base_cfg = prepare_config(exp.cfg, progress=sys.stderr.isatty())
    base = to_dict(base_cfg)
    dashboard = init_ray(address, echo=echo)
    check_shared_storage(exp.cfg.search.storage_path)
    save_config(exp.cfg, exp.paths.config)  # on --resume too: search.pick may have changed (load_experiment)
    if not resume:
        atomic.write_text(exp.paths.space, exp.space.to_yaml())
    if not exp.paths.optuna_db.exists():
        create_study(exp.paths.optuna_db, exp.cfg.search.experiment, len(exp.objectives), exp.fingerprint)
    tune_path = f"{exp.paths.ray_storage}/{TUNE_NAME}"
    if resume and ray.tune.Tuner.can_restore(tune_path):
        echo(f"resuming the search in {tune_path}")
        tuner = restore_tuner(tune_path, _trainable(exp, base), _table_metrics(exp), _table_parameters(exp))
    else:
        plan = trial_plan(exp.cfg.search)
        echo("\n".join(plan.lines))
        concurrent = plan.limit
        s = exp.cfg.search
        stopping = ("Pareto front, no early stopping" if exp.two_objectives else
                    f"rounds of {s.round_trials}: {s.grace_period} epoch(s) each, then the best 1/"
                    f"{s.reduction_factor} finish" if exp.brief_then_finish else "ASHA")
        echo(f"search {s.experiment!r}: {s.num_samples} trials, at most {concurrent} at once, {exp.epochs_total} "
             f"epochs each, minimising {' and '.join(exp.objectives)} ({stopping}); results in {exp.paths.root}")
        tuner = _tuner(exp, base, concurrent)
    with sigint_restored():  # Tune leaves its own handler, which only asks a finished Tune run to stop
        tuner.fit()
    rows = read_table(exp.paths.trials, TRIALS_SCHEMA)[0].to_pylist() if exp.paths.trials.is_file() else []
    finished = sum(r["status"] in FINISHED for r in rows)
    if exp.brief_then_finish:  # done when Optuna holds every configuration as finished: the finishing trials too
        done = finished == len(rows) and finished_trials(exp.paths.optuna_db, exp.cfg.search.experiment) >= \
            exp.cfg.search.num_samples
    else:
        done = finished >= exp.cfg.search.num_samples
    if not done:
        echo(f"search interrupted after {finished} finished trial(s); continue it with the same command and "
             "--resume")
        return 130
    return _finish(exp, base_cfg, rows, dashboard)


def _finish(exp: Experiment, base_cfg: Config, rows: list[dict], dashboard: str) -> int:
    """After the trials (their ``trials.parquet`` ``rows``): the final retrain, the reports, where everything is.
    Returns 0, or 130 when Ctrl-C interrupted the final retrain (one line says what is kept)."""
    from hmh.eval.report import metric_table

    try:
        chosen = _chosen_trial(exp, rows)
    except pareto.PickError:
        _write_reports(exp)  # the front is listed in the summary and plotted, for choosing another search.pick
        raise
    if exp.cfg.search.final_retrain and chosen is None:
        echo("final retrain skipped: no trial completed its full budget")
    try:
        test = _final_retrain(exp, base_cfg, chosen) if exp.cfg.search.final_retrain and chosen else None
    except KeyboardInterrupt:
        echo(f"final retrain interrupted: the {len(rows)} trial(s) stay in {exp.paths.root} and the retrain's "
             f"checkpoints in {exp.paths.train_storage}/final-*; continue it with the same command and --resume")
        return 130
    summary, plots = _write_reports(exp)
    if test is not None:
        echo(f"final retrain, test split ({test['samples']} samples), mm:\n{metric_table(test['metrics'])}")
    _where(exp.paths, summary, plots, dashboard)
    return 0


def _write_reports(exp: Experiment) -> tuple[Path, list[Path]]:
    """``summary.md`` and the plots from the result files, published to URI storage."""
    from hmh.results.search_plots import write_plots

    summary = write_summary(exp.paths.root)
    plots = write_plots(exp.paths.root, exp.cfg.search.experiment)
    exp.paths.publish()
    return summary, plots


def _where(paths: ExperimentPaths, summary: Path, plots: list[Path], dashboard: str) -> None:
    lines = [f"results in {paths.root}:",
             f"  summary       {summary}  (reprint: hmh results summarize {paths.root})",
             f"  trials        {paths.trials}", f"  iterations    {paths.iterations}"]
    if paths.pareto.is_file():
        lines.append(f"  pareto front  {paths.pareto}")
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
