"""Result files: fixed typed schemas, atomic writes, the summary from Parquet alone, plots, Tune row builders."""

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hmh.eval.metrics
import hmh.eval.protocol
from hmh.config import load_config, to_dict
from hmh.results.search_plots import stopped_label, write_plots
from hmh.results.search_summary import best_trial, summarize, write_summary
from hmh.results.tables import (
    COST_KEYS,
    COST_OBJECTIVE,
    FINAL_SCHEMA,
    ITERATIONS_SCHEMA,
    METRICS,
    OBJECTIVE,
    REDUCTIONS,
    SELECTION_STATS,
    TRIALS_SCHEMA,
    ExperimentPaths,
    ResultsError,
    final_rows,
    read_table,
    write_table,
)

REPO = Path(__file__).resolve().parents[2]
SEARCHED = ["model.num_hypotheses", "selection.top_n", "optim.lr"]


def metrics_table(base: float) -> dict[str, float]:
    offsets = {"best_of_k": 0.0, "final": 3.0, "label_oracle": 2.0, "mean_of_k": 5.0, "random_n": 6.0, "hyp0": 9.0}
    out = {f"{r}/{m}": base + offsets[r] + i for r in REDUCTIONS for i, m in enumerate(METRICS)}
    out.update({"selection/precision": 0.5, "selection/gain": 0.75, "selection/reward_spread": 0.01,
                "selection/common_set_share": 0.25})
    return out


def trial(trial_id: str, index: int, k: int, objective: float, done: int, total: int = 3,
          status: str = "TERMINATED", ms: float | None = None) -> dict:
    """A trials.parquet row as tune.export.trial_row builds it (``ms``: a two-objective search's cost)."""
    from tune.export import trial_row

    source = "final" if done == total else "mean_of_k"
    last = {"trial_epoch": done, OBJECTIVE: objective, "val/objective_source": source, "time_total_s": 12.5,
            "checkpoint_path": f"/ckpt/{trial_id}", **{f"val/{k}": v for k, v in metrics_table(objective).items()}}
    if ms is not None:
        last.update({COST_KEYS[0]: ms, COST_KEYS[1]: ms / 5})
    params = {"model.num_hypotheses": k, "selection.top_n": min(2, k), "optim.lr": 1e-3, "train.generation_epochs": 2,
              "train.selection_epochs": total - 2}
    return trial_row(trial_id, index, status, params, to_dict(load_config("cpu")), last, f"/trials/{trial_id}")


def test_a_trial_whose_selection_stage_is_skipped_is_not_taken_for_a_stopped_one() -> None:
    from tune.export import trial_row

    last = {"trial_epoch": 2, OBJECTIVE: 30.0}
    params = {"model.num_hypotheses": 2, "selection.top_n": 2, "train.generation_epochs": 2,
              "train.selection_epochs": 1}  # top_n = K: no selection stage (hmh.train.engine.selection_skipped)
    row = trial_row("ab_00000", 0, "TERMINATED", params, to_dict(load_config("cpu")), last)
    assert (row["epochs_total"], row["stopped_early"]) == (2, False)
    row = trial_row("ab_00001", 1, "TERMINATED", {**params, "selection.top_n": 1}, to_dict(load_config("cpu")), last)
    assert (row["epochs_total"], row["stopped_early"]) == (3, True)


@pytest.fixture
def experiment(tmp_path: Path) -> ExperimentPaths:
    """A finished experiment folder: four trials (one stopped early, one errored) and a final table."""
    paths = ExperimentPaths(tmp_path / "demo")
    rows = [trial("ab_00000", 0, 4, 30.0, 3), trial("ab_00001", 1, 2, 20.0, 1), trial("ab_00002", 2, 8, 25.0, 3),
            trial("ab_00003", 3, 4, math.nan, 0, status="ERROR")]
    write_table(paths.trials, rows, TRIALS_SCHEMA, {"experiment": "demo", "searched": SEARCHED})
    write_table(paths.final, final_rows(metrics_table(22.0), "test", 64), FINAL_SCHEMA,
                {"best_trial_id": "ab_00002", "checkpoint": "/ckpt/final"})
    return paths


def test_metric_names_match_hmh_metrics() -> None:
    assert METRICS == hmh.eval.metrics.METRICS and REDUCTIONS == hmh.eval.protocol.REDUCTIONS
    assert SELECTION_STATS == hmh.eval.protocol.SELECTION_STATS


def test_trials_file_has_typed_config_columns_and_opens_in_pandas(experiment: ExperimentPaths) -> None:
    table = pq.read_table(experiment.trials)
    assert table.schema.remove_metadata() == TRIALS_SCHEMA
    types = {f.name: f.type for f in table.schema}
    assert types["config/model.num_hypotheses"] == pa.int64()
    assert types["config/loss.jrc_alpha"] == pa.float64()
    assert types["config/selection.msf"] == pa.bool_()
    assert types["config/model.backbone"] == pa.string()
    assert types["config/optim.milestones"] == pa.list_(pa.int64())
    frame = pd.read_parquet(experiment.trials)
    assert list(frame["trial_id"]) == ["ab_00000", "ab_00001", "ab_00002", "ab_00003"]
    assert list(frame["stopped_early"]) == [False, True, False, False]
    assert frame["objective"].isna().tolist() == [False, False, False, True]  # NaN stored as null
    assert frame.loc[1, "config/model.num_hypotheses"] == 2


def test_a_trials_file_older_than_a_config_key_reads_that_key_as_null(experiment: ExperimentPaths) -> None:
    older = pq.read_table(experiment.trials).drop_columns(["config/search.scheduler"])
    pq.write_table(older, experiment.trials)
    table, meta = read_table(experiment.trials, TRIALS_SCHEMA)
    assert table.column("config/search.scheduler").null_count == table.num_rows == 4
    assert meta["experiment"] == "demo"  # the file's metadata is kept
    assert "## Trials: 4" in summarize(experiment.root)


def test_empty_tables_keep_their_schema(tmp_path: Path) -> None:
    for schema in (TRIALS_SCHEMA, ITERATIONS_SCHEMA, FINAL_SCHEMA):
        path = write_table(tmp_path / "x.parquet", [], schema)
        table, _ = read_table(path, schema)
        assert table.num_rows == 0 and table.schema.remove_metadata() == schema


def test_read_table_names_missing_file_column_and_type(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="not found"):
        read_table(tmp_path / "none.parquet", FINAL_SCHEMA)
    pq.write_table(pa.table({"reduction": ["final"]}), tmp_path / "short.parquet")
    with pytest.raises(ResultsError, match="'mpjpe_past' is missing"):
        read_table(tmp_path / "short.parquet", FINAL_SCHEMA)
    pq.write_table(pa.table({"reduction": [1]}), tmp_path / "typed.parquet")
    with pytest.raises(ResultsError, match="'reduction' has type int64"):
        read_table(tmp_path / "typed.parquet", FINAL_SCHEMA)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ResultsError, match="junk.parquet"):
        read_table(tmp_path / "junk.parquet")


def test_write_is_atomic_and_rejects_rows_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "final.parquet"
    write_table(path, final_rows(metrics_table(10.0), "test", 8), FINAL_SCHEMA)
    before = path.read_bytes()
    with pytest.raises(ResultsError, match="final.parquet"):
        write_table(path, [{"reduction": "final", "samples": "many"}], FINAL_SCHEMA)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.parquet"]


def test_final_rows_keep_the_present_reductions_in_order() -> None:
    table = metrics_table(10.0)
    rows = final_rows({k: v for k, v in table.items() if not k.startswith("final/")}, "test", 8)
    assert [r["reduction"] for r in rows] == ["best_of_k", "label_oracle", "mean_of_k", "random_n", "hyp0"]
    rows = final_rows(table, "test", 8)
    assert rows[1]["reduction"] == "final" and rows[1]["selection_precision"] == 0.5
    assert rows[1]["selection_gain"] == 0.75 and rows[1]["selection_common_set_share"] == 0.25
    assert rows[0]["selection_precision"] is None and rows[0]["mpjpe_current"] == 11.0


def test_best_trial_ignores_trials_stopped_early(experiment: ExperimentPaths) -> None:
    rows = read_table(experiment.trials, TRIALS_SCHEMA)[0].to_pylist()
    assert best_trial(rows)["trial_id"] == "ab_00002"  # ab_00001 is lower but was stopped (mean of K)


def test_summary_from_parquet_alone(experiment: ExperimentPaths) -> None:
    text = summarize(experiment.root)
    assert "4 (2 completed, 1 stopped early, 1 errored)" in text
    assert "Best configuration: trial ab_00002, objective 25.00 mm" in text
    assert "| model.num_hypotheses | 8 |" in text
    assert "| final (selected top-n) | 25.00 | 26.00 | 27.00 | 28.00 |" in text
    assert "16.72" in text and "14.12" in text  # the dissertation's Tables 4.1 and 4.2
    assert "best of K <= final (as in the dissertation): yes" in text
    assert "| label oracle top-n (top-n by the labels' own error) | 24.00 |" in text
    assert "selection gain ((random - final) / (random - label oracle)" in text and "): 0.75" in text
    assert "images whose selected set is the most common one: 25%" in text and "WARNING" not in text
    assert "| 8 | - | 26.00 | 26.00 |" in text  # Table 4.2 shape: K = 8 (best of K current, completed trial)
    assert "| 2 | - | - | 21.00 |" in text  # K = 2 only in a trial stopped early
    assert write_summary(experiment.root).read_text() == text


def test_summary_without_final_table_says_so(experiment: ExperimentPaths) -> None:
    experiment.final.unlink()
    assert "Final retrain: not run yet" in summarize(experiment.root)


def test_results_cli_reprints_the_summary_without_ray_or_torch(experiment: ExperimentPaths) -> None:
    code = ("import sys; from hmh.cli import main; status = main(['results', 'summarize', sys.argv[1]]); "
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules; sys.exit(status)")
    proc = subprocess.run([sys.executable, "-c", code, str(experiment.root)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip("\n") == summarize(experiment.root).rstrip("\n")
    missing = subprocess.run([sys.executable, "-m", "hmh.cli", "results", "summarize", str(experiment.root / "x")],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
    assert missing.returncode == 2 and "trials.parquet: result file not found" in missing.stderr


def test_plots_are_written_with_importances(experiment: ExperimentPaths) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="demo", storage=experiment.optuna_url)
    for i in range(6):
        t = study.ask()
        k = t.suggest_categorical("model.num_hypotheses", [2, 4, 8])
        lr = t.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
        study.tell(t, k + 100 * lr + i * 0.01)
    written = write_plots(experiment.root, "demo")
    assert [p.name for p in written] == ["objective_vs_trial.png", "mpjpe_vs_k.png", "param_importances.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_the_stopped_trials_legend_names_where_their_objectives_come_from() -> None:
    """A trial ASHA stops at the first selection epoch reports the selected top-n, one stopped during generation
    the generation objective: the legend says which, never a fixed reduction."""
    assert stopped_label([{"objective_source": "final"}]) == "stopped early (from final)"
    assert (stopped_label([{"objective_source": "mean_of_k"}, {"objective_source": "final"},
                           {"objective_source": "mean_of_k"}]) == "stopped early (from final, mean of K)")
    assert stopped_label([{"objective_source": None}]) == "stopped early"


def test_experiment_paths_for_local_and_uri_storage(tmp_path: Path) -> None:
    local = ExperimentPaths.for_config(str(tmp_path), "exp")
    assert local.root == tmp_path / "exp" and local.ray_storage == str(tmp_path / "exp")
    assert local.train_storage == f"{tmp_path}/exp/train" and local.optuna_url == f"sqlite:///{tmp_path}/exp/optuna.db"
    remote = ExperimentPaths.for_config("s3://bucket/results/", "exp")
    assert remote.ray_storage == "s3://bucket/results/exp" and remote.root.is_absolute()
    assert ExperimentPaths.for_config("", "exp").root == Path("results/exp").absolute()


def test_iteration_row_keeps_known_columns_only(tmp_path: Path) -> None:
    from tune.export import iteration_row

    result = {"trial_epoch": 2, "stage": "generation", "epoch": 2, "restored_epoch": 0, OBJECTIVE: 12.0,
              "val/objective_source": "mean_of_k", "train/loss/total": 3.5, "train/lr": 1e-3, "train/bogus": 1.0,
              "val/best_of_k/mpjpe_current": 9.0, "timestamp": 1700000000, "checkpoint_path": "/c"}
    row = iteration_row("ab_00000", result)
    assert row["train/loss/total"] == 3.5 and row["val/best_of_k/mpjpe_current"] == 9.0
    assert "train/bogus" not in row and row["val/final/mpjpe_current"] is None
    table, _ = read_table(write_table(tmp_path / "i.parquet", [row], ITERATIONS_SCHEMA), ITERATIONS_SCHEMA)
    assert table.to_pylist()[0]["objective"] == 12.0


def test_uri_storage_gets_the_exports_published_beside_rays_files(tmp_path: Path, monkeypatch) -> None:
    """s3:// and gs:// go through pyarrow's filesystems; file:// takes the same path without a network."""
    monkeypatch.chdir(tmp_path)
    storage = tmp_path / "bucket"
    paths = ExperimentPaths.for_config(f"file://{storage}", "demo")
    assert paths.root == tmp_path / "results" / "demo" and paths.train_storage == f"file://{storage}/demo/train"
    write_table(paths.trials, [], TRIALS_SCHEMA)
    paths.plots.mkdir()
    (paths.plots / "objective_vs_trial.png").write_bytes(b"png")
    paths.publish()
    assert read_table(storage / "demo" / "trials.parquet", TRIALS_SCHEMA)[0].num_rows == 0
    assert (storage / "demo" / "plots" / "objective_vs_trial.png").read_bytes() == b"png"
    local = ExperimentPaths.for_config(str(tmp_path / "nfs"), "demo")
    local.publish()  # the storage is the local folder itself: nothing to copy, nothing created
    assert not (tmp_path / "nfs").exists()


@pytest.fixture
def pareto_experiment(tmp_path: Path) -> ExperimentPaths:
    """A finished two-objective experiment: five trials, a front of three, the picked point retrained."""
    from hmh.results.pareto import choose, front, write_front

    paths = ExperimentPaths(tmp_path / "pareto")
    rows = [trial("ab_00000", 0, 2, 40.0, 2, ms=2.0), trial("ab_00001", 1, 4, 30.0, 3, ms=4.0),  # K = top_n: 2 epochs
            trial("ab_00002", 2, 8, 25.0, 3, ms=9.0), trial("ab_00003", 3, 4, 35.0, 3, ms=5.0),
            trial("ab_00004", 4, 8, math.nan, 0, status="ERROR")]
    write_table(paths.trials, rows, TRIALS_SCHEMA, {"experiment": "pareto", "searched": SEARCHED,
                                                    "objectives": [OBJECTIVE, COST_OBJECTIVE]})
    points = front(read_table(paths.trials, TRIALS_SCHEMA)[0].to_pylist())
    write_front(paths, points, "max_ms=5", choose(points, "max_ms=5"))
    write_table(paths.final, final_rows(metrics_table(31.0), "test", 64), FINAL_SCHEMA,
                {"best_trial_id": "ab_00001", "checkpoint": "/ckpt/final", "pick": "max_ms=5"})
    return paths


def test_trial_rows_carry_the_inference_cost(pareto_experiment: ExperimentPaths) -> None:
    frame = pd.read_parquet(pareto_experiment.trials)
    assert list(frame[COST_OBJECTIVE].iloc[:4]) == [2.0, 4.0, 9.0, 5.0] and frame[COST_KEYS[1]].iloc[0] == 0.4
    assert frame[COST_OBJECTIVE].isna().iloc[4]  # the errored trial reported none


def test_summary_lists_the_pareto_front_and_the_picked_point(pareto_experiment: ExperimentPaths) -> None:
    text = summarize(pareto_experiment.root)
    assert "Second objective `cost/ms_per_image_b1`" in text
    assert "## Pareto front: 3 of 4 completed trials" in text
    assert "| ab_00000 | 2 | 2 | 40.00 | 2 | 0.4 |  |" in text
    assert "| ab_00001 | 4 | 2 | 30.00 | 4 | 0.8 | yes |" in text and "| ab_00003 |" not in text.split("Pareto")[1]
    assert "`search.pick=max_ms=5` took trial ab_00001 for the final retrain." in text
    assert "## Picked configuration: trial ab_00001, objective 30.00 mm, 4 ms per image" in text
    assert "Final retrain: test split (64 samples), trial ab_00001's configuration" in text
    assert "ms per image" in text.split("## Trials")[1].splitlines()[2]  # the trial table's cost column


def test_summary_when_no_point_was_picked(pareto_experiment: ExperimentPaths) -> None:
    from hmh.results.pareto import front, write_front

    rows = read_table(pareto_experiment.trials, TRIALS_SCHEMA)[0].to_pylist()
    write_front(pareto_experiment, front(rows), "max_ms=1", None)
    pareto_experiment.final.unlink()
    text = summarize(pareto_experiment.root)
    assert "`search.pick=max_ms=1` took no point (none qualifies; resume with another search.pick)." in text
    assert "## Lowest-MPJPE configuration: trial ab_00002" in text


def test_pareto_plot_and_the_mpjpe_importances_are_written(pareto_experiment: ExperimentPaths) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="pareto", storage=pareto_experiment.optuna_url,
                                directions=["minimize", "minimize"])
    for i in range(6):
        t = study.ask()
        k = t.suggest_categorical("model.num_hypotheses", [2, 4, 8])
        lr = t.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
        study.tell(t, [50 - k + 100 * lr + i * 0.01, float(k)])
    written = write_plots(pareto_experiment.root, "pareto")
    assert [p.name for p in written] == ["objective_vs_trial.png", "mpjpe_vs_k.png", "pareto.png",
                                         "param_importances.png"]
    assert (pareto_experiment.plots / "pareto.png").read_bytes()[:4] == b"\x89PNG"
