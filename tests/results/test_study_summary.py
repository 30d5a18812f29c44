"""The study summary's section beyond the dissertation, rebuilt from Parquet alone: each selector with its own
settings (named in test.parquet's metadata) beside the faithful one on the same generator, both checked against the
K = 1 model; the dissertation's tables read the k<K> arms only."""

from __future__ import annotations

from pathlib import Path

from hmh.results import study
from hmh.results.study import SELECTOR_SETS, TEST_SCHEMA, StudyPaths, summarize
from hmh.results.tables import CONSTANT, write_table


def _arm(name: str, k: int, final: float | None, gain: float | None = None) -> list[dict]:
    metrics = {"best_of_k/mpjpe_current": 19.4, "mean_of_k/mpjpe_current": 36.3 if k > 1 else 32.62,
               "label_oracle/mpjpe_current": 20.2, "random_n/mpjpe_current": 43.7}
    if final is not None:
        metrics.update({"final/mpjpe_current": final, "selection/gain": gain})
    return study.test_rows({"arm": name, "num_hypotheses": k, "msf": True, "top_n": min(k, 2)}, metrics, 800)


def _study(root: Path, rows: list[dict], sets: dict) -> Path:
    root.mkdir()
    write_table(StudyPaths(root).test, rows, TEST_SCHEMA, {SELECTOR_SETS: sets})
    return root


def test_the_option_rows_sit_beside_the_faithful_ones_and_both_are_checked_against_k1(tmp_path: Path) -> None:
    rows = [*_arm("k1", 1, None), *_arm("k8", 8, 33.09, 0.45), *_arm("k8-evidence", 8, 29.1, 0.62),
            *study.test_rows({"arm": CONSTANT, "num_hypotheses": 0, "msf": False, "top_n": 0},
                       {"constant/mpjpe_current": 103.4}, 800)]
    text = summarize(_study(tmp_path / "s", rows, {"k8-evidence": ["selection.evidence=both"]}))
    assert "## Beyond the dissertation: selectors with other settings, on the same generators" in text
    assert "| k8 | the dissertation's (JRC, its settings) | 33.09 | 20.20 | 43.70 | 0.45 | 1.014 |" in text
    assert "| k8-evidence | `selection.evidence=both` | 29.10 | 20.20 | 43.70 | 0.62 | 0.892 |" in text
    assert "- FAIL: k8: final (33.09) <= the K = 1 model (32.62)" in text
    assert "- PASS: k8-evidence: final (29.10) <= the K = 1 model (32.62)" in text
    # Table 4.1 still reads the faithful k8 arm, not the option
    assert "| K = 8, final (selected top-n) (k8) | 33.09 |" in text


def test_no_option_arm_no_section_and_an_unfinished_one_is_pending(tmp_path: Path) -> None:
    plain = [*_arm("k1", 1, None), *_arm("k8", 8, 33.09, 0.45)]
    assert "Beyond the dissertation" not in summarize(_study(tmp_path / "a", plain, {}))
    pending = [*plain, *_arm("k8-evidence", 8, None)]
    text = summarize(_study(tmp_path / "b", pending, {"k8-evidence": ["selection.evidence=both"]}))
    assert "- PENDING: k8-evidence: final (-) <= the K = 1 model (32.62) (an arm has not finished)" in text
