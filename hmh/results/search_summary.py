"""``summary.md`` of a search, built from its Parquet files alone (``hmh results summarize`` reprints it).

Sections: the trials (completed, stopped early, errored), the Pareto front of a two-objective search
(``pareto.parquet``: MPJPE against inference ms per image), the best (or picked) configuration, the final retrain's
test-split table, and the comparison with the dissertation's Table 4.1 (final vs best-of-K, MPJPE and
MPVPE) and Table 4.2 (best-of-K MPJPE vs K) in shape: the dissertation's numbers are on the real BlurHand test split at
paper scale, so only the orderings carry over to a small or synthetic run, not the millimetres.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hmh.eval.report import format_or_dash as _mm
from hmh.eval.report import selection_lines
from hmh.files import atomic
from hmh.results.pareto import read_front
from hmh.results.tables import (
    COST_KEYS,
    COST_OBJECTIVE,
    FINAL_SCHEMA,
    METRICS,
    OBJECTIVE,
    REDUCTION_NAMES,
    SELECTION_STATS,
    TRIALS_SCHEMA,
    ExperimentPaths,
    ResultsError,
    completed,
    read_table,
)

__all__ = ["SEED_TABLE_4_1", "SEED_TABLE_4_2", "best_trial", "summarize", "write_summary"]

# The dissertation, BlurHand test split, K = 16, n = 4 (mm): (MPJPE current, MPVPE).
SEED_TABLE_4_1 = {"BlurHandNet (paper)": (16.80, 15.30), "seed, final (top-n aggregated)": (16.72, 15.22),
                  "seed, best of K (oracle)": (14.12, 12.59)}
# The dissertation's Table 4.2: best-of-K MPJPE (current frame, mm) against K.
SEED_TABLE_4_2 = {1: 16.78, 4: 15.27, 16: 14.12, 32: 13.78}
MAX_TRIAL_ROWS = 30


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed trial (full budget, not stopped early) with the lowest objective, or None."""
    done = [r for r in rows if completed(r) and r["objective"] is not None]
    return min(done, key=lambda r: r["objective"]) if done else None


def _trial_table(rows: list[dict[str, Any]], searched: list[str], cost: bool) -> list[str]:
    header = ["trial", "status", "epochs", "objective (mm)", "from", "best-of-K (mm)",
              *(["ms per image"] if cost else []), *searched]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ordered = sorted(rows, key=lambda r: (r["objective"] is None, not completed(r), r["objective"] or 0.0))
    for r in ordered[:MAX_TRIAL_ROWS]:
        status = "stopped early" if r["stopped_early"] else r["status"].lower()
        cells = [r["trial_id"], status, f"{r['epochs_done']}/{r['epochs_total']}", _mm(r["objective"]),
                 r["objective_source"] or "-", _mm(r["val/best_of_k/mpjpe_current"]),
                 *([_mm(r[COST_OBJECTIVE], ".3g")] if cost else []), *(_value(r[f"config/{k}"]) for k in searched)]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > MAX_TRIAL_ROWS:
        lines.append(f"\n({len(rows) - MAX_TRIAL_ROWS} more in trials.parquet)")
    return lines


def _pareto_section(front: list[dict[str, Any]], meta: dict[str, Any], completed_trials: int) -> list[str]:
    """The front of ``pareto.parquet`` (its rows and metadata) as a table, cheapest first, with the point
    ``search.pick`` took."""
    lines = [f"## Pareto front: {len(front)} of {completed_trials} completed trials (MPJPE and ms per image, both "
             "minimised; no other completed trial is better in one and no worse in the other)", "",
             "| trial | K | top-n | MPJPE (mm, val) | ms per image, batch 1 | ms per image, batch 8 | picked |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in front:
        lines.append(f"| {r['trial_id']} | {r['k']} | {r['top_n']} | {_mm(r['mpjpe'])} | {_mm(r['ms'], '.3g')} | "
                     f"{_mm(r['ms_batch8'], '.3g')} | {'yes' if r['picked'] else ''} |")
    took = (f"took trial {meta['picked']} for the final retrain" if meta.get("picked")
            else "took no point (none qualifies; resume with another search.pick)")
    return lines + ["", f"`search.pick={meta.get('pick', '?')}` {took}.", ""]


def _final_table(final: list[dict[str, Any]]) -> list[str]:
    lines = ["| method | MPJPE past | MPJPE current | MPJPE future | MPVPE |", "|---|---:|---:|---:|---:|"]
    for r in final:
        lines.append(f"| {REDUCTION_NAMES.get(r['reduction'], r['reduction'])} | "
                     + " | ".join(_mm(r[m]) for m in METRICS) + " |")
    return lines


def _by_reduction(final: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["reduction"]: r for r in final}


def _shape_4_1(final: list[dict[str, Any]]) -> list[str]:
    got = _by_reduction(final)
    lines = ["| method | MPJPE current | MPVPE | source |", "|---|---:|---:|---|"]
    for name, (mpjpe, mpvpe) in SEED_TABLE_4_1.items():
        lines.append(f"| {name} | {mpjpe:.2f} | {mpvpe:.2f} | dissertation Table 4.1 |")
    for key in ("final", "best_of_k", "mean_of_k"):
        if key in got:
            lines.append(f"| this run, {REDUCTION_NAMES[key]} | {_mm(got[key]['mpjpe_current'])} | "
                         f"{_mm(got[key]['mpvpe'])} | final.parquet |")
    checks = []
    if "final" in got and "best_of_k" in got:
        ok = got["best_of_k"]["mpjpe_current"] <= got["final"]["mpjpe_current"]
        checks.append(f"best of K <= final (as in the dissertation): {'yes' if ok else 'no'}")
    if "final" in got and "random_n" in got:
        ok = got["final"]["mpjpe_current"] <= got["random_n"]["mpjpe_current"]
        checks.append(f"final (selected) <= random top-n (the selector helps): {'yes' if ok else 'no'}")
    return lines + ([""] + [f"- {c}" for c in checks] if checks else [])


def _lowest_best_of_k(rows: list[dict[str, Any]]) -> dict[int, float]:
    out: dict[int, float] = {}
    for r in rows:
        if r["val/best_of_k/mpjpe_current"] is not None:
            k = r["config/model.num_hypotheses"]
            out[k] = min(out.get(k, math.inf), r["val/best_of_k/mpjpe_current"])
    return out


def _shape_4_2(rows: list[dict[str, Any]]) -> list[str]:
    done = _lowest_best_of_k([r for r in rows if completed(r)])
    every = _lowest_best_of_k(rows)
    lines = ["| K | dissertation: best of K (test, mm) | this search, completed trials (val, mm) | "
             "this search, all trials incl. stopped early (val, mm) |", "|---:|---:|---:|---:|"]
    for k in sorted(set(SEED_TABLE_4_2) | set(every)):
        lines.append(f"| {k} | {_mm(SEED_TABLE_4_2.get(k))} | {_mm(done.get(k))} | {_mm(every.get(k))} |")
    lines += ["", "(lowest best-of-K current-frame MPJPE among the trials with that K; a trial stopped early "
              "reports it at the epoch it stopped)"]
    if len(done) >= 2:
        ks = sorted(done)
        ok = all(done[a] >= done[b] for a, b in zip(ks, ks[1:], strict=False))
        lines.append("\n- best of K falls as K grows (as in the dissertation), over completed trials: "
                     + ("yes" if ok else "no"))
    return lines


def summarize(root: str | Path) -> str:
    """The summary of the experiment in ``root`` as Markdown, from ``trials.parquet`` (and ``final.parquet``
    when the final retrain has run)."""
    paths = ExperimentPaths(Path(root))
    table, meta = read_table(paths.trials, TRIALS_SCHEMA)
    rows = table.to_pylist()
    if not rows:
        raise ResultsError(f"{paths.trials}: no trials recorded")
    searched = list(meta.get("searched", []))
    experiment = meta.get("experiment", paths.root.name)
    two_objectives = COST_OBJECTIVE in meta.get("objectives", [])
    done = sum(completed(r) for r in rows)
    stopped = sum(bool(r["stopped_early"]) for r in rows)
    errored = sum(r["status"] == "ERROR" for r in rows)
    out = [f"# Search `{experiment}`", "",
           f"Objective `{OBJECTIVE}` (mm, lower is better): the selected (final, top-n aggregated) current-frame "
           "MPJPE on the validation split. A trial stopped during the generation stage has no selector yet and "
           "reports the reduction `train.generation_objective` names instead (`from`; by default mean_of_k, the "
           "mean of all K hypotheses).", ""]
    if two_objectives:
        out += [f"Second objective `{COST_OBJECTIVE}` (ms, lower is better): milliseconds per image of the trial's "
                "generator + selector with top-n aggregation, eval mode, batch 1, on the trial's device (batch 8 in "
                f"`{COST_KEYS[1]}`). Two objectives: no trial is stopped early.", ""]
    continues = meta.get("continues") or {}  # search.scheduler=brief_then_finish: finishing trial -> the one it
    # continues
    finished_later = f", {len(continues)} of them finished by a later trial" if continues else ""
    out += [f"## Trials: {len(rows)} ({done} completed, {stopped} stopped early{finished_later}, {errored} errored)",
            "", *_trial_table(rows, searched, two_objectives), ""]
    picked = None
    if paths.pareto.is_file():
        front, front_meta = read_front(paths)
        out += _pareto_section(front, front_meta, done)
        picked = next((r for r in rows if r["trial_id"] == front_meta.get("picked")), None)
    best = picked or best_trial(rows)
    if best is None:
        out += ["No trial completed its full budget yet.", ""]
    else:
        title = ("Picked configuration" if picked else "Lowest-MPJPE configuration" if two_objectives
                 else "Best configuration")
        cost = f", {_mm(best[COST_OBJECTIVE], '.3g')} ms per image" if picked else ""
        out += [f"## {title}: trial {best['trial_id']}, objective {_mm(best['objective'])} mm{cost}", "",
                "| key | value |", "|---|---|", *(f"| {k} | {_value(best[f'config/{k}'])} |" for k in searched), ""]
    if paths.final.is_file():
        final_table, final_meta = read_table(paths.final, FINAL_SCHEMA)
        final = final_table.to_pylist()
        split = final[0]["split"] if final else "test"
        samples = final[0]["samples"] if final else 0
        out += [f"## Final retrain: {split} split ({samples} samples), trial {final_meta.get('best_trial_id', '?')}'s "
                f"configuration with the full budget", "", *_final_table(final), ""]
        selected = _by_reduction(final).get("final", {})
        stats = {f"selection/{s}": selected[f"selection_{s}"] for s in SELECTION_STATS
                 if selected.get(f"selection_{s}") is not None}
        selection = selection_lines(stats)
        out += [*(f"- {line}" for line in selection), ""] if selection else []
        if final_meta.get("checkpoint"):
            out += [f"Checkpoint: `{final_meta['checkpoint']}`", ""]
        out += ["## Compared with the dissertation, in shape", "", "Table 4.1 (final vs best of K):", "",
                *_shape_4_1(final), ""]
    else:
        out += ["## Final retrain: not run yet (the search was interrupted or is still running)", ""]
    out += ["Table 4.2 (best of K against K):", "", *_shape_4_2(rows), "",
            "The dissertation's numbers are on the real BlurHand test split at paper scale (ResNet-50, 256 px, "
            "K = 16); compare the orderings, not the millimetres.", ""]
    return "\n".join(out)


def write_summary(root: str | Path) -> Path:
    """Write ``summary.md`` into ``root`` atomically and return its path."""
    paths = ExperimentPaths(Path(root))
    atomic.write_text(paths.summary, summarize(paths.root))
    return paths.summary
