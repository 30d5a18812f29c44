"""The Pareto front of a two-objective search and search.pick, from trials.parquet rows alone (no Ray, no torch)."""

import math
import random
from pathlib import Path

import pytest

from hmh.config import SEARCH_OBJECTIVES, ConfigError
from hmh.results.pareto import (
    PickError,
    candidates,
    choose,
    dominates,
    front,
    non_dominated,
    read_front,
    write_front,
)
from hmh.results.tables import COST_KEYS, COST_OBJECTIVE, OBJECTIVE_KEYS, PARETO_SCHEMA, ExperimentPaths, read_table


def row(trial_id: str, k: int, top_n: int, mpjpe: float | None, ms: float | None, status: str = "TERMINATED",
        done: int = 3) -> dict:
    """The trials.parquet columns hmh.results.pareto reads."""
    return {"trial_id": trial_id, "trial_index": int(trial_id[1:]), "status": status, "epochs_done": done,
            "epochs_total": 3, "objective": mpjpe, "config/model.num_hypotheses": k, "config/selection.top_n": top_n,
            COST_KEYS[0]: ms, COST_KEYS[1]: None if ms is None else ms / 4}


ROWS = [row("t0", 2, 1, 40.0, 2.0), row("t1", 4, 2, 30.0, 4.0), row("t2", 8, 2, 25.0, 9.0),
        row("t3", 4, 1, 35.0, 5.0),  # dominated by t1 (worse in both)
        row("t4", 8, 4, 25.0, 12.0),  # dominated by t2 (same MPJPE, dearer)
        row("t5", 2, 2, 10.0, 1.0, status="ERROR", done=1),  # errored: not a candidate
        row("t6", 2, 1, 12.0, 1.5, done=1),  # cut short: not a candidate
        row("t7", 4, 2, math.nan, 3.0), row("t8", 4, 2, 28.0, None)]  # a missing objective: not a candidate


def test_objective_keys_follow_search_objectives() -> None:
    assert tuple(OBJECTIVE_KEYS) == SEARCH_OBJECTIVES and OBJECTIVE_KEYS["mpjpe_ms"][1] == COST_OBJECTIVE


def test_dominance_needs_no_worse_in_both_and_better_in_one() -> None:
    assert dominates((1, 1), (2, 2)) and dominates((1, 2), (2, 2)) and not dominates((2, 2), (1, 3))
    assert not dominates((1, 1), (1, 1))  # equal points dominate neither: both stay on a front
    assert non_dominated([(1, 1), (1, 1), (2, 0.5), (3, 3)]) == [0, 1, 2]
    assert non_dominated([]) == []


def test_front_keeps_completed_non_dominated_trials_cheapest_first() -> None:
    assert [p.trial_id for p in candidates(ROWS)] == ["t0", "t1", "t2", "t3", "t4"]
    points = front(ROWS)
    assert [p.trial_id for p in points] == ["t0", "t1", "t2"]
    assert [(p.k, p.top_n, p.mpjpe, p.ms, p.ms_batch8) for p in points][0] == (2, 1, 40.0, 2.0, 0.5)


def test_random_fronts_are_non_dominated_and_dominate_the_rest() -> None:
    rng = random.Random(0)
    for _ in range(50):
        rows = [row(f"t{i}", rng.choice([2, 4, 8]), 1, round(rng.uniform(10, 50), 1), round(rng.uniform(1, 20)))
                for i in range(rng.randint(1, 12))]
        points = front(rows)
        kept = {p.trial_id for p in points}
        assert not any(dominates(a.values, b.values) for a in points for b in points)
        for p in candidates(rows):
            assert p.trial_id in kept or any(dominates(q.values, p.values) for q in points)


def test_pick_rules() -> None:
    points = front(ROWS)
    assert choose(points, "min_mpjpe").trial_id == "t2"
    assert choose(points, "min_ms").trial_id == "t0"
    assert choose(points, "max_ms=5").trial_id == "t1" and choose(points, "max_ms=4").trial_id == "t1"
    assert choose(points, "max_ms=3.9").trial_id == "t0" and choose(points, "max_ms=1e3").trial_id == "t2"


def test_a_pick_no_point_satisfies_names_the_limit_and_the_cheapest() -> None:
    with pytest.raises(PickError) as err:
        choose(front(ROWS), "max_ms=1.5")
    message = str(err.value)
    assert "search.pick='max_ms=1.5'" in message and "ms <= 1.5" in message
    assert "the cheapest: 2 ms per image, trial t0, K=2, top-n=1" in message and "\n" not in message
    with pytest.raises(PickError, match="front is empty"):
        choose([], "min_mpjpe")
    with pytest.raises(ConfigError, match="search.pick='fastest' is invalid"):
        choose(front(ROWS), "fastest")


def test_pareto_file_round_trip(tmp_path: Path) -> None:
    paths = ExperimentPaths(tmp_path / "exp")
    points = front(ROWS)
    write_front(paths, points, "max_ms=5", choose(points, "max_ms=5"))
    table, meta = read_table(paths.pareto, PARETO_SCHEMA)
    assert table.schema.remove_metadata() == PARETO_SCHEMA
    rows, meta = read_front(paths)
    assert [(r["trial_id"], r["k"], r["top_n"], r["picked"]) for r in rows] == [
        ("t0", 2, 1, False), ("t1", 4, 2, True), ("t2", 8, 2, False)]
    assert meta == {"pick": "max_ms=5", "picked": "t1"}
    write_front(paths, points, "max_ms=1", None)
    rows, meta = read_front(paths)
    assert not any(r["picked"] for r in rows) and meta["picked"] is None
