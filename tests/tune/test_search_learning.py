"""benchmarks/search_learning.py, the tabular search benchmark where the models learn, on made-up tables: its
design covers every (K, stages) cell, a proposal maps to the nearest configuration of its own cell, "train briefly,
keep the top few" spends its budget and finishes the ones it kept, each signal's rank agreement with the final,
an incomplete table refused naming the file, and (Ray) the replay of every arm through Tuner + hmh's searcher."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from hmh.results.tables import write_table

REPO = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("search_learning", REPO / "benchmarks" / "search_learning.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _final(params: dict) -> float:
    """A made-up final: lowest at lr 1e-3 and K=8."""
    return 30.0 + 8.0 / params["model.num_hypotheses"] + abs(math.log10(params["optim.lr"]) + 3.0) * 20.0


def _rows(bench, points: list[dict]) -> list[dict]:
    rows = []
    for config_id, params in enumerate(points):
        selects = bench.cell(params)[1]
        epochs = bench.GENERATION_EPOCHS + (bench.SELECTION_EPOCHS if selects else 0)
        final = _final(params)
        for epoch in range(1, epochs + 1):
            stage = "generation" if epoch <= bench.GENERATION_EPOCHS else "selection"
            value = final + 10.0 / epoch
            rows.append({"config_id": config_id, "params": json.dumps(params), "trial_epoch": epoch, "stage": stage,
                         "objective": value, "mean_of_k": 100.0 - config_id if stage == "generation" else 50.0,
                         "best_of_k": value - 5.0, "label_oracle": value - 2.0, "hyp0": value + 5.0,
                         "final": value if stage == "selection" else math.nan,
                         "seconds": 10.0 if stage == "generation" else 20.0, "test_final": final + 1.0,
                         "test_constant": 100.0})
    return rows


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def points(bench) -> list[dict]:
    return bench.design(16)


def test_the_design_is_seeded_and_covers_every_k_with_and_without_a_selection_stage(bench, points) -> None:
    assert points == bench.design(16)
    assert {bench.cell(p) for p in points} == {(k, s) for k in (2, 4, 8) for s in (True, False)}
    assert len(points) >= 16
    assert all(1 <= p["selection.top_n"] <= p["model.num_hypotheses"] for p in points)


def test_a_proposal_maps_to_the_nearest_configuration_of_its_cell(bench, points, tmp_path: Path) -> None:
    table = tmp_path / "table.parquet"
    write_table(table, _rows(bench, points), bench.TABLE_SCHEMA)
    configs = bench.load_configs(table, len(points))
    space = bench._space()
    for config in configs:  # a tabulated point is its own nearest
        assert bench.nearest(config.params, configs, space) is config
    target = next(c for c in configs if bench.cell(c.params) == (8, True))
    moved = {**target.params, "optim.lr": target.params["optim.lr"] * 1.01}
    assert bench.nearest(moved, configs, space) is target
    other_k = {**target.params, "model.num_hypotheses": 4, "selection.top_n": 1}
    assert bench.cell(bench.nearest(other_k, configs, space).params) == (4, True)


def test_an_incomplete_table_is_refused_naming_the_file(bench, points, tmp_path: Path) -> None:
    table = tmp_path / "table.parquet"
    write_table(table, _rows(bench, points)[:-1], bench.TABLE_SCHEMA)
    with pytest.raises(SystemExit, match=r"table.parquet: configuration \d+ has epochs .*search_learning.py table"):
        bench.load_configs(table)
    write_table(table, _rows(bench, points[:3]), bench.TABLE_SCHEMA)
    with pytest.raises(SystemExit, match=r"table.parquet: 3 of 16 configurations"):
        bench.load_configs(table, 16)


def test_train_briefly_keep_the_top_few_spends_its_budget_and_finishes_what_it_kept(bench, points,
                                                                                     tmp_path: Path) -> None:
    table = tmp_path / "table.parquet"
    write_table(table, _rows(bench, points), bench.TABLE_SCHEMA)
    configs = bench.load_configs(table)
    seconds = bench.stage_seconds(configs)
    assert seconds == {"generation": 10.0, "selection": 20.0}
    curve = bench.brief_then_finish(0, 1000.0, configs, seconds, brief=1, draw=8, keep=2)
    spent = [s for s, _ in curve]
    assert spent == sorted(spent) and 1000.0 <= spent[-1] < 1000.0 + 20.0
    # the first round: 8 epochs of 10 s, then the 2 kept (lowest epoch-1 objective) finished
    firsts = curve[:8]
    assert all(math.isinf(best) for _, best in firsts)
    finished = [best for _, best in curve if not math.isinf(best)]
    assert finished and min(finished) >= min(_final(p) for p in points)
    assert bench.best_at(curve, 1000.0) == min(finished)
    assert bench.seconds_to_reach(curve, math.inf) == curve[0][0]
    assert math.isinf(bench.seconds_to_reach(curve, 0.0))
    first = [next(bench.proposals(0, configs)).config_id for _ in range(2)]  # seeded, as random search's sampler
    drawn = bench.proposals(0, configs)
    assert next(drawn).config_id == first[0] and all(next(drawn) in configs for _ in range(20))


def test_each_signal_is_ranked_against_the_final(bench, points, tmp_path: Path) -> None:
    table = tmp_path / "table.parquet"
    write_table(table, _rows(bench, points), bench.TABLE_SCHEMA)
    agreement = bench.signal_agreement(bench.load_configs(table))
    epochs = bench.GENERATION_EPOCHS + bench.SELECTION_EPOCHS
    assert set(agreement) == {*bench.SIGNALS, "objective"} and all(len(v) == epochs for v in agreement.values())
    assert agreement["best_of_k"] == pytest.approx([1.0] * epochs)  # a shifted copy of the final ranks as it
    assert all(math.isnan(v) for v in agreement["final"][:bench.GENERATION_EPOCHS])  # no selector yet
    assert math.isnan(agreement["mean_of_k"][-1])  # one value for every configuration: no ranking


def test_a_trial_reports_the_generation_signal_only_while_a_selector_is_to_come(bench, points, tmp_path: Path) -> None:
    table = tmp_path / "table.parquet"
    write_table(table, _rows(bench, points), bench.TABLE_SCHEMA)
    configs = bench.load_configs(table)
    assert bench.best_signal(configs) == "best_of_k"  # mean of K ranks by config_id, not by the final
    selecting = next(c for c in configs if bench.cell(c.params)[1])
    first, last = selecting.epochs[0], selecting.epochs[-1]
    assert bench.reported(first, True, "best_of_k") == first["best_of_k"]
    assert bench.reported(first, True, "objective") == first["objective"]
    assert bench.reported(last, True, "best_of_k") == last["objective"]  # the selection stage: the selected top-n
    whole = next(c for c in configs if not bench.cell(c.params)[1])  # top_n = K: its objective is its final
    assert [bench.reported(r, False, "best_of_k") for r in whole.epochs] == [r["objective"] for r in whole.epochs]
    names = [arm.name for arm in bench.arms("best_of_k")]
    assert names[0] == bench.REFERENCE and "TPE + ASHA from epoch 1 on best_of_k" in names
    assert len(bench.arms("mean_of_k")) == len(names) - 1


@pytest.mark.ray
def test_every_arm_replays_through_tune_and_the_report_is_written(bench, points, tmp_path: Path) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules["search_learning"])  # a script: Ray's workers cannot import
    table = tmp_path / "table.parquet"
    write_table(table, _rows(bench, points), bench.TABLE_SCHEMA)
    out = tmp_path / "learning.md"
    assert bench.main(["replay", "--table", str(table), "--seeds", "1", "--budget", "3", "--out", str(out)]) == 0
    text = out.read_text()
    for name in (*(arm.name for arm in bench.arms("best_of_k")), *bench.brief_arms("best_of_k")):
        assert f"| {name} |" in text
    assert "| best_of_k | 1.00 |" in text
    assert (tmp_path / "learning.png").stat().st_size > 0
