"""What the Ray drivers print: Tune's trial table and hmh's own lines, with Ray's per-report detail only when asked
for (``--verbose``, which sets :data:`VERBOSE_ENV` for the driver and, through the runtime env, for the workers).

Quiet by default, and only these five sources; everything else Ray's processes print (warnings, errors, worker
tracebacks) still reaches the console:

- Tune's per-trial boxes (each trial's configuration when it starts, every reported metric when it ends: about 65
  lines a trial): Ray 2.60's default console output has no level that keeps the trial table without them, so the
  drivers use Tune's ``CLIReporter`` (a trial table with the named columns, every 2 minutes) at verbosity 1, which
  is Tune's other, documented output (``RAY_AIR_NEW_OUTPUT=0``) (:func:`tune_console`, and for a restored Tuner
  :func:`restore_console`);

- Ray Train's own INFO lines (the controller's "Requesting resources ...", "Started training worker group ...",
  the workers' "Checkpoint successfully created ...", "Moving model to device ..."): each Train run's
  ``RunConfig(logging_config=...)`` sets the ``ray.train`` console level to WARNING (:func:`train_logging_config`);
  the Train log files in the session's ``logs/train/`` keep every level;
- the per-report ``Reporting training result N: TrainingReport(checkpoint=..., metrics={...})`` line, which Ray
  Train 2.60's worker context logs at INFO on a logger named after its source file (so ``LoggingConfig`` misses
  it): that logger's level is raised on each worker (:func:`quiet_worker_logs`);
- hmh's own dataset lines (``BlurHand train (train): N samples ...``, index building), which Ray Train's worker
  logging prints at INFO for every rank of every Train run: quiet on the workers (:func:`quiet_worker_logs`), logged
  once by the driver when it indexes the data before Ray starts (:func:`tune.train.prepare_config`);
- the Train controller's core-worker error line about the ``PreemptionWatcher`` actor's constructor arguments
  (harmless, ray-project/ray#53727), a C++ log line that no Python logging setting reaches: it alone is dropped
  from the driver's echo of worker output (:func:`filter_worker_echo`).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

__all__ = ["VERBOSE_ENV", "filter_worker_echo", "quiet_worker_logs", "restore_console", "set_verbose",
           "train_logging_config", "tune_console", "verbose"]

VERBOSE_ENV = "HMH_VERBOSE"
# hmh's data loading logs each dataset's sample counts at INFO, which Ray Train's worker logging prints for every
# rank of every Train run; the driver logs them once, when it indexes the data (tune.train.prepare_config).
QUIET_WORKER_LOGGERS = ("hmh.data",)
DROPPED_LINES = (re.compile(r"Actor with class name: 'PreemptionWatcher' .* has constructor arguments in the object "
                            r"store"),)


def set_verbose(on: bool) -> None:
    """``--verbose``: set (or clear) :data:`VERBOSE_ENV` in this process, which the workers' runtime env copies."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def tune_console(metric_columns: dict[str, str], parameter_columns: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments of a driver's ``ray.tune.RunConfig`` for its console: unless verbose, Tune's trial table
    alone (``metric_columns`` / ``parameter_columns``: reported key or parameter -> column title) every 2 minutes, with
    ``RAY_AIR_NEW_OUTPUT=0`` set in this process (read when the Tuner starts); verbose: Tune's default output."""
    if verbose():
        return {}
    from ray.tune import CLIReporter

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    return {"verbose": 1, "progress_reporter": CLIReporter(
        metric_columns=metric_columns, parameter_columns=parameter_columns, max_report_frequency=120,
        print_intermediate_tables=True)}


def restore_console(tuner: Any, metric_columns: dict[str, str], parameter_columns: dict[str, str]) -> None:
    """Make a ``Tuner.restore``-d ``tuner`` print like a new one (:func:`tune_console`). The restored Tuner brings
    back the ``RunConfig`` its first run saved, console settings included, but not ``RAY_AIR_NEW_OUTPUT``, without
    which Tune ignores the trial table and prints the per-trial boxes; and this run's ``--verbose`` may differ.
    ``Tuner.restore`` takes no ``RunConfig``, so the restored one is updated in place (Ray Client tuners, which
    keep theirs on the cluster, only get the environment variable)."""
    settings = {"verbose": None, "progress_reporter": None, **tune_console(metric_columns, parameter_columns)}
    local = getattr(tuner, "_local_tuner", None)
    if local is not None:
        run_config = local.get_run_config()
        for key, value in settings.items():
            setattr(run_config, key, value)


def train_logging_config() -> Any:
    """A ``ray.train.LoggingConfig``: Ray Train's console lines at INFO when verbose, else WARNING and above."""
    import ray.train

    return ray.train.LoggingConfig(log_level="INFO" if verbose() else "WARNING")


def quiet_worker_logs() -> None:
    """On a Train worker: unless verbose, only warnings and errors from the logger of Ray Train's worker context
    and from hmh's data loading (:data:`QUIET_WORKER_LOGGERS`)."""
    if verbose():
        return
    from ray.train.v2._internal.execution import context

    for name in (context.__name__, context.__file__, *QUIET_WORKER_LOGGERS):  # 2.60 names it after the file
        logging.getLogger(name).setLevel(logging.WARNING)


def filter_worker_echo() -> None:
    """On the driver, after ``ray.init``: unless verbose, drop the lines of :data:`DROPPED_LINES` from the echo of
    the workers' output. Uses Ray's private stream dispatcher; when that is not there, nothing is dropped."""
    if verbose():
        return
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    with dispatcher._lock:
        dispatcher.handlers = [(name, _without_dropped_lines(handle) if name == "ray_print_logs" else handle)
                               for name, handle in dispatcher.handlers]


def _without_dropped_lines(handle):
    def emit(data: dict) -> None:
        lines = [line for line in data.get("lines", []) if not any(p.search(line) for p in DROPPED_LINES)]
        if lines:
            handle({**data, "lines": lines})

    emit.hmh_filtered = True  # type: ignore[attr-defined]
    return handle if getattr(handle, "hmh_filtered", False) else emit
