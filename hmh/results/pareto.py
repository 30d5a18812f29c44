"""The Pareto front of a two-objective search (``search.objectives=mpjpe_ms``) and the point ``search.pick`` takes
from it. Pure functions over ``trials.parquet`` rows: no Ray, no torch.

Both objectives are minimised: the trial's objective (:data:`hmh.results.tables.OBJECTIVE`, the selected current-frame
MPJPE on the validation split, mm) and its inference cost (:data:`hmh.results.tables.COST_OBJECTIVE`, ms per image at
batch 1). A point dominates another when it is no worse in both and better in at least one; the front is every
completed trial (full budget, both values finite) that no other completed trial dominates. Two trials with equal
values dominate neither each other, so both stay on the front.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hmh.config import PICKS, ConfigError, parse_pick
from hmh.errors import HmhError
from hmh.results.tables import (
    COST_KEYS,
    COST_OBJECTIVE,
    PARETO_SCHEMA,
    ExperimentPaths,
    completed,
    read_table,
    write_table,
)

__all__ = ["ParetoPoint", "PickError", "candidates", "choose", "dominates", "front", "non_dominated", "read_front",
           "write_front"]


class PickError(HmhError):
    """No point of the front satisfies ``search.pick`` (the message names the rule and the front's range)."""


@dataclass(frozen=True)
class ParetoPoint:
    """One trial as a point of the objective plane (a ``pareto.parquet`` row without ``picked``)."""

    trial_id: str
    trial_index: int
    k: int  # model.num_hypotheses
    top_n: int  # selection.top_n
    mpjpe: float  # the trial's objective, mm
    ms: float  # ms per image at batch 1 (the second objective)
    ms_batch8: float | None  # ms per image at batch 8

    @property
    def values(self) -> tuple[float, float]:
        return self.mpjpe, self.ms


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` dominates ``b`` (both minimised): no worse in every objective and better in at least one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices (in order) of the ``points`` that no other point dominates."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def candidates(rows: Sequence[Mapping[str, Any]]) -> list[ParetoPoint]:
    """The completed trials of ``rows`` (``trials.parquet``) with a finite objective and cost, as points."""
    return [ParetoPoint(r["trial_id"], r["trial_index"], r["config/model.num_hypotheses"], r["config/selection.top_n"],
                        r["objective"], r[COST_OBJECTIVE], r[COST_KEYS[1]])
            for r in rows if completed(r) and _finite(r["objective"]) and _finite(r[COST_OBJECTIVE])]


def front(rows: Sequence[Mapping[str, Any]]) -> list[ParetoPoint]:
    """The Pareto front of ``rows`` (module docstring), cheapest first (ties: lower MPJPE, then creation order)."""
    points = candidates(rows)
    kept = [points[i] for i in non_dominated([p.values for p in points])]
    return sorted(kept, key=lambda p: (p.ms, p.mpjpe, p.trial_index))


def choose(points: Sequence[ParetoPoint], pick: str) -> ParetoPoint:
    """The point of the front ``points`` that ``pick`` (``search.pick``) takes: ``min_mpjpe`` the lowest MPJPE,
    ``min_ms`` the cheapest, ``max_ms=<ms>`` the lowest MPJPE among those with ms <= the limit (ties: the cheaper,
    then the earlier trial). Raises :class:`PickError` when no point qualifies, naming the limit and the front's
    cheapest ms."""
    parsed = parse_pick(pick)
    if parsed is None:
        raise ConfigError(f"search.pick={pick!r} is invalid: expected {PICKS}")
    if not points:
        raise PickError(f"search.pick={pick!r}: the Pareto front is empty (no trial completed with both objectives)")
    rule, limit = parsed
    if rule == "min_ms":
        return min(points, key=lambda p: (p.ms, p.mpjpe, p.trial_index))
    allowed = [p for p in points if p.ms <= limit]
    if not allowed:
        cheapest = min(points, key=lambda p: p.ms)
        raise PickError(f"search.pick={pick!r}: no point of the Pareto front has ms <= {limit:g} (the cheapest: "
                        f"{cheapest.ms:.3g} ms per image, trial {cheapest.trial_id}, K={cheapest.k}, "
                        f"top-n={cheapest.top_n}); pass a larger limit or min_ms")
    return min(allowed, key=lambda p: (p.mpjpe, p.ms, p.trial_index))


def write_front(paths: ExperimentPaths, points: Sequence[ParetoPoint], pick: str,
                picked: ParetoPoint | None) -> Path:
    """Write ``pareto.parquet`` (:data:`hmh.results.tables.PARETO_SCHEMA`): ``points`` in order, ``picked`` marked."""
    rows = [asdict(p) | {"picked": picked is not None and p.trial_id == picked.trial_id} for p in points]
    return write_table(paths.pareto, rows, PARETO_SCHEMA,
                       {"pick": pick, "picked": picked.trial_id if picked else None})


def read_front(paths: ExperimentPaths) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``pareto.parquet``'s rows (dicts with ``picked``) and metadata (``pick``, ``picked``)."""
    table, meta = read_table(paths.pareto, PARETO_SCHEMA)
    return table.to_pylist(), meta
