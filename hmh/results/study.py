"""The reproduction study's result files and their summary: the dissertation's Tables 4.1-4.3 in shape, with
computed checks.

``python -m tune.study`` (the Ray Tune driver) writes ``results/<experiment>/``::

    test.parquet     one row per (arm, reduction): the arm's test-split metric table (TEST_SCHEMA)
    epochs.parquet   one row per (arm, stage, epoch): every epoch's validation metrics (EPOCHS_SCHEMA)
    summary.md       the three tables and their shape checks (:func:`summarize`, ``hmh results summarize``)
    plots/           best_of_k_vs_k.png, selection_epochs.png

An *arm* is one trial: ``k<K>`` trains both stages with K hypotheses (``k1``: generation only), ``k<M>-no-msf``
trains a selector without the Model-Specific Feature on ``k<M>``'s generator, ``k<K>-<name>`` a selector with other
selection settings (``tune.study --selector-set``, kept in test.parquet's metadata) on ``k<K>``'s generator. The
``constant`` arm holds the constant mean-pose baseline (reduction ``constant``). No Ray and no torch here: the
summary is rebuilt from Parquet alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from hmh.eval.report import format_or_dash as _mm
from hmh.eval.report import selection_lines
from hmh.files import atomic
from hmh.results.tables import CONSTANT, METRICS, REDUCTION_NAMES, SELECTION_STATS, read_table, val_columns

__all__ = ["EPOCHS_SCHEMA", "MIN_GAIN", "SEED_TABLE_4_3", "SELECTOR_SETS", "TEST_SCHEMA", "StudyPaths", "is_study",
           "selector_sets", "summarize", "test_rows", "write_study_plots", "write_summary"]

ARM_FIELDS = [pa.field("arm", pa.string()), pa.field("num_hypotheses", pa.int64()), pa.field("msf", pa.bool_()),
              pa.field("top_n", pa.int64())]
TEST_SCHEMA = pa.schema([
    *ARM_FIELDS, pa.field("reduction", pa.string()), *(pa.field(m, pa.float64()) for m in METRICS),
    *(pa.field(f"selection_{s}", pa.float64()) for s in SELECTION_STATS), pa.field("samples", pa.int64()),
])
EPOCHS_SCHEMA = pa.schema([
    *ARM_FIELDS, pa.field("stage", pa.string()), pa.field("epoch", pa.int64()),
    *(pa.field(c, pa.float64()) for c in val_columns()), pa.field("time_total_s", pa.float64()),
])
TEST_REDUCTIONS = ("final", "best_of_k", "label_oracle", "mean_of_k", "random_n", "hyp0", CONSTANT)
# The dissertation's Table 4.1 (BlurHand test, K = 16, n = 4; current-frame MPJPE, MPVPE in mm) and 4.2 (best of K
# against K).
SEED_TABLE_4_1 = {"final": (16.72, 15.22), "best_of_k": (14.12, 12.59), "BlurHandNet": (16.80, 15.30)}
SEED_TABLE_4_2 = {1: 16.78, 4: 15.27, 16: 14.12, 32: 13.78}
SEED_TABLE_4_3 = {"w/o MSF": {10: 17.72, 20: 17.18, 30: 16.98}, "w/ MSF": {10: 17.58, 20: 17.05, 30: 16.72}}
MIN_GAIN = 0.3  # the selection gain the multi-hypothesis model must reach (hmh.eval.protocol)
SELECTOR_SETS = "selector_sets"  # test.parquet metadata: {arm: its selector's --selector-set}
K_ARM = re.compile(r"k(\d+)")  # an arm that trains its own generator


@dataclass(frozen=True)
class StudyPaths:
    root: Path

    test = property(lambda self: self.root / "test.parquet")
    epochs = property(lambda self: self.root / "epochs.parquet")
    summary = property(lambda self: self.root / "summary.md")
    plots = property(lambda self: self.root / "plots")


def selector_sets(paths: StudyPaths) -> dict[str, list[str]]:
    """``{arm: [key=value, ...]}`` of the arms whose selector has its own settings (``k<K>-<name>``)."""
    return read_table(paths.test, TEST_SCHEMA)[1].get(SELECTOR_SETS, {}) if paths.test.is_file() else {}


def is_study(root: str | Path) -> bool:
    """Whether ``root`` holds a reproduction study (its ``test.parquet`` or ``epochs.parquet``)."""
    paths = StudyPaths(Path(root))
    return paths.test.is_file() or paths.epochs.is_file()


def test_rows(arm: Mapping[str, Any], metrics: Mapping[str, float], samples: int) -> list[dict[str, Any]]:
    """``test.parquet`` rows of one arm (``{"arm", "num_hypotheses", "msf", "top_n"}``) from its flat metric table
    (``{"<reduction>/<metric>": mm, "selection/<stat>": value}``); reductions present only."""
    rows = []
    for reduction in TEST_REDUCTIONS:
        if not any(f"{reduction}/{m}" in metrics for m in METRICS):
            continue
        row: dict[str, Any] = {**arm, "reduction": reduction, "samples": samples}
        row.update({m: metrics.get(f"{reduction}/{m}") for m in METRICS})
        if reduction == "final":
            row.update({f"selection_{s}": metrics.get(f"selection/{s}") for s in SELECTION_STATS})
        rows.append(row)
    return rows


def _verdict(ok: bool | None, text: str, pending: str) -> str:
    if ok is None:
        return f"- PENDING: {text} ({pending})"
    return f"- {'PASS' if ok else 'FAIL'}: {text}"


class _Study:
    """The study's rows, indexed: ``test[arm][reduction]`` and ``epochs[arm]`` (selection epochs in order)."""

    def __init__(self, paths: StudyPaths) -> None:
        table, meta = read_table(paths.test, TEST_SCHEMA) if paths.test.is_file() else (None, {})
        test = table.to_pylist() if table is not None else []
        epochs = read_table(paths.epochs, EPOCHS_SCHEMA)[0].to_pylist() if paths.epochs.is_file() else []
        self.test: dict[str, dict[str, dict]] = {}
        for r in test:
            self.test.setdefault(r["arm"], {})[r["reduction"]] = r
        self.epochs: dict[str, list[dict]] = {}
        for r in sorted(epochs, key=lambda r: (r["arm"], r["stage"], r["epoch"])):
            if r["stage"] == "selection":
                self.epochs.setdefault(r["arm"], []).append(r)
        self.arms = {r["arm"]: r for r in test + epochs if r["arm"] != CONSTANT}
        self.selector_sets: dict[str, list[str]] = meta.get(SELECTOR_SETS, {})  # the file read once

    def k_arms(self) -> dict[int, str]:
        """``{K: arm}`` of the arms that train their own generator (``k<K>``; not the ones on another's)."""
        return {r["num_hypotheses"]: a for a, r in self.arms.items() if K_ARM.fullmatch(a)}

    def metric(self, arm: str, reduction: str, metric: str = "mpjpe_current") -> float | None:
        return self.test.get(arm, {}).get(reduction, {}).get(metric)

    def main_arm(self) -> str | None:
        """The multi-hypothesis model of Tables 4.1 and 4.3: the arm whose generator a no-MSF arm shares, else
        the largest K with a selector."""
        for arm, r in self.arms.items():
            if not r["msf"] and r["num_hypotheses"] > 1:
                return arm.removesuffix("-no-msf")
        selected = [k for k in self.k_arms() if k > 1]
        return self.k_arms()[max(selected)] if selected else None


def _table_4_1(study: _Study) -> list[str]:
    main, k1 = study.main_arm(), study.k_arms().get(1)
    lines = ["| method | MPJPE current | MPVPE | dissertation (BlurHand, K = 16, n = 4) |", "|---|---:|---:|---:|"]
    if k1:
        lines.append(f"| K = 1 model ({k1}) | {_mm(study.metric(k1, 'mean_of_k'))} | "
                     f"{_mm(study.metric(k1, 'mean_of_k', 'mpvpe'))} | 16.78 (Table 4.2, K = 1) |")
    if main:
        k = study.arms[main]["num_hypotheses"]
        for reduction in ("final", "best_of_k", "label_oracle", "mean_of_k", "random_n"):
            seed = SEED_TABLE_4_1.get(reduction)
            lines.append(f"| K = {k}, {REDUCTION_NAMES[reduction]} ({main}) | {_mm(study.metric(main, reduction))} | "
                         f"{_mm(study.metric(main, reduction, 'mpvpe'))} | "
                         f"{'-' if seed is None else f'{seed[0]:.2f} / {seed[1]:.2f}'} |")
    lines.append(f"| {REDUCTION_NAMES[CONSTANT]} | {_mm(study.metric(CONSTANT, CONSTANT))} | - | - |")
    lines.append(f"| BlurHandNet (paper) | - | - | {SEED_TABLE_4_1['BlurHandNet'][0]:.2f} / "
                 f"{SEED_TABLE_4_1['BlurHandNet'][1]:.2f} |")
    final, single = (study.metric(main, "final") if main else None), (study.metric(k1, "mean_of_k") if k1 else None)
    gain = study.metric(main, "final", "selection_gain") if main else None
    checks = [
        _verdict(None if final is None or single is None else final <= single,
                 f"final ({_mm(final)}) <= the K = 1 model ({_mm(single)})", "an arm has not finished"),
        _verdict(None if gain is None or math.isnan(gain) else gain >= MIN_GAIN,
                 f"selection gain ({'-' if gain is None else f'{gain:.2f}'}) >= {MIN_GAIN}",
                 "the multi-hypothesis arm has not finished"),
    ]
    selected = study.test.get(main, {}).get("final", {}) if main else {}
    stats = {f"selection/{s}": selected[f"selection_{s}"] for s in SELECTION_STATS
             if selected.get(f"selection_{s}") is not None}
    return lines + ["", *checks, *(f"- {line}" for line in selection_lines(stats))]


def _table_4_2(study: _Study) -> list[str]:
    ks = study.k_arms()
    best = {k: study.metric(arm, "best_of_k") for k, arm in ks.items()}
    lines = ["| K | best of K, MPJPE current (test) | dissertation Table 4.2 |", "|---:|---:|---:|"]
    for k in sorted(set(ks) | set(SEED_TABLE_4_2)):
        lines.append(f"| {k} | {_mm(best.get(k))} | {_mm(SEED_TABLE_4_2.get(k))} |")
    done = sorted(k for k, v in best.items() if v is not None)
    ok = all(best[a] >= best[b] for a, b in zip(done, done[1:], strict=False)) if len(done) >= 2 else None
    return lines + ["", _verdict(ok, f"best of K falls as K grows (K = {', '.join(map(str, done)) or '-'})",
                                 "fewer than two K finished")]


def _table_4_3(study: _Study) -> list[str]:
    main = study.main_arm()
    with_msf = study.epochs.get(main, []) if main else []
    without = study.epochs.get(f"{main}-no-msf", []) if main else []
    lines = ["| selection epoch | final, w/ MSF (val) | final, w/o MSF (val) |", "|---:|---:|---:|"]
    for epoch in range(1, max(len(with_msf), len(without)) + 1):
        cells = [_mm(rows[epoch - 1]["val/final/mpjpe_current"]) if epoch <= len(rows) else "-"
                 for rows in (with_msf, without)]
        lines.append(f"| {epoch} | {cells[0]} | {cells[1]} |")
    seed = " ; ".join(f"{name}: " + ", ".join(f"epoch {e} {v:.2f}" for e, v in row.items())
                      for name, row in SEED_TABLE_4_3.items())
    last = (with_msf[-1]["val/final/mpjpe_current"], without[-1]["val/final/mpjpe_current"]) \
        if with_msf and without and len(with_msf) == len(without) else None
    ok = None if last is None else last[0] <= last[1]
    text = "MSF final <= w/o MSF at the last epoch" + ("" if last is None else f" ({_mm(last[0])} vs {_mm(last[1])})")
    return lines + ["", f"(dissertation Table 4.3, BlurHand test: {seed})", "",
                    _verdict(ok, text, "both selectors must finish the same epochs")]


def _option_pairs(study: _Study) -> list[tuple[str, str]]:
    """``(k<K>-<name>, k<K>)`` for every arm whose selector has its own settings, by K."""
    pairs = [(arm, match.group(1)) for arm in study.test
             if (match := re.fullmatch(r"(k\d+)-(.+)", arm)) and match.group(2) != "no-msf"]
    return sorted(pairs, key=lambda pair: (study.arms[pair[0]]["num_hypotheses"], pair[0]))


def _beyond(study: _Study) -> list[str]:
    """Each selector with its own settings beside the faithful one on the same generator, and both against K = 1."""
    k1 = study.k_arms().get(1)
    single = study.metric(k1, "mean_of_k") if k1 else None
    lines = ["| arm | selector | final | label-oracle top-n | random top-n | selection gain | final / K = 1 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    checks = []
    for option, faithful in _option_pairs(study):
        for arm, selector in ((faithful, "the dissertation's (JRC, its settings)"),
                              (option, ", ".join(f"`{s}`" for s in study.selector_sets.get(option, [])) or "-")):
            final, gain = study.metric(arm, "final"), study.metric(arm, "final", "selection_gain")
            ratio = "-" if final is None or not single else f"{final / single:.3f}"
            lines.append(f"| {arm} | {selector} | {_mm(final)} | {_mm(study.metric(arm, 'label_oracle'))} | "
                         f"{_mm(study.metric(arm, 'random_n'))} | {'-' if gain is None else f'{gain:.2f}'} | "
                         f"{ratio} |")
            checks.append(_verdict(None if final is None or single is None else final <= single,
                                   f"{arm}: final ({_mm(final)}) <= the K = 1 model ({_mm(single)})",
                                   "an arm has not finished"))
    return lines + ["", *checks]


def summarize(root: str | Path) -> str:
    """``summary.md`` of the study in ``root`` from its Parquet files alone."""
    paths = StudyPaths(Path(root))
    if not is_study(paths.root):
        raise FileNotFoundError(f"{paths.root}: no test.parquet or epochs.parquet, not a reproduction study")
    study = _Study(paths)
    samples = next((r["samples"] for arm in study.test.values() for r in arm.values()), None)
    finished = sorted(a for a in study.test if a != CONSTANT)
    out = [f"# Reproduction study: {paths.root.name}", "",
           "The dissertation's Tables 4.1-4.3 in shape, on the experiment config's data (metrics in mm; test split"
           f"{'' if samples is None else f', {samples} samples'}; Table 4.3 on the validation split after each "
           "selection epoch). Arms finished: " + (", ".join(finished) or "none") + ". The dissertation's numbers are "
           "real BlurHand at paper scale: compare the orderings, not the millimetres.", "",
           "## Table 4.1: the multi-hypothesis model against one hypothesis", "", *_table_4_1(study), "",
           "## Table 4.2: best of K against K (the same training budget)", "", *_table_4_2(study), "",
           "## Table 4.3: the final prediction after each selection epoch, with and without MSF", "",
           *_table_4_3(study), ""]
    if _option_pairs(study):
        out += ["## Beyond the dissertation: selectors with other settings, on the same generators", "",
                "Each `k<K>-<name>` arm trains a selector with the settings shown on `k<K>`'s generator, beside the "
                "dissertation's selector (the `k<K>` row), which is what reproduces the dissertation.", "",
                *_beyond(study), ""]
    return "\n".join(out)


def write_summary(root: str | Path) -> Path:
    path = StudyPaths(Path(root)).summary
    atomic.write_text(path, summarize(root))
    return path


def write_study_plots(root: str | Path) -> list[Path]:
    """``plots/best_of_k_vs_k.png`` and ``plots/selection_epochs.png`` from the Parquet files."""
    from hmh.results.search_plots import _figure, _legend, _save

    paths = StudyPaths(Path(root))
    study = _Study(paths)
    written = []
    plt, fig, ax = _figure()
    ks = study.k_arms()
    for reduction, marker in (("best_of_k", "o"), ("final", "s"), ("mean_of_k", "^")):
        points = [(k, study.metric(a, reduction)) for k, a in sorted(ks.items())
                  if study.metric(a, reduction) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker=marker, label=REDUCTION_NAMES[reduction])
    if ks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ks), [str(k) for k in sorted(ks)])
        ax.minorticks_off()
    ax.set_xlabel("K (hypotheses)")
    ax.set_ylabel("MPJPE current (mm, test)")
    ax.set_title("Table 4.2: best of K against K")
    _legend(ax)
    written.append(_save(plt, fig, paths.plots / "best_of_k_vs_k.png"))
    plt, fig, ax = _figure()
    main = study.main_arm()
    for arm, label in ((main, "w/ MSF"), (f"{main}-no-msf", "w/o MSF")):
        rows = study.epochs.get(arm or "", [])
        if rows:
            ax.plot([r["epoch"] for r in rows], [r["val/final/mpjpe_current"] for r in rows], marker="o", label=label)
    ax.set_xlabel("selection epoch")
    ax.set_ylabel("final MPJPE current (mm, validation)")
    ax.set_title("Table 4.3: the selector's training, with and without MSF")
    _legend(ax)
    written.append(_save(plt, fig, paths.plots / "selection_epochs.png"))
    return written
