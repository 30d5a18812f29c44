"""The reproduction study: the dissertation's Tables 4.1-4.3 as one Ray Tune experiment on hmh's own training.

``python -m tune.study [--config tune/configs/reproduce.yaml] [--ks 1 4 8 16] [--msf-k 8] [--select-ks 8]
[--selector-set KEY=VALUE ... [--selector-name NAME]] [--address ...] [--set k=v]``

- One Tune trial per *arm*, a grid run one trial at a time (:func:`study_arms`): ``k<K>`` for every K of ``--ks``
  trains both stages at the config's budget (the selection stage only where K > ``selection.top_n``, and with
  ``--select-ks`` only for those K: Table 4.2 reads best of K, which the generation stage alone sets; ``k1`` is
  the single-hypothesis model), and ``k<M>-no-msf`` trains a selector without the Model-Specific Feature on the
  generator of ``k<M>`` (``--msf-k``): both use the same Ray Train generation run, which whichever of the two runs
  first trains and the other finds finished. With ``--selector-set``, ``k<K>-<name>`` trains a second selector with
  those selection settings on ``k<K>``'s generator the same way (a selector beyond the dissertation, beside the
  faithful one). Each trial runs its stages as Ray Train runs (:mod:`tune.train`),
  reports every epoch to Tune, then evaluates its kept checkpoint on the test split and reports that too.
- :class:`StudyExport` (a Tune callback) keeps ``test.parquet`` and ``epochs.parquet`` current
  (:mod:`hmh.results.study`); the constant mean-pose baseline is computed once, on this process.
- Resumable: the same command continues a study. Arms already in ``test.parquet`` are skipped (the Parquet files
  are what a study commits, so this holds on another machine too); an arm that was cut short resumes its Ray Train
  runs from their last checkpoints (kept under ``train/``).
- At the end, ``summary.md`` (the three tables with their PASS/FAIL shape checks) and ``plots/``; ``hmh results
  summarize results/<experiment>`` rebuilds the summary from the Parquet files alone.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray.tune

from hmh.config import Config, ConfigError, parse_override, save_config, to_dict
from hmh.eval.report import format_or_dash as _mm
from hmh.results.study import (
    EPOCHS_SCHEMA,
    SELECTOR_SETS,
    TEST_SCHEMA,
    StudyPaths,
    selector_sets,
    test_rows,
    write_study_plots,
    write_summary,
)
from hmh.results.tables import CONSTANT, ExperimentPaths, read_table, val_columns, write_table
from hmh.train.engine import selection_skipped
from tune.cli import add_config_args, echo, main, repo_path
from tune.console import tune_console
from tune.space import apply_params
from tune.train import check_same_config, prepare_config, run_stage, run_two_stage, test_metrics

__all__ = ["Arm", "StudyExport", "arm_trial", "run_study", "study_arms"]

DEFAULT_KS = (1, 4, 8, 16)
DEFAULT_MSF_K = 8


@dataclass(frozen=True)
class Arm:
    """One trial of the study: its name, K, whether the selector uses MSF, top-n, whether it trains a selector,
    the arm whose generator it uses ("" = its own) and its selector's own settings (``key=value`` overrides, the
    ``--selector-set`` of a ``k<K>-<name>`` arm)."""

    name: str
    num_hypotheses: int
    msf: bool
    top_n: int
    select: bool
    generator_of: str = ""
    selector_set: tuple[str, ...] = ()

    def params(self, cfg: Config) -> dict[str, Any]:
        """The dotted config overrides of this arm."""
        return {"model.num_hypotheses": self.num_hypotheses, "selection.top_n": self.top_n,
                "selection.msf": self.msf, "train.selection_epochs": cfg.train.selection_epochs if self.select else 0,
                **dict(_dotted(text) for text in self.selector_set)}

    def fields(self) -> dict[str, Any]:
        """The arm columns of the study's Parquet rows."""
        return {"arm": self.name, "num_hypotheses": self.num_hypotheses, "msf": self.msf, "top_n": self.top_n}


def _dotted(text: str) -> tuple[str, Any]:
    """``"selection.evidence=both"`` -> ``("selection.evidence", "both")``, the value read as ``--set`` reads it."""
    key = text.partition("=")[0].strip()
    value: Any = parse_override(text)
    for part in key.split("."):
        value = value[part]
    return key, value


def _selector_arms(cfg: Config, arms: list[Arm], name: str, selector_set: list[str]) -> list[Arm]:
    """``k<K>-<name>`` after each arm that trains its own selector: the same generator, the selector trained with
    ``selector_set`` (selection settings only). Raises :class:`ConfigError` naming the option and the fault."""
    from tune.search import GENERATION_KEYS

    if not re.fullmatch(r"[a-z][a-z0-9-]*", name) or name == "no-msf":
        raise ConfigError(f"--selector-name {name!r}: expected lower-case letters, digits and '-', not 'no-msf'")
    pairs = [_dotted(text) for text in selector_set]
    for key, _ in pairs:
        if key.startswith(GENERATION_KEYS) or key in ("selection.top_n", "selection.msf", "train.selection_epochs"):
            raise ConfigError(f"--selector-set {key}: the option's arms keep their partner's generator, top-n, MSF "
                              "and selection epochs; set selection settings only (selection.*, loss.jrc*, "
                              "loss.selection_target, loss.rank_weight, optim.selection_lr)")
    out = []
    for arm in arms:
        out.append(arm)
        if arm.select and not arm.generator_of:
            option = Arm(f"{arm.name}-{name}", arm.num_hypotheses, True, arm.top_n, True, arm.name,
                         tuple(selector_set))
            skipped = selection_skipped(apply_params(cfg, option.params(cfg)))  # ConfigError names a bad key
            if skipped:
                raise ConfigError(f"--selector-set {' '.join(selector_set)}: {option.name} would train no "
                                  f"selector ({skipped})")
            out.append(option)
    return out


def study_arms(cfg: Config, ks: list[int], msf_k: int, select_ks: list[int] | None = None,
               selector_name: str = "", selector_set: list[str] | None = None) -> list[Arm]:
    """The arms for ``ks`` (distinct, >= 1), a selector trained for each K > top-n (of ``select_ks`` only, when
    given), the no-MSF arm on ``msf_k``'s generator (0: none; else one of ``ks`` that trains a selector), and with
    ``selector_set`` a ``k<K>-<selector_name>`` arm beside each ``k<K>`` that trains a selector. Raises
    :class:`ConfigError` naming the bad value."""
    if not ks or len(set(ks)) != len(ks) or min(ks) < 1:
        raise ConfigError(f"--ks {' '.join(map(str, ks))}: expected distinct numbers of hypotheses >= 1")
    if select_ks is not None and not set(select_ks) <= set(ks):
        raise ConfigError(f"--select-ks {' '.join(map(str, select_ks))}: expected some of --ks "
                          f"{' '.join(map(str, ks))}")
    top_n = cfg.selection.top_n
    arms = [Arm(f"k{k}", k, True, min(top_n, k), k > top_n and cfg.train.selection_epochs > 0
                and (select_ks is None or k in select_ks)) for k in sorted(ks)]
    if msf_k:
        source = next((a for a in arms if a.num_hypotheses == msf_k), None)
        if source is None or not source.select:
            raise ConfigError(f"--msf-k {msf_k}: expected one of --ks (and of --select-ks, if given) above "
                              f"selection.top_n={top_n} (with train.selection_epochs > 0), so that it trains a "
                              "selector to compare with")
        arms.insert(arms.index(source) + 1, Arm(f"{source.name}-no-msf", msf_k, False, source.top_n, True,
                                                source.name))
    return _selector_arms(cfg, arms, selector_name, selector_set) if selector_set else arms


def arm_trial(params: dict[str, Any], arms: dict[str, dict], base: dict, root: str, ray_root: str) -> None:
    """One Tune trial: the arm ``params["arm"]``'s stages as Ray Train runs named after the arm (so a cut-short arm
    resumes them), every epoch reported to Tune, then its test metrics reported as ``stage: "test"``."""
    arm = Arm(**arms[params["arm"]])
    base_cfg = apply_params(base, {})
    cfg = apply_params(base, arm.params(base_cfg))
    paths = ExperimentPaths(Path(root), ray_root)
    tensorboard = str(paths.tensorboard / arm.name)
    if arm.generator_of:
        source = Arm(**arms[arm.generator_of])
        generation = run_stage(apply_params(base, source.params(base_cfg)), "generation", paths, source.name,
                               echo=echo)
        final = run_stage(cfg, "selection", paths, arm.name, generator_checkpoint=generation.checkpoint,
                          tensorboard_dir=tensorboard, report_to_tune=True, echo=echo)
    else:
        final = run_two_stage(cfg, paths, arm.name, tensorboard_dir=tensorboard, report_to_tune=True, echo=echo).final
    test = test_metrics(cfg, final.checkpoint)
    ray.tune.report({"stage": "test", "samples": test["samples"],
                     **{f"test/{key}": value for key, value in test["metrics"].items()}})


def _headline(metrics: dict[str, Any], prefix: str) -> str:
    """``"final 33.09, best of K 19.42, mean of K 36.33"``: current-frame MPJPE of ``{prefix}<reduction>/...``."""
    return ", ".join(f"{name} {_mm(metrics.get(f'{prefix}{key}/mpjpe_current'))}" for key, name in
                     (("final", "final"), ("best_of_k", "best of K"), ("mean_of_k", "mean of K")))


class _Rows:
    """The study's Parquet rows, keyed, read back from earlier runs and rewritten whole (atomically) on change."""

    def __init__(self, paths: StudyPaths) -> None:
        self.paths = paths
        self.test = {(r["arm"], r["reduction"]): r for r in self._read(paths.test, TEST_SCHEMA)}
        self.epochs = {(r["arm"], r["stage"], r["epoch"]): r for r in self._read(paths.epochs, EPOCHS_SCHEMA)}
        self.selector_sets = selector_sets(paths)  # {arm: its --selector-set}, kept in test.parquet's metadata

    @staticmethod
    def _read(path: Path, schema) -> list[dict]:
        return read_table(path, schema)[0].to_pylist() if path.is_file() else []

    def finished(self) -> set[str]:
        return {arm for arm, _ in self.test}

    def add_test(self, rows: list[dict], arm: Arm | None = None) -> None:
        """Keep ``rows`` (and the settings of ``arm``'s own selector, if it has any) and rewrite test.parquet."""
        self.test.update({(r["arm"], r["reduction"]): r for r in rows})
        if arm is not None and arm.selector_set:
            self.selector_sets[arm.name] = list(arm.selector_set)
        write_table(self.paths.test, sorted(self.test.values(), key=lambda r: (r["num_hypotheses"], r["arm"])),
                    TEST_SCHEMA, {"written": time.time(), SELECTOR_SETS: self.selector_sets})

    def add_epoch(self, row: dict) -> None:
        self.epochs[(row["arm"], row["stage"], row["epoch"])] = row
        write_table(self.paths.epochs, sorted(self.epochs.values(), key=lambda r: (r["arm"], r["stage"] != "generation",
                                                                                    r["epoch"])),
                    EPOCHS_SCHEMA, {"written": time.time()})


class StudyExport(ray.tune.Callback):
    """Writes every report of the study's trials into ``epochs.parquet`` / ``test.parquet`` and prints a line."""

    def __init__(self, paths: StudyPaths, arms: dict[str, dict]) -> None:
        self.paths = paths
        self.arms = arms
        self.rows: _Rows | None = None

    def setup(self, **info) -> None:
        self.rows = _Rows(self.paths)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        rows = self.rows = self.rows or _Rows(self.paths)
        arm = Arm(**self.arms[trial.config["arm"]])
        if result.get("stage") == "test":
            metrics = {key[5:]: value for key, value in result.items() if key.startswith("test/")}
            rows.add_test(test_rows(arm.fields(), metrics, int(result["samples"])), arm)
            echo(f"[study] {arm.name}: test split done | {_headline(metrics, '')} mm")
            return
        row = {**arm.fields(), "stage": result.get("stage"), "epoch": result.get("epoch"),
               "time_total_s": result.get("time_total_s"), **{c: result.get(c) for c in val_columns()}}
        rows.add_epoch(row)
        echo(f"[study] {arm.name}: {row['stage']} epoch {row['epoch']} | val {_headline(row, 'val/')} mm")


def _constant_rows(cfg: Config) -> list[dict]:
    """``test.parquet`` rows of the constant mean-pose baseline (hmh.eval.baseline) of the prepared ``cfg``'s data."""
    from hmh.eval.baseline import constant_errors
    from hmh.train.runner import build_datasets

    datasets = build_datasets(cfg, cfg.data.root)
    fields = {"arm": CONSTANT, "num_hypotheses": 0, "msf": False, "top_n": 0}
    return test_rows(fields, constant_errors(datasets["train"], datasets["test"]), len(datasets["test"]))


def run_study(cfg: Config, ks: list[int], msf_k: int, address: str | None = None,
              select_ks: list[int] | None = None, selector_name: str = "", selector_set: list[str] | None = None
              ) -> int:
    """Run (or continue) the study of ``cfg``; returns 0 when every arm finished, 1 when some failed, 130 when it
    was interrupted."""
    from tune.interrupt import sigint_restored
    from tune.placement import ReleasePlacementGroups
    from tune.resources import DRIVER_CPUS, init_ray
    from tune.search import HEAD_NODE_RESOURCE

    arms = study_arms(cfg, ks, msf_k, select_ks, selector_name, selector_set)
    paths = ExperimentPaths.for_config(cfg.search.storage_path, cfg.search.experiment)
    study = StudyPaths(paths.root)
    check_same_config(paths.config, cfg, f"the study in {paths.root}")
    base_cfg = prepare_config(cfg, progress=sys.stderr.isatty())
    save_config(cfg, paths.config)
    rows = _Rows(study)
    if CONSTANT not in rows.finished():
        rows.add_test(_constant_rows(base_cfg))
    pending = [a for a in arms if a.name not in rows.finished()]
    echo(f"study {cfg.search.experiment!r} in {paths.root}: arms {', '.join(a.name for a in arms)}; "
         + (f"to run: {', '.join(a.name for a in pending)}" if pending else "all finished"))
    failed = 0
    if pending:
        init_ray(address, echo=echo)
        specs = {a.name: asdict(a) for a in arms}
        fn = ray.tune.with_parameters(arm_trial, arms=specs, base=to_dict(base_cfg), root=str(paths.root),
                                      ray_root=paths.ray_root)
        tuner = ray.tune.Tuner(
            ray.tune.with_resources(fn, {"cpu": DRIVER_CPUS, HEAD_NODE_RESOURCE: 0.001}),
            param_space={"arm": ray.tune.grid_search([a.name for a in pending])},
            # One arm at a time: an arm and its no-MSF partner share one Ray Train generation run.
            tune_config=ray.tune.TuneConfig(max_concurrent_trials=1),
            run_config=ray.tune.RunConfig(name=time.strftime("tune-%Y%m%d-%H%M%S"), storage_path=paths.ray_storage,
                                          callbacks=[StudyExport(study, specs), ReleasePlacementGroups(echo=echo)],
                                          failure_config=ray.tune.FailureConfig(max_failures=0),
                                          **tune_console({"stage": "stage"}, {"arm": "arm"})),
        )
        with sigint_restored():  # Tune leaves its own handler, which only asks a finished Tune run to stop
            results = tuner.fit()
        failed = sum(result.error is not None for result in results)
    summary = write_summary(paths.root)
    plots = write_study_plots(paths.root)
    paths.publish()
    echo(summary.read_text())
    echo(f"summary: {summary}; plots: {', '.join(map(str, plots))}")
    return _exit_status([a.name for a in pending if a.name not in _Rows(study).finished()], failed)


def _exit_status(left: list[str], failed: int) -> int:
    """0 when no arm is ``left`` unfinished; 1 (with a line) when some failed; else the study was interrupted
    (Ctrl-C: Tune stops its trials and returns): 130, with a line."""
    if failed:
        echo(f"{failed} arm(s) failed (see the lines above); run the same command again to retry them")
        return 1
    if left:
        echo(f"study interrupted: arm(s) {', '.join(left)} not finished, the others are kept; run the same command "
             "again to continue")
        return 130
    return 0


def run_args(args: argparse.Namespace) -> int:
    from hmh.config import load_config
    from hmh.train.runner import check_inputs

    cfg = load_config(repo_path(args.config), args.overrides)
    check_inputs(cfg, echo)  # before the dataset is built or Ray starts
    return run_study(cfg, args.ks, args.msf_k, args.address, args.select_ks, args.selector_name, args.selector_set)


def build_parser(prog: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or "python -m tune.study", description=__doc__.split("\n\n")[0])
    add_config_args(parser, "tune/configs/reproduce.yaml")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS),
                        help=f"numbers of hypotheses of Table 4.2 (default: {' '.join(map(str, DEFAULT_KS))})")
    parser.add_argument("--msf-k", type=int, default=DEFAULT_MSF_K,
                        help="K of the multi-hypothesis model of Tables 4.1 and 4.3, whose generator also gets a "
                             f"selector without MSF; 0 = no Table 4.3 (default: {DEFAULT_MSF_K})")
    parser.add_argument("--select-ks", type=int, nargs="+", default=None, metavar="K",
                        help="the K whose arms train a selector (default: every K above selection.top_n); Table "
                             "4.2 reads best of K, set by the generation stage alone, so e.g. --select-ks 8 skips "
                             "the selection stage of the other arms")
    parser.add_argument("--selector-set", nargs="+", default=None, metavar="KEY=VALUE",
                        help="selection settings of a second selector for every K that trains one, on the same "
                             "generator: arms k<K>-<--selector-name> beside k<K> (e.g. selection.evidence=both); "
                             "default: none")
    parser.add_argument("--selector-name", default="option",
                        help="the name of those arms' selector (default: option)")
    return parser


if __name__ == "__main__":
    sys.exit(main("tune.study", run_args, build_parser()))
