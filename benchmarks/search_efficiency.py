"""Does the search earn its keep? TPE (+ASHA) against random search (+ASHA, and without early stopping), tabular.

    python benchmarks/search_efficiency.py table  [--out results/benchmarks/search_table.parquet]
    python benchmarks/search_efficiency.py replay [--table results/benchmarks/search_table.parquet] [--seeds 10]
                                                  [--budget 96] [--out results/benchmarks/search_efficiency.md]

The established tabular method (as in NAS-Bench / HPOBench): training a model for every trial of every arm and
seed costs too much, so

1. ``table`` trains once every configuration of the grid :data:`GRID` (48 of them; seeded, the same data) with
   ``hmh.train.runner.run_training`` (the code of ``hmh train``) on the ``demo`` experiment at :data:`BUDGET`, and
   records every epoch's validation objective (the search's own: the mean of all K during generation, the selected
   top-n during selection, current-frame MPJPE in mm) in a Parquet table. Resumable: configurations already in
   the table are skipped; the table is rewritten after each one.
2. ``replay`` runs searches over that table **through the real** ``ray.tune.Tuner`` **with** ``OptunaSearch``
   **and** ``ASHAScheduler``, as ``tune.search`` builds them (metric, mode, ``trial_epoch`` as ASHA's time,
   grace period and reduction factor of the demo): the trainable looks the configuration's curve up and reports
   it epoch by epoch instead of training. One trial at a time, so the order of trial-epochs is the search's.
   Arms (:data:`ARMS`): TPE + ASHA as ``tune.search`` runs it (Optuna's default TPE, 10 random start-up
   trials, ASHA's rungs from the first epoch), TPE with 4 start-up trials and multivariate (with ASHA, with ASHA
   whose first rung is the first selection epoch, without early stopping), default TPE without early stopping,
   random + ASHA, random without early stopping.
   Each arm runs ``--seeds`` seeds, each search stopped once it has spent ``--budget`` trial-epochs (the same
   compute for every arm: 96 = 16 trials run in full; an arm with early stopping fits more trials into it).

A trial's result is its objective at the full budget (a trial ASHA stopped has none, as in the product, whose
best trial must have finished). Per arm and seed, the cost of a target objective is the number of trial-epochs
spent until the best finished trial reaches it (censored at the budget). The targets (:func:`targets`): the
objective that random search without early stopping reaches in every seed within the budget (its worst seed's
best), and the third-best and the best configuration of the table. The report gives, per arm and target, the
median and quartiles of the cost, the share of seeds that reach it, the ratio to random search without early
stopping, and the anytime curve (median best objective against trial-epochs) as a plot; and, from the table
alone, how well each trial-epoch's objective ranks the configurations by their final one (Spearman), which is what
an ASHA rung at that epoch relies on.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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

from hmh.config import SearchConfig
from hmh.files import atomic
from hmh.results.tables import OBJECTIVE, read_table, write_table

GRID: dict[str, list[Any]] = {  # 3 x 4 x 4 = 48 configurations
    "model.num_hypotheses": [2, 4, 8],
    "optim.lr": [1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3],
    "loss.diversity": [0.01, 0.03, 0.1, 0.3],
}
GENERATION_EPOCHS = 4
# on tune/configs/demo.yaml, with the data the committed table was trained on: 240 images of the full synthetic
# distribution, 192 a training epoch, where no configuration beats the constant mean pose (docs/search.md)
BUDGET = [f"train.generation_epochs={GENERATION_EPOCHS}", "train.selection_epochs=2", "selection.top_n=1",
          "data.synthetic_profile=full", "data.synthetic_train=240", "data.synthetic_test=64",
          "data.synthetic_size=96", "data.val_fraction=0.2", "data.max_eval_samples=32",
          "data.max_train_samples=192", "optim.selection_lr=1.0e-3"]
EXPERIMENT = "tune/configs/demo.yaml"
GRACE, REDUCTION = 1, 2  # ASHA, as the demo search
TABLE_SCHEMA = pa.schema([("config_id", pa.int64()), *((k, pa.float64()) for k in GRID),
                          ("trial_epoch", pa.int64()), ("stage", pa.string()), ("objective", pa.float64()),
                          ("seconds", pa.float64())])


@dataclass(frozen=True)
class Arm:
    name: str
    sampler: str  # tpe | random
    asha: bool
    startup: int = SearchConfig.tpe_startup_trials  # TPE's random start-up trials (search.tpe_startup_trials)
    multivariate: bool = False
    grace: int = GRACE  # ASHA's first rung (trial-epoch); capped at the table's epochs

    def make_sampler(self, seed: int):
        """Random search, or TPE, built by ``tune.search`` itself from the ``search.*`` settings of this arm."""
        from tune.search import optuna_sampler

        return optuna_sampler(SearchConfig(sampler=self.sampler, seed=seed, tpe_startup_trials=self.startup,
                                           tpe_multivariate=self.multivariate))


FIRST_SELECTION_EPOCH = GENERATION_EPOCHS + 1  # the first trial-epoch whose objective is the selected top-n
ARMS = (Arm("TPE + ASHA (tune.search)", "tpe", True),
        Arm("TPE, 4 start-up, multivariate + ASHA", "tpe", True, 4, True),
        Arm("TPE, 4 start-up, multivariate + ASHA from the selection stage", "tpe", True, 4, True,
            FIRST_SELECTION_EPOCH),
        Arm("TPE, no early stopping", "tpe", False),
        Arm("TPE, 4 start-up, multivariate, no early stopping", "tpe", False, 4, True),
        Arm("random + ASHA", "random", True),
        Arm("random, no early stopping", "random", False))
REFERENCE = ARMS[-1].name


def grid_points() -> list[dict[str, Any]]:
    """The 48 configurations of :data:`GRID`, in a fixed order (``config_id`` = position)."""
    return [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]


def build_table(out: Path, echo: Callable[[str], None] = print) -> Path:
    """Train every grid point (skipping those already in ``out``) and write their per-epoch objectives."""
    from hmh.config import load_config
    from hmh.train.runner import run_training

    rows = read_table(out, TABLE_SCHEMA)[0].to_pylist() if out.is_file() else []
    done = {r["config_id"] for r in rows}
    points = grid_points()
    for config_id, point in enumerate(points):
        if config_id in done:
            continue
        cfg = load_config(EXPERIMENT, BUDGET + [f"{k}={v}" for k, v in point.items()])
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hmh-search-table-") as folder:
            result = run_training(cfg, folder, echo=lambda _line: None, progress=False)
        seconds = time.perf_counter() - start
        history = result.history["generation"] + result.history.get("selection", [])
        for epoch, metrics in enumerate(history, start=1):
            rows.append({"config_id": config_id, **point, "trial_epoch": epoch,
                         "stage": "generation" if epoch <= cfg.train.generation_epochs else "selection",
                         "objective": metrics.get(OBJECTIVE, math.nan), "seconds": seconds / len(history)})
        write_table(out, rows, TABLE_SCHEMA, {"command": "python benchmarks/search_efficiency.py table",
                                               "experiment": EXPERIMENT, "budget": BUDGET})
        final = history[-1].get(OBJECTIVE, math.nan)
        echo(f"config {config_id + 1}/{len(points)} {point}: final objective {final:.2f} mm ({seconds:.0f} s)")
    return out


def load_curves(table: Path) -> tuple[dict[tuple, list[float]], int]:
    """``{(value per GRID key): [objective per trial_epoch]}`` and the epochs per curve; every curve complete."""
    rows = read_table(table, TABLE_SCHEMA)[0].to_pylist()
    curves: dict[tuple, dict[int, float]] = {}
    for r in rows:
        curves.setdefault(tuple(r[k] for k in GRID), {})[r["trial_epoch"]] = r["objective"]
    epochs = max(len(c) for c in curves.values())
    broken = [key for key, c in curves.items() if sorted(c) != list(range(1, epochs + 1))]
    if broken or len(curves) != len(grid_points()):
        raise SystemExit(f"{table}: {len(curves)} of {len(grid_points())} configurations, incomplete curves: "
                         f"{broken[:3]}; finish it with `python benchmarks/search_efficiency.py table`")
    return {key: [c[e] for e in range(1, epochs + 1)] for key, c in curves.items()}, epochs


def lookup_trainable(config: dict, curves: dict) -> None:
    """A Tune trainable that reports the tabulated curve of ``config`` epoch by epoch."""
    import ray.tune

    for epoch, objective in enumerate(curves[tuple(float(config[k]) for k in GRID)], start=1):
        ray.tune.report({"objective": objective, "trial_epoch": epoch})


def replay(arm: Arm, seed: int, budget: int, curves: dict, epochs: int) -> list[tuple[str, int, float]]:
    """One search of ``arm`` over the table, stopped after ``budget`` trial-epochs: the ``(trial_id, trial_epoch,
    objective)`` reports in order (``budget`` of them)."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    reports: list[tuple[str, int, float]] = []

    class Record(ray.tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            reports.append((trial.trial_id, int(result["trial_epoch"]), float(result["objective"])))

    class Budget(ray.tune.Stopper):  # the whole search stops once it has spent ``budget`` trial-epochs
        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return len(reports) >= budget

    scheduler = (ASHAScheduler(time_attr="trial_epoch", max_t=epochs, grace_period=min(arm.grace, epochs),
                               reduction_factor=REDUCTION, stop_last_trials=False) if arm.asha else FIFOScheduler())
    searcher = OptunaSearch(metric="objective", mode="min", sampler=arm.make_sampler(seed))
    with tempfile.TemporaryDirectory(prefix="hmh-search-replay-") as storage:
        tuner = ray.tune.Tuner(
            ray.tune.with_parameters(lookup_trainable, curves=curves),
            param_space={k: ray.tune.choice(v) for k, v in GRID.items()},
            tune_config=ray.tune.TuneConfig(metric="objective", mode="min", search_alg=searcher, scheduler=scheduler,
                                            num_samples=budget, max_concurrent_trials=1, reuse_actors=True),
            run_config=ray.tune.RunConfig(storage_path=storage, name="replay", verbose=0, callbacks=[Record()],
                                          stop=Budget()),
        )
        tuner.fit()
    return reports[:budget]


def anytime(reports: list[tuple[str, int, float]], epochs: int) -> list[float]:
    """Best objective of a finished trial after each trial-epoch (inf before the first finishes)."""
    best, curve = math.inf, []
    for _trial, epoch, objective in reports:
        if epoch == epochs:
            best = min(best, objective)
        curve.append(best)
    return curve


def cost_to_reach(curve: list[float], target: float) -> float:
    """Trial-epochs until the curve reaches ``target`` (inf if it never does within the curve's budget)."""
    return next((i + 1.0 for i, best in enumerate(curve) if best <= target), math.inf)


def targets(runs: dict[str, list[list[float]]], finals: list[float]) -> dict[str, float]:
    """The objectives a search is timed to: what random search without early stopping reaches in every seed, and
    the third-best and the best of the table's configurations (``finals``: every configuration's result)."""
    ranked = sorted(finals)
    return {f"{REFERENCE}'s worst seed": max(c[-1] for c in runs[REFERENCE]),
            "a top-3 configuration": ranked[2], "the best configuration": ranked[0]}


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = float(rank)
    return ranks


def rank_agreement(curves: dict[tuple, list[float]], epochs: int) -> list[float]:
    """Per trial-epoch e (1..epochs): Spearman's rank correlation, over the table's configurations, of the
    objective at epoch e with the final one: how well a rung at e ranks the trials by what they end at."""
    finals = _ranks([c[-1] for c in curves.values()])
    return [statistics.correlation(_ranks([c[e] for c in curves.values()]), finals) for e in range(epochs)]


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(sorted(values), n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def report(runs: dict[str, list[list[float]]], goals: dict[str, float], agreement: list[float],
           args: argparse.Namespace) -> str:
    """The Markdown report: per target, per arm, the cost's median (quartiles), seeds reaching it, ratio; the
    end-of-budget best per arm; the rank agreement of each epoch's objective with the final one."""
    epochs = len(agreement)

    def fmt(x: float) -> str:
        return f">{args.budget}" if math.isinf(x) else f"{x:.0f}"

    lines = [
        "# Search efficiency (tabular replay through Tuner + OptunaSearch + ASHA)", "",
        f"Command: `python benchmarks/search_efficiency.py replay --table {args.table} --seeds {args.seeds} "
        f"--budget {args.budget}`", "",
        f"{len(grid_points())} configurations of {', '.join(GRID)} on `{EXPERIMENT}` with {' '.join(BUDGET)} "
        f"({epochs} epochs each). Every search spends {args.budget} trial-epochs ({args.budget // epochs} trials "
        f"run in full); {args.seeds} seeds per arm. Cost = trial-epochs until the best finished trial reaches the "
        f"target (`>{args.budget}`: not within the budget).",
    ]
    for goal, target in goals.items():
        costs = {name: [cost_to_reach(c, target) for c in curves] for name, curves in runs.items()}
        ref = statistics.median(costs[REFERENCE])
        lines += ["", f"## Target: {goal}, {target:.2f} mm", "",
                  "| arm | trial-epochs: median (quartiles) | vs random, no early stopping | seeds reaching it |",
                  "|---|---:|---:|---:|"]
        for name, values in costs.items():
            low, mid, high = _quartiles(values)
            ratio = "-" if math.isinf(mid) or math.isinf(ref) else f"{mid / ref:.2f}x"
            reached = sum(not math.isinf(v) for v in values)
            lines.append(f"| {name} | {fmt(mid)} ({fmt(low)}-{fmt(high)}) | {ratio} | {reached}/{len(values)} |")
    lines += ["", "| arm | best finished trial at the end of the budget: median (quartiles), mm |", "|---|---:|"]
    for name, curves in runs.items():
        low, mid, high = _quartiles([c[-1] for c in curves])
        lines.append(f"| {name} | {mid:.2f} ({low:.2f}-{high:.2f}) |")
    lines += ["", "How well an ASHA rung at each trial-epoch ranks the configurations by their final objective "
              "(Spearman's rank correlation over the table):", "",
              "| trial-epoch | stage (objective) | rank correlation with the final |", "|---:|---|---:|"]
    for e, rho in enumerate(agreement, start=1):
        stage = "generation (mean of K)" if e <= GENERATION_EPOCHS else "selection (selected top-n)"
        lines.append(f"| {e} | {stage} | {rho:.2f} |")
    return "\n".join(lines)


def plot(runs: dict[str, list[list[float]]], goals: dict[str, float], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    for name, curves in runs.items():
        length = max(len(c) for c in curves)
        padded = [c + [c[-1]] * (length - len(c)) for c in curves]
        median = [statistics.median(col) for col in zip(*padded, strict=True)]
        xs = [i + 1 for i, v in enumerate(median) if not math.isinf(v)]
        ax.plot(xs, [median[x - 1] for x in xs], label=name,
                linestyle="--" if "no early stopping" in name else "-")  # TPE's start-up = random's, at first
    for (goal, target), style in zip(goals.items(), (":", "--", "-."), strict=True):
        ax.axhline(target, color="grey", linestyle=style, linewidth=1, label=f"target: {goal}")
    ax.set_xlabel("trial-epochs spent")
    return save_anytime_plot(plt, fig, ax, "Anytime curves: median over seeds", out, columns=2)


def save_anytime_plot(plt, fig, ax, title: str, out: Path, columns: int) -> Path:
    """Finish an anytime-curve figure (best finished trial against the cost spent) and write it atomically."""
    ax.set_ylabel("best finished trial: val MPJPE current, mm")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=columns)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic.atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out


@contextlib.contextmanager
def replay_ray() -> Iterator[None]:
    """A local Ray for the replays (dashboard on, RAY.md), shut down afterwards; a caller's Ray (the tests') is
    reused and left running."""
    import ray

    from tune.resources import init_ray

    started = not ray.is_initialized()
    init_ray(None, echo=lambda line: print(line, file=sys.stderr))
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def write_report(out: Path, text: str, picture: Path) -> None:
    """The Markdown report with its anytime-curve picture below it, written to ``out`` and printed."""
    atomic.write_text(out, text + f"\n\n![anytime curves]({picture.name})\n")
    print(text)
    print(f"written: {out}, {picture}", file=sys.stderr)


def run_replay(args: argparse.Namespace) -> int:
    curves, epochs = load_curves(args.table)
    runs: dict[str, list[list[float]]] = {}
    with replay_ray():
        for arm in ARMS:
            runs[arm.name] = []
            for seed in range(args.seeds):
                runs[arm.name].append(anytime(replay(arm, seed, args.budget, curves, epochs), epochs))
                print(f"{arm.name}, seed {seed}: best {runs[arm.name][-1][-1]:.2f} mm after "
                      f"{len(runs[arm.name][-1])} trial-epochs", file=sys.stderr, flush=True)
    goals = targets(runs, [c[-1] for c in curves.values()])
    write_report(args.out, report(runs, goals, rank_agreement(curves, epochs), args),
                 plot(runs, goals, args.out.with_suffix(".png")))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="train the grid once and write its per-epoch objectives")
    table.add_argument("--out", type=Path, default=Path("results/benchmarks/search_table.parquet"))
    rep = sub.add_parser("replay", help="replay the searches over the table and report")
    rep.add_argument("--table", type=Path, default=Path("results/benchmarks/search_table.parquet"))
    rep.add_argument("--seeds", type=int, default=10)
    rep.add_argument("--budget", type=int, default=96, help="trial-epochs each search spends (96 = 16 full trials)")
    rep.add_argument("--out", type=Path, default=Path("results/benchmarks/search_efficiency.md"))
    args = parser.parse_args(argv)
    if args.command == "table":
        build_table(args.out)
        return 0
    return run_replay(args)


if __name__ == "__main__":
    sys.exit(main())
