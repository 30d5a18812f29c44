"""Does the search find good configurations sooner than random search, where the models learn? Tabular, on the
demo's data (the ``bench`` synthetic distribution), over the whole default space.

    python benchmarks/search_learning.py table  [--configs 32] [--out results/benchmarks/search_learning_table.parquet]
    python benchmarks/search_learning.py replay [--table ...] [--seeds 10] [--budget 12] [--out ...search_learning.md]

1. ``table`` trains ``--configs`` configurations drawn at random (seeded) from ``tune/spaces/default.yaml`` (K,
   top-n, both alphas, the five loss weights, the learning rate), plus one more for each (K, selection stage or
   not) cell the draw missed, on ``tune/configs/demo.yaml`` at :data:`BUDGET` with ``hmh.train.runner.
   run_training`` (the code of ``hmh train``), and records every epoch's validation signals (:data:`SIGNALS`:
   mean of K, best of K, label-oracle top-n, hypothesis 0, and the selected top-n once there is a selector), the
   search's objective, the epoch's seconds, and the test split's selected top-n and constant mean pose. Resumable:
   configurations already in the table are skipped; the table is rewritten after each one.
2. ``replay`` runs searches over the table through the real ``ray.tune.Tuner`` with hmh's own searcher
   (``tune.searcher.EpochAwareOptunaSearch``) and ``ASHAScheduler``: each arm's sampler proposes a point of the
   real space, and the trainable reports, epoch by epoch, the curve of the table's nearest configuration with the
   same K and the same stages (:func:`nearest`; distances on each parameter's own scale, log for log-uniform
   ones). The arms (:func:`arms`): random search (the reference), TPE + ASHA from epoch 1 on the mean of K and on
   the generation signal that ranks the configurations best at epoch 1 (:func:`best_signal`; a trial reports it as
   ``train.generation_objective`` would, :func:`reported`), TPE + ASHA whose first rung is the first selection
   epoch (as ``blurhand.yaml``), Optuna's ``GPSampler``, hmh's ``search.scheduler=brief_then_finish``
   (``tune.searcher.BriefThenFinishSearch`` and ``BriefRung``: a finishing trial reports the epochs after the
   brief, :func:`lookup_trainable`) with random and TPE proposals; and, from the table alone, "train briefly, keep
   the top few, finish them" (:func:`brief_then_finish`).

Cost is counted in seconds of training: each reported epoch costs its stage's median seconds over the table (a
selection epoch and a generation epoch cost differently). Every search stops once it has spent ``--budget`` times
the cost of one full trial. The target is random search's median best at the end of that budget; the report
gives, per arm, the lower median cost to reach it (quartiles, the seeds that reach it) as a ratio to random search's,
and each signal's rank agreement (Spearman, over the configurations) with the final at every epoch: what an ASHA
rung at that epoch, on that signal, relies on.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import (  # noqa: E402  (one rule each, shared)
    _quartiles,
    _ranks,
    replay_ray,
    save_anytime_plot,
    write_report,
)

from hmh.results.tables import OBJECTIVE, read_table, write_table  # noqa: E402

EXPERIMENT = "tune/configs/demo.yaml"
SPACE = "tune/spaces/default.yaml"
GENERATION_EPOCHS, SELECTION_EPOCHS = 3, 2
BUDGET = [f"train.generation_epochs={GENERATION_EPOCHS}", f"train.selection_epochs={SELECTION_EPOCHS}"]
SIGNALS = ("mean_of_k", "best_of_k", "label_oracle", "hyp0", "final")  # val/<signal>/mpjpe_current per epoch
DESIGN_SEED = 0
TABLE_SCHEMA = pa.schema([("config_id", pa.int64()), ("params", pa.string()), ("trial_epoch", pa.int64()),
                          ("stage", pa.string()), ("objective", pa.float64()),
                          *((s, pa.float64()) for s in SIGNALS), ("seconds", pa.float64()),
                          ("test_final", pa.float64()), ("test_constant", pa.float64())])


def _base():
    from hmh.config import load_config

    return load_config(EXPERIMENT, BUDGET)


def _space():
    from tune.space import load_space

    return load_space(SPACE, _base())


def cell(params: dict[str, Any]) -> tuple[int, bool]:
    """A configuration's (K, whether it trains a selection stage): the configurations a proposal may map to."""
    k = int(params["model.num_hypotheses"])
    return k, int(params["selection.top_n"]) < k


def design(n: int, seed: int = DESIGN_SEED) -> list[dict[str, Any]]:
    """``n`` points drawn from the space by Optuna's seeded random sampler, then one more for each (K, stages)
    :func:`cell` the draw missed, so that every proposal of a search has a configuration to map to."""
    import optuna

    from tune.space import DefineByRun

    space = _space()
    k_values = next(p.values for p in space.params if p.key == "model.num_hypotheses")
    wanted = {(int(k), selects) for k in k_values for selects in (True, False)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points: list[dict[str, Any]] = []
    for _ in range(100_000):
        trial = study.ask()
        DefineByRun(space)(trial)
        point = dict(trial.params)
        missing = wanted - {cell(p) for p in points}
        if len(points) < n or cell(point) in missing:
            points.append(point)
        if len(points) >= n and not missing - {cell(point)}:
            return points
    raise RuntimeError("design: a (K, stages) cell of the space was never drawn")


def build_table(out: Path, configs: int, echo: Callable[[str], None] = print) -> Path:
    """Train every design point (skipping those already in ``out``) and write their per-epoch signals."""
    from hmh.config import load_config
    from hmh.train.runner import run_training

    rows = read_table(out, TABLE_SCHEMA)[0].to_pylist() if out.is_file() else []
    done = {r["config_id"] for r in rows}
    points = design(configs)
    for config_id, point in enumerate(points):
        if config_id in done:
            continue
        cfg = load_config(EXPERIMENT, BUDGET + [f"{k}={v}" for k, v in point.items()])
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hmh-search-learning-") as folder:
            result = run_training(cfg, folder, echo=lambda _line: None, progress=False)
        history = result.history["generation"] + result.history.get("selection", [])
        total = time.perf_counter() - start
        trained = sum(h["train/seconds"] for h in history)
        for epoch, metrics in enumerate(history, start=1):  # evaluation and start-up shared by the epochs' training
            rows.append({"config_id": config_id, "params": json.dumps(point, sort_keys=True), "trial_epoch": epoch,
                         "stage": "generation" if epoch <= cfg.train.generation_epochs else "selection",
                         "objective": metrics.get(OBJECTIVE, math.nan),
                         **{s: metrics.get(f"val/{s}/mpjpe_current", math.nan) for s in SIGNALS},
                         "seconds": total * metrics["train/seconds"] / trained,
                         "test_final": result.test_metrics["final/mpjpe_current"],
                         "test_constant": result.test_metrics.get("constant/mpjpe_current", math.nan)})
        write_table(out, rows, TABLE_SCHEMA, {"command": "python benchmarks/search_learning.py table "
                                              f"--configs {configs}", "experiment": EXPERIMENT,
                                              "budget": BUDGET, "space": SPACE})
        echo(f"config {config_id + 1}/{len(points)}: test final {result.test_metrics['final/mpjpe_current']:.2f} "
             f"mm, {len(history)} epochs, {total:.0f} s")
    return out


@dataclass(frozen=True)
class Tabulated:
    """One tabulated configuration: its parameters, per-epoch rows (trial_epoch order) and test figures."""

    config_id: int
    params: dict[str, Any]
    epochs: list[dict[str, Any]]

    @property
    def final(self) -> float:
        return self.epochs[-1]["objective"]


def load_configs(table: Path, configs: int | None = None) -> list[Tabulated]:
    """The table's configurations; every curve complete (``configs``: as many as the table must hold)."""
    rows = read_table(table, TABLE_SCHEMA)[0].to_pylist()
    grouped: dict[int, list[dict]] = {}
    for r in rows:  # a signal without a value (the selected top-n before the selection stage) is read as nan
        grouped.setdefault(r["config_id"], []).append({k: math.nan if v is None else v for k, v in r.items()})
    out = []
    for config_id, epochs in sorted(grouped.items()):
        epochs.sort(key=lambda r: r["trial_epoch"])
        params = json.loads(epochs[0]["params"])
        expected = GENERATION_EPOCHS + (SELECTION_EPOCHS if cell(params)[1] else 0)
        if [r["trial_epoch"] for r in epochs] != list(range(1, expected + 1)):
            raise SystemExit(f"{table}: configuration {config_id} has epochs {[r['trial_epoch'] for r in epochs]}, "
                             f"expected 1-{expected}; finish it with `python benchmarks/search_learning.py table`")
        out.append(Tabulated(config_id, params, epochs))
    if configs is not None and len(out) < configs:
        raise SystemExit(f"{table}: {len(out)} of {configs} configurations; finish it with "
                         "`python benchmarks/search_learning.py table`")
    return out


def stage_seconds(configs: list[Tabulated]) -> dict[str, float]:
    """The median seconds of a generation and of a selection epoch over the table."""
    return {stage: statistics.median(r["seconds"] for c in configs for r in c.epochs if r["stage"] == stage)
            for stage in ("generation", "selection")}


def _coordinates(params: dict[str, Any], space) -> dict[str, float]:
    """Each non-categorical parameter on [0, 1] of its own (trial-resolved) range, log for log-uniform ones."""
    out: dict[str, float] = {}
    for p in space.params:
        if p.kind == "categorical":
            continue
        low, high = space.bounds(p, params)
        value = float(params[p.key])
        if p.kind == "loguniform" or p.log:
            low, high, value = math.log(low), math.log(high), math.log(value)
        out[p.key] = 0.0 if high == low else (value - low) / (high - low)
    return out


def nearest(params: dict[str, Any], configs: list[Tabulated], space) -> Tabulated:
    """The tabulated configuration of the same :func:`cell` closest to ``params`` (Euclidean, on the parameters'
    own scales)."""
    mine = _coordinates(params, space)
    same = [c for c in configs if cell(c.params) == cell(params)]
    if not same:
        raise ValueError(f"no tabulated configuration has K={cell(params)[0]} "
                         f"{'with' if cell(params)[1] else 'without'} a selection stage")
    return min(same, key=lambda c: math.dist(list(mine.values()),
                                             [_coordinates(c.params, space)[k] for k in mine]))


def reported(row: dict[str, Any], selects: bool, signal: str) -> float:
    """The objective a trial reports at a tabulated epoch when ``train.generation_objective`` is ``signal``: the
    signal during a generation stage that a selection stage follows (``selects``), else the table's objective (the
    selected top-n; for top_n = K, the mean of K from the first epoch, as :func:`hmh.train.loop.objective_source`).
    ``signal="objective"``: the table's objective throughout (the generation objective the table was trained with)."""
    return row[signal] if selects and row["stage"] == "generation" and signal != "objective" else row["objective"]


def lookup_trainable(config: dict, configs: list[Tabulated], space, signal: str = "objective", brief: int = 0
                     ) -> None:
    """A Tune trainable that reports the nearest tabulated configuration's curve epoch by epoch (:func:`reported`);
    a trial that finishes another (``search.scheduler=brief_then_finish``) reports the epochs after the ``brief``
    that one trained, as a real one resumes its Train runs."""
    import ray.tune

    from tune.searcher import continued

    params, continues = continued(config)
    tabulated = nearest(params, configs, space)
    for row in tabulated.epochs[brief if continues else 0:]:
        ray.tune.report({OBJECTIVE: reported(row, cell(tabulated.params)[1], signal), "trial_epoch": row["trial_epoch"],
                         "stage": row["stage"]})


@dataclass(frozen=True)
class Arm:
    name: str
    sampler: str  # search.sampler (random | tpe), or gp: Optuna's GPSampler
    asha: bool = False
    grace: int = 1  # ASHA's first rung (trial-epoch)
    reduction: int = 2  # ASHA's reduction factor (search.reduction_factor): it keeps the top 1/reduction at a rung
    startup: int = 10  # TPE's random start-up trials (search.tpe_startup_trials)
    multivariate: bool = False
    signal: str = "objective"  # train.generation_objective (:func:`reported`)
    rounds: int = 0  # > 0: search.scheduler=brief_then_finish with rounds of this many trials (grace: the brief;
    # reduction: of a round, the top 1/reduction are finished)

    def make_sampler(self, seed: int):
        import optuna

        from hmh.config import SearchConfig
        from tune.search import optuna_sampler

        if self.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        return optuna_sampler(SearchConfig(sampler=self.sampler, seed=seed, tpe_startup_trials=self.startup,
                                           tpe_multivariate=self.multivariate))


FIRST_SELECTION_EPOCH = GENERATION_EPOCHS + 1
GENERATION_SIGNALS = ("mean_of_k", "best_of_k", "label_oracle", "hyp0")  # train.generation_objective's choices
REFERENCE = "random, no early stopping (the reference)"


def arms(signal: str) -> list[Arm]:
    """The searches replayed through Tune: random search, TPE + ASHA from epoch 1 on the mean of K (hmh's first
    default) and on ``signal`` (the generation signal that ranks best at epoch 1, :func:`best_signal`), TPE + ASHA
    from the first selection epoch (as ``blurhand.yaml``), ``GPSampler``."""
    out = [Arm(REFERENCE, "random"),
           Arm("TPE + ASHA from epoch 1 on mean_of_k (as demo.yaml)", "tpe", asha=True, signal="mean_of_k")]
    if signal != "mean_of_k":
        out.append(Arm(f"TPE + ASHA from epoch 1 on {signal}", "tpe", asha=True, signal=signal))
    return [*out, Arm("TPE (4 start-up, multivariate) + ASHA from epoch 1, keeping the top quarter", "tpe",
                      asha=True, grace=1, reduction=4, startup=4, multivariate=True),
            Arm("TPE (4 start-up, multivariate) + ASHA from the first selection epoch", "tpe", asha=True,
                grace=FIRST_SELECTION_EPOCH, startup=4, multivariate=True),
            Arm("GPSampler, no early stopping", "gp"),
            Arm("search.scheduler=brief_then_finish: 1 epoch, finish the top 2 of 8 (random)", "random", grace=1,
                reduction=4, rounds=8),
            Arm("search.scheduler=brief_then_finish: 1 epoch, finish the top 2 of 8 (TPE, 4 start-up, "
                "multivariate)", "tpe", grace=1, reduction=4, startup=4, multivariate=True, rounds=8)]


def brief_arms(signal: str) -> dict[str, dict[str, Any]]:
    """"Train briefly, keep the top few, finish them" (:func:`brief_then_finish`): one epoch ranked by ``signal``,
    and up to the first selection epoch."""
    return {f"train 1 epoch, keep the top 2 of 8 by {signal}, finish them": {"brief": 1, "signal": signal},
            "train to the first selection epoch, keep the top 2 of 8, finish them": {"brief": FIRST_SELECTION_EPOCH}}


def best_signal(configs: list[Tabulated], epoch: int = 1) -> str:
    """The generation signal whose rank agreement with the final (:func:`signal_agreement`) is highest at
    trial-epoch ``epoch``: the one an ASHA rung there should read."""
    agreement = signal_agreement(configs)
    return max(GENERATION_SIGNALS, key=lambda s: -math.inf if math.isnan(agreement[s][epoch - 1])
               else agreement[s][epoch - 1])


def replay(arm: Arm, seed: int, budget_s: float, configs: list[Tabulated], seconds: dict[str, float]
           ) -> list[tuple[float, float]]:
    """One search of ``arm`` over the table, stopped once it has spent ``budget_s`` seconds of training: the
    anytime curve ``[(seconds spent, best finished trial's objective)]``, one point per reported epoch."""
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from hmh.config import to_dict
    from tune.searcher import BriefRung, BriefThenFinishSearch, EpochAwareOptunaSearch
    from tune.space import DefineByRun

    space, base = _space(), to_dict(_base())
    epochs_total = GENERATION_EPOCHS + SELECTION_EPOCHS
    curve: list[tuple[float, float]] = []
    spent, best = [0.0], [math.inf]

    class Record(ray.tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            spent[0] += seconds[result["stage"]]
            last = result["trial_epoch"] == GENERATION_EPOCHS + (
                SELECTION_EPOCHS if cell(trial.config)[1] else 0)
            if last:
                best[0] = min(best[0], float(result[OBJECTIVE]))
            curve.append((spent[0], best[0]))

    class Budget(ray.tune.Stopper):  # the whole search stops once it has spent the budget
        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return spent[0] >= budget_s

    scheduler = (ASHAScheduler(time_attr="trial_epoch", max_t=epochs_total, grace_period=arm.grace,
                               reduction_factor=arm.reduction, stop_last_trials=False) if arm.asha
                 else BriefRung(arm.grace) if arm.rounds else FIFOScheduler())
    with tempfile.TemporaryDirectory(prefix="hmh-search-learning-") as storage:
        options = dict(base=base, space=DefineByRun(space), metric=OBJECTIVE, mode="min",
                       sampler=arm.make_sampler(seed), study_name="replay",
                       storage=optuna.storages.RDBStorage(f"sqlite:///{storage}/optuna.db"))
        searcher = (BriefThenFinishSearch(num_samples=10_000, round_trials=arm.rounds, reduction_factor=arm.reduction,
                                          echo=None, **options) if arm.rounds
                    else EpochAwareOptunaSearch(**options))
        tuner = ray.tune.Tuner(
            ray.tune.with_parameters(lookup_trainable, configs=configs, space=space, signal=arm.signal,
                                     brief=arm.grace),
            tune_config=ray.tune.TuneConfig(metric=OBJECTIVE, mode="min", search_alg=searcher, scheduler=scheduler,
                                            num_samples=10_000, max_concurrent_trials=1, reuse_actors=True),
            run_config=ray.tune.RunConfig(storage_path=storage, name="replay", verbose=0, callbacks=[Record()],
                                          stop=Budget()),
        )
        tuner.fit()
    return curve


def proposals(seed: int, configs: list[Tabulated]) -> Iterator[Tabulated]:
    """Random search's proposals outside Tune: points of the space from Optuna's ``RandomSampler(seed)`` (as the
    reference arm's sampler), each read as its :func:`nearest` tabulated configuration, as a replayed trial reads
    its own; so both draw configurations with the same odds."""
    import optuna

    from tune.space import DefineByRun

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while True:
        trial = study.ask()
        DefineByRun(space)(trial)
        yield nearest(trial.params, configs, space)


def brief_then_finish(seed: int, budget_s: float, configs: list[Tabulated], seconds: dict[str, float],
                      signal: str = "objective", brief: int = 1, draw: int = 8, keep: int = 2
                      ) -> list[tuple[float, float]]:
    """"Train briefly, keep the top few, finish them", in rounds until the budget is spent: draw ``draw``
    configurations as random search does (:func:`proposals`, the same ``seed``), train each for ``brief`` epochs,
    keep the ``keep`` lowest by what a trial reports at that epoch (:func:`reported` of ``signal``), and finish
    them. The anytime curve, as :func:`replay`'s."""
    drawn = proposals(seed, configs)
    curve: list[tuple[float, float]] = []
    spent, best = 0.0, math.inf

    def spend(config: Tabulated, epochs: range) -> bool:
        nonlocal spent, best
        for e in epochs:
            row = config.epochs[e]
            spent += seconds[row["stage"]]
            if e == len(config.epochs) - 1:
                best = min(best, row["objective"])
            curve.append((spent, best))
            if spent >= budget_s:
                return False
        return True

    while True:
        round_ = [next(drawn) for _ in range(draw)]
        for config in round_:
            if not spend(config, range(min(brief, len(config.epochs)))):
                return curve
        kept = sorted(round_, key=lambda c: reported(c.epochs[min(brief, len(c.epochs)) - 1], cell(c.params)[1],
                                                     signal))[:keep]
        for config in kept:
            if not spend(config, range(min(brief, len(config.epochs)), len(config.epochs))):
                return curve


def best_at(curve: list[tuple[float, float]], budget_s: float) -> float:
    """The best finished objective once ``budget_s`` seconds are spent."""
    return min((best for spent, best in curve if spent <= budget_s + 1e-9), default=math.inf)


def seconds_to_reach(curve: list[tuple[float, float]], target: float) -> float:
    """Seconds spent until the curve reaches ``target`` (inf if it never does)."""
    return next((spent for spent, best in curve if best <= target), math.inf)


def signal_agreement(configs: list[Tabulated]) -> dict[str, list[float]]:
    """Per signal, per trial-epoch: Spearman's rank correlation, over the configurations that train a selection
    stage, of the signal at that epoch with the final (validation, last epoch's selected top-n); nan where the
    signal has no value."""
    selecting = [c for c in configs if cell(c.params)[1]]
    finals = _ranks([c.final for c in selecting])
    out: dict[str, list[float]] = {}
    for signal in (*SIGNALS, "objective"):
        values = []
        for e in range(GENERATION_EPOCHS + SELECTION_EPOCHS):
            column = [c.epochs[e][signal] for c in selecting]
            values.append(math.nan if any(math.isnan(v) for v in column) or len(set(column)) < 2
                          else statistics.correlation(_ranks(column), finals))
        out[signal] = values
    return out


def report(runs: dict[str, list[list[tuple[float, float]]]], target: float, configs: list[Tabulated],
           seconds: dict[str, float], budget_s: float, args: argparse.Namespace) -> str:
    """The Markdown report (module docstring)."""
    costs = {name: [seconds_to_reach(c, target) for c in curves] for name, curves in runs.items()}
    ref = statistics.median_low(costs[REFERENCE])
    test = [c.epochs[-1]["test_final"] for c in configs]
    constant = statistics.median(c.epochs[-1]["test_constant"] for c in configs)

    def fmt(x: float) -> str:
        return ">budget" if math.isinf(x) else f"{x / 60:.0f} min"

    lines = [
        "# Search efficiency where the models learn (tabular replay through Tuner + hmh's searcher + ASHA)", "",
        f"Command: `python benchmarks/search_learning.py replay --table {args.table} --seeds {args.seeds} "
        f"--budget {args.budget}`", "",
        f"{len(configs)} configurations of `{SPACE}` on `{EXPERIMENT}` with {' '.join(BUDGET)}. Test split: the "
        f"configurations' selected top-n spans {min(test):.2f}-{max(test):.2f} mm against the constant mean pose "
        f"{constant:.2f} mm ({min(test) / constant:.2f}x-{max(test) / constant:.2f}x). One epoch costs "
        f"{seconds['generation']:.0f} s (generation) or {seconds['selection']:.0f} s (selection), the table's "
        f"medians; every search spends {budget_s / 60:.0f} min ({args.budget} full trials' worth); "
        f"{args.seeds} seeds per arm.", "",
        f"## Cost to reach random search's median best ({target:.2f} mm)", "",
        "| arm | cost: lower median (quartiles) | vs random search | seeds reaching it | best at the end: median |",
        "|---|---:|---:|---:|---:|"]
    for name, values in costs.items():  # the lower median: random search reaches its own median best in half its seeds
        low, _, high = _quartiles(values)
        mid = statistics.median_low(values)
        ratio = "-" if math.isinf(mid) or math.isinf(ref) else f"{mid / ref:.2f}x"
        reached = sum(not math.isinf(v) for v in values)
        end = statistics.median(best_at(c, budget_s) for c in runs[name])
        lines.append(f"| {name} | {fmt(mid)} ({fmt(low)}, {fmt(high)}) | {ratio} | {reached}/{len(values)} | "
                     f"{end:.2f} |")
    agreement = signal_agreement(configs)
    epochs = GENERATION_EPOCHS + SELECTION_EPOCHS
    lines += ["", "## Which early signal ranks the configurations by their final", "",
              "Spearman's rank correlation, over the configurations that train a selector, of each validation "
              "signal at each trial-epoch with the final (the selected top-n after the last epoch):", "",
              "| signal | " + " | ".join(f"epoch {e}" for e in range(1, epochs + 1)) + " |",
              "|---|" + "---:|" * epochs]
    for signal, values in agreement.items():
        cells = " | ".join("-" if math.isnan(v) else f"{v:.2f}" for v in values)
        lines.append(f"| {signal} | {cells} |")
    return "\n".join(lines)


def plot(runs: dict[str, list[list[tuple[float, float]]]], target: float, budget_s: float, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [budget_s * i / 200 for i in range(1, 201)]
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for name, curves in runs.items():
        median = [statistics.median(best_at(c, t) for c in curves) for t in grid]
        xs = [t / 60 for t, v in zip(grid, median, strict=True) if not math.isinf(v)]
        ax.plot(xs, [v for v in median if not math.isinf(v)], label=name)
    ax.axhline(target, color="grey", linestyle=":", linewidth=1, label="target: random search's median best")
    ax.set_xlabel("training minutes spent")
    return save_anytime_plot(plt, fig, ax, "Anytime curves where the models learn: median over seeds", out, columns=1)


def run_replay(args: argparse.Namespace) -> int:
    configs = load_configs(args.table)
    seconds = stage_seconds(configs)
    full = max(sum(seconds[r["stage"]] for r in c.epochs) for c in configs)
    budget_s = args.budget * full
    signal = best_signal(configs)
    runs: dict[str, list[list[tuple[float, float]]]] = {}
    with replay_ray():
        for arm in arms(signal):
            runs[arm.name] = []
            for seed in range(args.seeds):
                runs[arm.name].append(replay(arm, seed, budget_s, configs, seconds))
                print(f"{arm.name}, seed {seed}: best {best_at(runs[arm.name][-1], budget_s):.2f} mm",
                      file=sys.stderr, flush=True)
    for name, options in brief_arms(signal).items():
        runs[name] = [brief_then_finish(seed, budget_s, configs, seconds, **options) for seed in range(args.seeds)]
    target = statistics.median(best_at(c, budget_s) for c in runs[REFERENCE])
    write_report(args.out, report(runs, target, configs, seconds, budget_s, args),
                 plot(runs, target, budget_s, args.out.with_suffix(".png")))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="train the design once and write its per-epoch signals")
    table.add_argument("--configs", type=int, default=32, help="random configurations to draw (default: 32)")
    table.add_argument("--out", type=Path, default=Path("results/benchmarks/search_learning_table.parquet"))
    rep = sub.add_parser("replay", help="replay the searches over the table and report")
    rep.add_argument("--table", type=Path, default=Path("results/benchmarks/search_learning_table.parquet"))
    rep.add_argument("--seeds", type=int, default=10, help="searches per arm (default: 10)")
    rep.add_argument("--budget", type=int, default=12, help="each search's budget in full trials (default: 12)")
    rep.add_argument("--out", type=Path, default=Path("results/benchmarks/search_learning.md"))
    args = parser.parse_args(argv)
    if args.command == "table":
        build_table(args.out, args.configs)
        return 0
    return run_replay(args)


if __name__ == "__main__":
    sys.exit(main())
