"""Plots of a search from its Parquet files and Optuna study: objective vs trial, MPJPE vs K, parameter
importances, and a two-objective search's Pareto front (MPJPE vs ms per image). Matplotlib with the
non-interactive Agg backend; every PNG is written atomically."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

from hmh.files import atomic
from hmh.results.pareto import candidates, read_front
from hmh.results.tables import OBJECTIVE, REDUCTION_NAMES, TRIALS_SCHEMA, ExperimentPaths, read_table

__all__ = ["plot_importances", "plot_mpjpe_vs_k", "plot_objective", "plot_pareto", "stopped_label", "write_plots"]

log = logging.getLogger(__name__)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6.4, 4.0), dpi=100)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def stopped_label(rows: list[dict]) -> str:
    """The legend of the trials that did not complete: "stopped early", and the reductions their objectives come
    from (the summary's ``from`` column: ``final`` for a trial stopped in its selection stage, else
    ``train.generation_objective``'s), e.g. "stopped early (from final, mean of K)"."""
    sources = sorted({r["objective_source"] for r in rows if r.get("objective_source")})
    names = [REDUCTION_NAMES.get(s, s).split(" (")[0] for s in sources]
    return "stopped early" + (f" (from {', '.join(names)})" if names else "")


def plot_objective(rows: list[dict], path: Path) -> Path:
    """Objective per trial (creation order): completed trials filled, stopped/errored hollow, running best line."""
    plt, fig, ax = _figure()
    rows = sorted(rows, key=lambda r: r["trial_index"])
    done = [r for r in rows if _finite(r["objective"]) and not r["stopped_early"] and r["status"] == "TERMINATED"]
    other = [r for r in rows if _finite(r["objective"]) and r not in done]
    ax.scatter([r["trial_index"] for r in done], [r["objective"] for r in done], label="completed")
    ax.scatter([r["trial_index"] for r in other], [r["objective"] for r in other], facecolors="none",
               edgecolors="tab:red", label=stopped_label(other))
    best, xs, ys = math.inf, [], []
    for r in done:
        best = min(best, r["objective"])
        xs.append(r["trial_index"])
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:green", label="best so far")
    ax.set_xlabel("trial (creation order)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(f"{OBJECTIVE} (mm)")
    ax.set_title("Objective vs trial")
    _legend(ax)
    return _save(plt, fig, path)


def plot_mpjpe_vs_k(rows: list[dict], path: Path) -> Path:
    """Best-of-K and selected (final) current-frame MPJPE on the validation split against K, one point per
    trial with that metric."""
    plt, fig, ax = _figure()
    ks = sorted({r["config/model.num_hypotheses"] for r in rows})
    for column, label, marker in (("val/best_of_k/mpjpe_current", "best of K", "o"),
                                  ("val/final/mpjpe_current", "final (selected)", "s"),
                                  ("val/mean_of_k/mpjpe_current", "mean of K", "^")):
        points = [(r["config/model.num_hypotheses"], r[column]) for r in rows if _finite(r[column])]
        if points:
            ax.scatter(*zip(*points, strict=True), label=label, marker=marker)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("K (hypotheses)")
    ax.set_ylabel("MPJPE current (mm, validation)")
    ax.set_title("MPJPE vs K")
    _legend(ax)
    return _save(plt, fig, path)


def plot_pareto(rows: list[dict], front: list[dict], path: Path) -> Path:
    """Every completed trial's MPJPE against its ms per image (batch 1), the Pareto ``front`` (``pareto.parquet``
    rows) highlighted and joined, each front point labelled with its K and top-n, the picked one starred."""
    plt, fig, ax = _figure()
    points = candidates(rows)
    ax.scatter([p.ms for p in points], [p.mpjpe for p in points], color="lightgrey", label="completed trials")
    ax.step([r["ms"] for r in front], [r["mpjpe"] for r in front], where="post", color="tab:blue", alpha=0.5)
    ax.scatter([r["ms"] for r in front], [r["mpjpe"] for r in front], color="tab:blue", label="Pareto front")
    for r in front:
        ax.annotate(f"K={r['k']}, n={r['top_n']}", (r["ms"], r["mpjpe"]), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)
    picked = [r for r in front if r["picked"]]
    if picked:
        ax.scatter([r["ms"] for r in picked], [r["mpjpe"] for r in picked], marker="*", s=200, color="tab:orange",
                   label="picked (search.pick)", zorder=3)
    ax.margins(x=0.15, y=0.1)  # room for the labels
    ax.set_xlabel("inference ms per image (generator + selector, batch 1)")
    ax.set_ylabel(f"{OBJECTIVE} (mm)")
    ax.set_title("Pareto front: MPJPE vs inference cost")
    _legend(ax)
    return _save(plt, fig, path)


def plot_importances(storage_url: str, study_name: str, path: Path) -> Path | None:
    """Optuna's parameter importances of the study, for the MPJPE objective (the first of a two-objective study;
    None, with a log line, when it cannot compute them yet: fewer than two finished trials or no parameter that
    varied)."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage_url)
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        with warnings.catch_warnings():  # Optuna warns with every target that it ranks low values best: as meant
            warnings.simplefilter("ignore", UserWarning)
            importances = optuna.importance.get_param_importances(study, target=target)
    except (KeyError, ValueError, RuntimeError) as err:
        log.info("parameter importances skipped: %s", err)
        return None
    if not importances:
        log.info("parameter importances skipped: no parameter varied")
        return None
    plt, fig, ax = _figure()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel(f"importance for {OBJECTIVE} (Optuna)")
    ax.set_title("Parameter importances")
    return _save(plt, fig, path)


def write_plots(root: str | Path, study_name: str) -> list[Path]:
    """Every plot of the experiment in ``root`` into ``root/plots``; returns the files written."""
    paths = ExperimentPaths(Path(root))
    rows = read_table(paths.trials, TRIALS_SCHEMA)[0].to_pylist()
    written = [plot_objective(rows, paths.plots / "objective_vs_trial.png"),
               plot_mpjpe_vs_k(rows, paths.plots / "mpjpe_vs_k.png")]
    if paths.pareto.is_file():
        written.append(plot_pareto(rows, read_front(paths)[0], paths.plots / "pareto.png"))
    if paths.optuna_db.is_file():
        importance = plot_importances(paths.optuna_url, study_name, paths.plots / "param_importances.png")
        if importance is not None:
            written.append(importance)
    return written
