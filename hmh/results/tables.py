"""A search's result files: fixed Parquet schemas, atomic writes, and where everything of an experiment lives.

No Ray and no torch here, so ``hmh results summarize`` and tests read results cheaply. Layout of
``results/<experiment>/`` (:class:`ExperimentPaths`)::

    trials.parquet       one row per trial (TRIALS columns below)
    iterations.parquet   one row per report of every trial (one epoch of one stage)
    final.parquet        the final retrain's test-split metric table, one row per reduction
    pareto.parquet       a two-objective search's Pareto front (search.objectives=mpjpe_ms), one row per point
    summary.md           best configuration, final table, comparison with the dissertation's Tables 4.1 and 4.2
    plots/               objective_vs_trial.png, mpjpe_vs_k.png, param_importances.png (and pareto.png)
    optuna.db            the Optuna study (SQLite): optuna-dashboard sqlite:///results/<experiment>/optuna.db
    experiment.yaml      the experiment config; space.yaml: the search space (what --resume reuses)
    tensorboard/         rank-0 TensorBoard events per trial (<trial_id>/) and of the final run (final/)
    search/              Ray Tune's experiment (trial folders with their own TensorBoard events)
    train/               Ray Train runs <trial_id>-<stage> and final-<stage> with their checkpoints
    final/               the final retrain's test metrics (metrics.json, metrics.md)

Columns (every Parquet file has exactly these, in this order, with these Arrow types):

- ``trials.parquet``: ``trial_id`` string, ``trial_index`` int64 (creation order), ``status`` string (TERMINATED,
  ERROR, RUNNING, PENDING, PAUSED as Tune says, or INTERRUPTED: cut short by an interrupted search; ``--resume``
  continues it), ``stopped_early`` bool (ended before its last epoch: ASHA),
  ``epochs_done``/``epochs_total`` int64 (both stages together), ``objective`` double and ``objective_source``
  string (see :data:`OBJECTIVE`), ``config/<dotted key>`` for every config value (int64, double, bool, string,
  list<int64>), ``val/<reduction>/<metric>`` and ``val/selection/<stat>`` double (last report; the stats are
  hmh.eval.protocol's ``precision``, ``gain``, ``reward_spread``, ``common_set_share``),
  ``cost/ms_per_image_b1`` and ``cost/ms_per_image_b8`` double (:data:`COST_KEYS`; two-objective searches only),
  ``time_total_s`` double, ``checkpoint_path``, ``trial_dir``, ``error`` string.
- ``iterations.parquet``: ``trial_id``, ``trial_epoch`` int64, ``stage`` string, ``epoch`` int64 (within the
  stage), ``restored_epoch`` int64, ``objective`` double, ``objective_source`` string, ``train/<key>`` double
  (:data:`TRAIN_KEYS`), the ``val/...`` columns, ``time_total_s`` double, ``timestamp`` int64 (Unix seconds),
  ``checkpoint_path`` string.
- ``final.parquet``: ``reduction`` string, ``mpjpe_past``, ``mpjpe_current``, ``mpjpe_future``, ``mpvpe``,
  ``selection_precision``, ``selection_gain``, ``selection_reward_spread``, ``selection_common_set_share`` double
  (on the ``final`` row only), ``split`` string, ``samples`` int64.
- ``pareto.parquet``: ``trial_id`` string, ``trial_index`` int64, ``k`` int64 (``model.num_hypotheses``),
  ``top_n`` int64 (``selection.top_n``), ``mpjpe`` double (the trial's objective, mm), ``ms`` double (ms per image
  at batch 1: the second objective), ``ms_batch8`` double (ms per image at batch 8), ``picked`` bool (the point
  ``search.pick`` chose for the final retrain); ordered by ``ms``. Metadata ``hmh.pick`` and ``hmh.picked`` (its
  trial id, null when no point qualified).

Metric values are millimetres; a metric that was not measured is null.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hmh.config import field_types
from hmh.errors import HmhError
from hmh.files import atomic

__all__ = [
    "CONSTANT", "COST_BATCHES", "COST_KEYS", "COST_OBJECTIVE", "FINAL_SCHEMA", "ITERATIONS_SCHEMA", "METRICS",
    "OBJECTIVE", "OBJECTIVE_KEYS", "OBJECTIVE_SOURCE", "PARETO_SCHEMA", "REDUCTIONS", "REDUCTION_NAMES",
    "SELECTION_STATS", "TRAIN_KEYS", "TRIALS_SCHEMA",
    "ExperimentPaths", "ResultsError", "completed", "config_columns", "final_rows", "is_uri", "read_table",
    "storage_dir", "val_columns", "write_table",
]

# Same names as hmh.eval.metrics and hmh.eval.protocol (kept here so reading results never imports torch; a test checks
# they agree).
METRICS = ("mpjpe_past", "mpjpe_current", "mpjpe_future", "mpvpe")
REDUCTIONS = ("best_of_k", "final", "label_oracle", "mean_of_k", "random_n", "hyp0")
SELECTION_STATS = ("precision", "gain", "reward_spread", "common_set_share")
CONSTANT = "constant"  # hmh.eval.baseline's reduction name, where a run computed it: ``constant/mpjpe_current`` ...
REDUCTION_NAMES = {
    "best_of_k": "best of K (oracle)",
    "final": "final (selected top-n)",
    "label_oracle": "label oracle top-n (top-n by the labels' own error)",
    "mean_of_k": "mean of K",
    "random_n": "random top-n",
    "hyp0": "hypothesis 0",
    CONSTANT: "constant mean pose (training split)",
}
OBJECTIVE = "val/objective_mpjpe_current"
"""The search objective (mm, lower is better): the selected (``final``, top-n aggregated) current-frame MPJPE on
the validation split. In the generation stage no selector exists yet, so the reduction ``train.generation_objective``
names stands in for it (by default the mean of all K hypotheses, ``val/mean_of_k/mpjpe_current``);
``objective_source`` says which one (``final`` or that reduction).
Best-of-K (``val/best_of_k/...``) is reported alongside at every step."""
OBJECTIVE_SOURCE = "val/objective_source"
COST_BATCHES = (1, 8)
COST_KEYS = tuple(f"cost/ms_per_image_b{b}" for b in COST_BATCHES)
COST_OBJECTIVE = COST_KEYS[0]
"""The second objective of a two-objective search (ms, lower is better): milliseconds per image of the trial's
generator + selector (forward, top-n aggregation) in eval mode at batch 1, on the trial's device
(:mod:`hmh.eval.cost`); batch 8 is recorded beside it (``cost/ms_per_image_b8``). Batch 1 is the objective
because it is the latency of one image, what ``hmh predict`` on a photo pays; batch 8 shows the throughput side."""
OBJECTIVE_KEYS = {"mpjpe": (OBJECTIVE,), "mpjpe_ms": (OBJECTIVE, COST_OBJECTIVE)}  # by search.objectives, minimised
TRAIN_KEYS = ("loss/total", "loss/joint_3d", "loss/proj", "loss/mano", "loss/aux", "loss/diversity", "loss/jrc",
              "lr", "grad_norm", "samples_per_s", "seconds")


class ResultsError(HmhError):
    """A missing or malformed result file (the message names it)."""


def val_columns(split: str = "val") -> list[str]:
    """``["{split}/best_of_k/mpjpe_past", ..., "{split}/selection/precision", ...]``: every reduction's metrics,
    then the selection statistics."""
    return [f"{split}/{r}/{m}" for r in REDUCTIONS for m in METRICS] + [f"{split}/selection/{s}"
                                                                         for s in SELECTION_STATS]


def _arrow_type(tp: Any) -> pa.DataType:
    if typing.get_origin(tp) is list:
        return pa.list_(_arrow_type(typing.get_args(tp)[0]))
    return {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}[tp]


def config_columns() -> list[pa.Field]:
    """``config/<dotted key>`` fields for every leaf of :class:`Config`, typed from the dataclass annotations."""
    return [pa.field(f"config/{key}", _arrow_type(tp)) for key, tp in field_types().items()]


def _doubles(names: Iterable[str]) -> list[pa.Field]:
    return [pa.field(name, pa.float64()) for name in names]


TRIALS_SCHEMA = pa.schema([
        pa.field("trial_id", pa.string()), pa.field("trial_index", pa.int64()), pa.field("status", pa.string()),
        pa.field("stopped_early", pa.bool_()), pa.field("epochs_done", pa.int64()),
        pa.field("epochs_total", pa.int64()), pa.field("objective", pa.float64()),
        pa.field("objective_source", pa.string()),
        *config_columns(), *_doubles(val_columns()), *_doubles(COST_KEYS),
        pa.field("time_total_s", pa.float64()), pa.field("checkpoint_path", pa.string()),
        pa.field("trial_dir", pa.string()), pa.field("error", pa.string()),
])


ITERATIONS_SCHEMA = pa.schema([
    pa.field("trial_id", pa.string()), pa.field("trial_epoch", pa.int64()), pa.field("stage", pa.string()),
    pa.field("epoch", pa.int64()), pa.field("restored_epoch", pa.int64()), pa.field("objective", pa.float64()),
    pa.field("objective_source", pa.string()), *_doubles(f"train/{k}" for k in TRAIN_KEYS),
    *_doubles(val_columns()), pa.field("time_total_s", pa.float64()), pa.field("timestamp", pa.int64()),
    pa.field("checkpoint_path", pa.string()),
])

FINAL_SCHEMA = pa.schema([
    pa.field("reduction", pa.string()), *_doubles(METRICS), *_doubles(f"selection_{s}" for s in SELECTION_STATS),
    pa.field("split", pa.string()), pa.field("samples", pa.int64()),
])

PARETO_SCHEMA = pa.schema([
    pa.field("trial_id", pa.string()), pa.field("trial_index", pa.int64()), pa.field("k", pa.int64()),
    pa.field("top_n", pa.int64()), *_doubles(("mpjpe", "ms", "ms_batch8")), pa.field("picked", pa.bool_()),
])


def completed(row: Mapping[str, Any]) -> bool:
    """A ``trials.parquet`` row of a trial that ran its full budget (not stopped early, not errored)."""
    return row["status"] == "TERMINATED" and row["epochs_done"] == row["epochs_total"]


def _clean(value: Any, field: pa.Field) -> Any:
    """NaN -> null for doubles; everything else as is (Arrow checks the type)."""
    if value is None:
        return None
    if pa.types.is_floating(field.type):
        value = float(value)
        return None if math.isnan(value) else value
    if pa.types.is_integer(field.type) and isinstance(value, float):
        return None if math.isnan(value) else int(value)
    return value


def write_table(path: str | Path, rows: list[Mapping[str, Any]], schema: pa.Schema,
                metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``rows`` (dicts; missing keys are null, unknown keys ignored) with exactly ``schema``, atomically.
    ``metadata`` (JSON-able values) is stored in the file's schema metadata as ``hmh.<key>``."""
    schema = schema.with_metadata({f"hmh.{k}".encode(): json.dumps(v).encode() for k, v in (metadata or {}).items()})
    columns = {f.name: [_clean(row.get(f.name), f) for row in rows] for f in schema}
    try:
        table = pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in schema}, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ResultsError(f"{path}: rows do not fit the schema: {err}") from err
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _metadata(schema: pa.Schema) -> dict[str, Any]:
    out = {}
    for key, value in (schema.metadata or {}).items():
        if key.startswith(b"hmh."):
            out[key.decode()[4:]] = json.loads(value)
    return out


def read_table(path: str | Path, schema: pa.Schema | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """Read a result file; check it has ``schema``'s columns with their types. Returns ``(table, metadata)``. A
    ``config/<key>`` column the file lacks (written before that config key existed) is read as nulls: the key was
    not recorded."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: result file not found")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise ResultsError(f"{path}: not a readable Parquet file: {err}") from err
    for field in schema or []:
        if field.name not in table.column_names:
            if not field.name.startswith("config/"):
                raise ResultsError(f"{path}: column {field.name!r} is missing")
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        actual = table.schema.field(field.name).type
        if actual != field.type:
            raise ResultsError(f"{path}: column {field.name!r} has type {actual}, expected {field.type}")
    return table, _metadata(table.schema)


def final_rows(metrics: Mapping[str, float], split: str, samples: int) -> list[dict[str, Any]]:
    """``final.parquet`` rows from a flat ``{"<reduction>/<metric>": mm}`` table (reductions present only)."""
    rows = []
    for reduction in REDUCTIONS:
        if not any(f"{reduction}/{m}" in metrics for m in METRICS):
            continue
        row: dict[str, Any] = {m: metrics.get(f"{reduction}/{m}") for m in METRICS}
        row.update({f"selection_{s}": metrics.get(f"selection/{s}") if reduction == "final" else None
                    for s in SELECTION_STATS})
        row.update(reduction=reduction, split=split, samples=samples)
        rows.append(row)
    return rows


def is_uri(storage_path: str) -> bool:
    """``s3://``, ``gs://``, ``file://``, ... (pyarrow file systems that every node reaches by itself)."""
    return "://" in storage_path


def storage_dir(storage_path: str) -> Path:
    """The absolute local folder of a non-URI ``search.storage_path`` ("" = ``results/`` in the working
    directory; Ray workers change directory, so nothing may stay relative)."""
    return Path(storage_path or "results").expanduser().absolute()


@dataclass(frozen=True)
class ExperimentPaths:
    """Every path of one experiment (module docstring). ``ray_root`` is where Ray Tune and Ray Train persist
    (``search/``, ``train/``): ``root`` itself, or ``<storage URI>/<experiment>`` when ``search.storage_path`` is
    a URI (s3://, gs://), in which case the exports are written to the local ``results/<experiment>`` and
    :meth:`publish` copies them beside Ray's files on the storage."""

    root: Path
    ray_root: str = ""

    @classmethod
    def for_config(cls, storage_path: str, experiment: str) -> ExperimentPaths:
        """Absolute paths for ``search.storage_path`` ("" = results/) and ``search.experiment`` (Ray workers
        change directory, so nothing may be relative)."""
        if is_uri(storage_path):
            return cls(storage_dir("") / experiment, f"{storage_path.rstrip('/')}/{experiment}")
        return cls(storage_dir(storage_path) / experiment)

    @property
    def ray_storage(self) -> str:
        return self.ray_root or str(self.root)

    trials = property(lambda self: self.root / "trials.parquet")
    iterations = property(lambda self: self.root / "iterations.parquet")
    final = property(lambda self: self.root / "final.parquet")
    pareto = property(lambda self: self.root / "pareto.parquet")
    summary = property(lambda self: self.root / "summary.md")
    plots = property(lambda self: self.root / "plots")
    optuna_db = property(lambda self: self.root / "optuna.db")
    config = property(lambda self: self.root / "experiment.yaml")
    space = property(lambda self: self.root / "space.yaml")
    tensorboard = property(lambda self: self.root / "tensorboard")
    final_dir = property(lambda self: self.root / "final")

    @property
    def train_storage(self) -> str:
        """``storage_path`` of every Ray Train run (named ``<trial_id>-<stage>`` or ``final-<stage>``)."""
        return f"{self.ray_storage}/train"

    def publish(self) -> None:
        """With URI storage, copy ``root`` (the Parquet tables, summary, plots, study, configs) to ``ray_root``:
        a cluster job's local folder goes away with the job. Nothing to do when ``root`` is the storage."""
        if not self.ray_root or not self.root.is_dir():
            return
        import pyarrow.fs

        storage, dest = pyarrow.fs.FileSystem.from_uri(self.ray_root)
        pyarrow.fs.copy_files(str(self.root), dest, source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=storage)

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.optuna_db}"
