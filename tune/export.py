"""The search's Tune callback: keeps ``trials.parquet`` and ``iterations.parquet`` current after every report and
prints progress a person can follow (one line per epoch of a trial, and the standings when a trial ends).

The files are rewritten atomically on every event, so an interrupted search leaves valid files with every trial
that reported. On ``--resume`` the rows already written are read back first (``setup``), so the callback
itself holds no state Tune would have to restore.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import ray.tune

from hmh.config import flatten
from hmh.eval.report import format_or_dash as _mm
from hmh.results.tables import (
    COST_KEYS,
    COST_OBJECTIVE,
    ITERATIONS_SCHEMA,
    OBJECTIVE,
    OBJECTIVE_SOURCE,
    TRAIN_KEYS,
    TRIALS_SCHEMA,
    ExperimentPaths,
    ResultsError,
    read_table,
    val_columns,
    write_table,
)
from hmh.train.engine import run_epochs
from tune.cli import echo
from tune.searcher import continued
from tune.space import apply_params

__all__ = ["FINISHED", "ExportCallback", "iteration_row", "trial_row"]

FINISHED = ("TERMINATED", "ERROR")
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


def _rows(path: Path, schema) -> list[dict]:
    """The rows of a result file written earlier (resume), or none."""
    if not path.is_file():
        return []
    try:
        return read_table(path, schema)[0].to_pylist()
    except ResultsError:
        return []


def _error_line(text: str) -> str:
    """The exception line of a trial's error text (the last ``SomethingError: ...`` line), else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    matches = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line)]
    return (matches or lines or ["error (see the trial folder)"])[-1][:300]


def _number(result: dict, key: str) -> float | None:
    value = result.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _error_text(trial) -> str:
    """A failed trial's error text: from the driver's staging folder (written first), else from storage."""
    if trial.error_file and Path(trial.error_file).is_file():
        return Path(trial.error_file).read_text(errors="replace")
    return trial.get_error() or ""


def iteration_row(trial_id: str, result: dict) -> dict[str, Any]:
    """One ``iterations.parquet`` row from a Tune result (a report of :mod:`tune.worker`)."""
    row: dict[str, Any] = {
        "trial_id": trial_id, "trial_epoch": result.get("trial_epoch"), "stage": result.get("stage"),
        "epoch": result.get("epoch"), "restored_epoch": result.get("restored_epoch"),
        "objective": _number(result, OBJECTIVE), "objective_source": result.get(OBJECTIVE_SOURCE),
        "time_total_s": _number(result, "time_total_s"), "timestamp": result.get("timestamp"),
        "checkpoint_path": result.get("checkpoint_path"),
    }
    row.update({f"train/{k}": _number(result, f"train/{k}") for k in TRAIN_KEYS})
    row.update({k: _number(result, k) for k in val_columns()})
    return row


def trial_row(trial_id: str, index: int, status: str, params: dict, base: dict, last: dict, trial_dir: str = "",
              error: str = "") -> dict[str, Any]:
    """One ``trials.parquet`` row: the trial's full config (``base`` with its ``params``) and last report;
    ``index``: its creation order (0-based). ``epochs_total``: the epochs its config trains
    (:func:`hmh.train.engine.run_epochs`), so a trial that skips its selection stage is not taken for a stopped one."""
    cfg = apply_params(base, params)
    config, epochs_total = flatten(cfg), run_epochs(cfg)
    done = int(last.get("trial_epoch") or 0)
    row: dict[str, Any] = {
        "trial_id": trial_id, "trial_index": index, "status": status,
        "stopped_early": status == "TERMINATED" and done < epochs_total, "epochs_done": done,
        "epochs_total": epochs_total, "objective": _number(last, OBJECTIVE),
        "objective_source": last.get(OBJECTIVE_SOURCE), "time_total_s": _number(last, "time_total_s"),
        "checkpoint_path": last.get("checkpoint_path"), "trial_dir": trial_dir, "error": error or None,
    }
    row.update({f"config/{k}": v for k, v in config.items()})
    row.update({k: _number(last, k) for k in val_columns()})
    row.update({k: _number(last, k) for k in COST_KEYS})
    return row


class ExportCallback(ray.tune.Callback):
    """Writes the result files and the console progress of one search (module docstring)."""

    def __init__(self, paths: ExperimentPaths, base: dict, searched: list[str], epochs_total: int,
                 experiment: str, objectives: tuple[str, ...]):
        self.paths = paths
        self.objectives = objectives
        self.base = base
        self.searched = searched
        self.epochs_total = epochs_total
        self.experiment = experiment
        self._iterations: dict[tuple[str, int], dict] = {}
        self._status: dict[str, str] = {}
        self._total = 0

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self._total = int(total_num_samples or num_samples or 0)
        self._iterations = {(r["trial_id"], r["trial_epoch"]): r for r in _rows(self.paths.iterations,
                                                                                 ITERATIONS_SCHEMA)}
        self._status = {r["trial_id"]: r["status"] for r in _rows(self.paths.trials, TRIALS_SCHEMA)
                        if r["status"] in FINISHED}

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        row = iteration_row(trial.trial_id, result)
        self._iterations[(trial.trial_id, row["trial_epoch"])] = row
        self._write(trials)
        echo(self._epoch_line(trials.index(trial) + 1, trial, row))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._status[trial.trial_id] = "TERMINATED"
        self._finish(trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._status[trial.trial_id] = "ERROR"
        self._finish(trials, trial)

    def on_experiment_end(self, trials: list, **info) -> None:
        self._write(trials)
        self.paths.publish()

    def _finish(self, trials: list, trial) -> None:
        rows = self._write(trials)
        self.paths.publish()  # URI storage gets the tables once per finished trial, not at every report
        row = next(r for r in rows if r["trial_id"] == trial.trial_id)
        if row["status"] == "ERROR":
            what = f"failed: {row['error']}"
        elif row["stopped_early"]:
            what = f"stopped early after epoch {row['epochs_done']}/{row['epochs_total']}"
        else:
            continues = continued(trial.config)[1]
            what = f"completed {row['epochs_done']} epochs" + (f", finishing trial {continues}" if continues else "")
        cost = f" | {_mm(row[COST_OBJECTIVE])} ms per image" if COST_OBJECTIVE in self.objectives else ""
        echo(f"[{self.experiment}] trial {trial.trial_id} {what} | objective {_mm(row['objective'])} mm "
             f"({row['objective_source'] or '-'}){cost}")
        echo(self._standings(rows))

    def _rows(self, trials: list) -> list[dict]:
        rows = []
        for index, trial in enumerate(trials):
            # A trial ends through on_trial_complete/on_trial_error; one Tune calls TERMINATED without them was cut
            # short by an interrupted search (the saved experiment state still has it unfinished).
            status = self._status.get(trial.trial_id) or (trial.status if trial.status in UNFINISHED
                                                          else "INTERRUPTED")
            error = _error_line(_error_text(trial)) if status == "ERROR" else ""
            rows.append(trial_row(trial.trial_id, index, status, continued(trial.config)[0], self.base,
                                  trial.last_result, trial.path or "", error))
        return rows

    def _write(self, trials: list) -> list[dict]:
        rows = self._rows(trials)
        meta = {"experiment": self.experiment, "searched": self.searched, "objective": OBJECTIVE,
                "objectives": list(self.objectives), "written": time.time(),
                "continues": {t.trial_id: of for t in trials if (of := continued(t.config)[1])}}
        write_table(self.paths.trials, rows, TRIALS_SCHEMA, meta)
        order = {trial.trial_id: i for i, trial in enumerate(trials)}
        ordered = sorted(self._iterations.values(),
                         key=lambda r: (order.get(r["trial_id"], len(order)), r["trial_epoch"] or 0))
        write_table(self.paths.iterations, ordered, ITERATIONS_SCHEMA, {"experiment": self.experiment})
        return rows

    def _epoch_line(self, number: int, trial, row: dict) -> str:
        best_of_k = row.get("val/best_of_k/mpjpe_current")
        total = f"/{self._total}" if self._total else ""
        return (f"[{self.experiment}] trial {number}{total} {trial.trial_id} | {row['stage']} "
                f"epoch {row['epoch']} (trial epoch {row['trial_epoch']}/{self.epochs_total}) | objective "
                f"{_mm(row['objective'])} mm ({row['objective_source'] or '-'}) | best-of-K {_mm(best_of_k)} mm")

    def _standings(self, rows: list[dict]) -> str:
        done = [r for r in rows if r["status"] == "TERMINATED" and not r["stopped_early"] and r["objective"]]
        counts = {s: sum(r["status"] == s for r in rows) for s in ("RUNNING", "PENDING", "TERMINATED", "ERROR")}
        stopped = sum(r["stopped_early"] for r in rows)
        line = (f"[{self.experiment}] trials: {len(rows)} started, {counts['TERMINATED'] - stopped} completed, "
                f"{stopped} stopped early, {counts['ERROR']} errored, {counts['RUNNING']} running")
        if not done:
            return line + " | no completed trial yet"
        best = min(done, key=lambda r: r["objective"])
        params = ", ".join(f"{k.split('.')[-1]}={_short(best[f'config/{k}'])}" for k in self.searched)
        return line + f"\n[{self.experiment}] current best: {best['trial_id']} {_mm(best['objective'])} mm ({params})"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
