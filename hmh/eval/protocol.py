"""Streaming multi-hypothesis evaluation: every reduction of :mod:`hmh.eval.metrics` at once, and how good the
selection is.

Reductions (``REDUCTIONS``) of ``(N, K, T, J, 3)`` predictions, each scored by the BlurHand protocol:
``best_of_k`` (oracle, one whole hypothesis), ``final`` (top-n by the selector's reward, aligned, averaged; with
``top_n = K`` every hypothesis, rewards or not: no selector can change it),
``label_oracle`` (top-n by the selection labels' own error, the per-sample sequence MPJPE of
:func:`hmh.eval.metrics.sequence_errors` that the JRC labels rank by, averaged like ``final``: what a selector that
followed its labels perfectly would give), ``mean_of_k``, ``random_n`` and ``hyp0``.

Selection statistics (``SELECTION_STATS``, keys ``selection/<name>``, only when the selector's rewards are given):

- ``precision``: |selected top-n ∩ the labels' top-n| / n, averaged over samples;
- ``gain``: ``(random_n - final) / (random_n - label_oracle)`` on the current-frame MPJPE: 1 for a selector as good
  as its labels, 0 for random, negative when worse than random; NaN when the labels leave no headroom;
- ``reward_spread``: the standard deviation of a hypothesis slot's reward across images, averaged over the K slots
  (near 0: the rewards ignore the image);
- ``common_set_share``: the share of images whose selected set (unordered) is the most common one (1.0: the
  selector is a constant rule that picks the same slots everywhere).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from hmh.eval.metrics import (
    CPU64,
    NUM_FRAMES,
    NUM_JOINTS,
    BlurHandAccumulator,
    Matched,
    add_best_of_k,
    aggregate_indices,
    checked_scores,
    checked_tensor,
    checked_verts,
    match_past_future,
    selection_hits,
    top_n_by_error,
    top_n_by_reward,
    vertex_errors,
)

__all__ = ["REDUCTIONS", "SELECTION_STATS", "MultiHypothesisEvaluator", "SelectionStats", "selection_gain"]

REDUCTIONS = ("best_of_k", "final", "label_oracle", "mean_of_k", "random_n", "hyp0")
SELECTION_STATS = ("precision", "gain", "reward_spread", "common_set_share")


def selection_gain(random_n: float, final: float, label_oracle: float) -> float:
    """``(random_n - final) / (random_n - label_oracle)`` (mm in, a ratio out); NaN when ``label_oracle`` is not
    below ``random_n`` (no headroom to measure against) or a value is NaN."""
    headroom = random_n - label_oracle
    return (random_n - final) / headroom if headroom > 0 else math.nan


class SelectionStats:
    """Streaming ``reward_spread`` and ``common_set_share`` (module docstring) over batches of rewards."""

    def __init__(self) -> None:
        self._shift: torch.Tensor | None = None  # (K,) the first image's rewards: sums of shifted values stay exact
        self._sum = self._sq = torch.zeros(0, dtype=torch.float64)  # (K,) sum, sum of squares of reward - shift
        self._count = 0
        self._sets: Counter[tuple[int, ...]] = Counter()

    def update(self, scores: torch.Tensor, chosen: torch.Tensor) -> None:
        """Add ``scores (B, K)`` float64 and the selected ``chosen (B, n)`` hypothesis indices (same K every batch)."""
        if self._shift is None:
            self._shift = scores[0].clone()
            self._sum = self._sq = torch.zeros_like(self._shift)
        shifted = scores - self._shift
        self._sum = self._sum + shifted.sum(0)
        self._sq = self._sq + (shifted * shifted).sum(0)
        self._count += scores.shape[0]
        self._sets.update(tuple(row) for row in torch.sort(chosen, dim=1).values.tolist())

    @property
    def count(self) -> int:
        """Images seen."""
        return self._count

    def most_common_set(self) -> tuple[int, ...]:
        """The most often selected set (sorted indices); ``()`` before any update."""
        return self._sets.most_common(1)[0][0] if self._sets else ()

    def compute(self) -> dict[str, float]:
        """``{"reward_spread", "common_set_share"}``; NaN before any update."""
        if not self._count:
            return {"reward_spread": math.nan, "common_set_share": math.nan}
        mean = self._sum / self._count
        variance = (self._sq / self._count - mean * mean).clamp(min=0)  # (K,) population variance
        return {"reward_spread": float(variance.sqrt().mean()),
                "common_set_share": self._sets.most_common(1)[0][1] / self._count}


class MultiHypothesisEvaluator:
    """Streams every reduction at once over batches of K-hypothesis predictions.

    ``update`` per batch, ``compute`` at the end -> flat ``{"<reduction>/<metric>": mm}`` for ``best_of_k``,
    ``label_oracle``, ``mean_of_k``, ``random_n`` (``top_n`` drawn with ``numpy.random.default_rng(seed)``, so a run
    is reproducible for the same batches), ``hyp0``, and, when scores are given, ``final`` (``aggregate`` of the top
    ``top_n``) and ``selection/<stat>`` for every ``SELECTION_STATS`` entry; without scores ``final`` too when
    ``top_n`` = K (every hypothesis, as ``mean_of_k``). Either every batch has scores or none has."""

    def __init__(self, top_n: int, seed: int = 0) -> None:
        if top_n < 1:
            raise ValueError(f"top_n: expected >= 1, got {top_n}")
        self.top_n = top_n
        self._rng = np.random.default_rng(seed)
        self._acc = {name: BlurHandAccumulator() for name in REDUCTIONS}
        self._hits_sum = 0.0
        self._hits_count = 0
        self._stats = SelectionStats()
        self._with_scores: bool | None = None

    def update(
        self, pred_joints, gt_joints, joint_valid, pred_verts=None, gt_verts=None, mesh_valid=None, scores=None
    ) -> None:
        """Add a batch: ``pred_joints (B, K, T, J, 3)`` metres, ``gt_joints (B, T, J, 3)``, ``joint_valid (B, T, J)``,
        optional ``pred_verts (B, K, V, 3)`` current frame (minus the predicted wrist), ``gt_verts (B, V, 3)``,
        ``mesh_valid (B,)``, ``scores (B, K)`` (higher is better)."""
        dims: dict[str, int] = {}
        pred = checked_tensor(pred_joints, "pred_joints", ("N", "K", NUM_FRAMES, NUM_JOINTS, 3), dims, *CPU64)
        gt = checked_tensor(gt_joints, "gt_joints", ("N", NUM_FRAMES, NUM_JOINTS, 3), dims, *CPU64)
        valid = checked_tensor(joint_valid, "joint_valid", ("N", NUM_FRAMES, NUM_JOINTS), dims, "cpu", torch.bool)
        verts = checked_verts(pred_verts, gt_verts, mesh_valid, ("N", "K"), dims)
        n, k = dims["N"], dims["K"]
        if self.top_n > k:
            raise ValueError(f"top_n: expected <= K={k} (pred_joints axis 1), got {self.top_n}")
        score = None if scores is None else checked_scores(scores, self.top_n, dims, *CPU64)
        if self._with_scores is not None and self._with_scores != (score is not None):
            raise ValueError("scores: give them for every batch or for none")
        self._with_scores = score is not None
        matched = match_past_future(pred, gt[:, None], valid[:, None])  # (N, K, T, J)
        seq_err = matched.sequence()  # (N, K), NaN for a sample without valid joints
        hyp_verts = None if verts is None else verts[0]  # (N, K, V, 3)
        vert_err = None if verts is None else vertex_errors(verts[0], verts[1][:, None])  # (N, K)
        mesh_ok = None if verts is None else verts[2]
        self._acc["hyp0"]._add(
            Matched(matched.errors[:, 0], matched.valid[:, 0], matched.swapped[:, 0]),
            None if vert_err is None else vert_err[:, 0],
            mesh_ok,
        )
        add_best_of_k(self._acc["best_of_k"], matched, vert_err, mesh_ok)
        reductions = {  # the hypotheses each averages, (N, n), best first
            "mean_of_k": torch.arange(k).expand(n, k),
            "random_n": top_n_by_reward(torch.from_numpy(self._rng.random((n, k))), self.top_n),
            "label_oracle": top_n_by_error(seq_err, self.top_n),
        }
        if score is not None:
            reductions["final"] = top_n_by_reward(score, self.top_n)
            hits = selection_hits(score, seq_err, self.top_n)  # (N,)
            self._hits_sum += float(torch.nansum(hits))
            self._hits_count += int((~torch.isnan(hits)).sum())
        elif self.top_n == k:  # every hypothesis is kept: the output a selector could not change
            reductions["final"] = reductions["mean_of_k"]
        for name, indices in reductions.items():
            out = aggregate_indices(pred, indices, hyp_verts)
            if name == "final" and score is not None:
                self._stats.update(score, out.indices)
            agg_err = None if verts is None else vertex_errors(out.verts, verts[1])
            self._acc[name]._add(match_past_future(out.joints, gt, valid), agg_err, mesh_ok)

    def compute(self) -> dict[str, float]:
        """Flat metrics dict (mm); ``final/*`` when scores were given or ``top_n`` = K, ``selection/*`` only when
        scores were given."""
        names = [r for r in REDUCTIONS if r != "final" or self._acc["final"].num_samples]  # final: scores or top_n = K
        result = {f"{r}/{m}": value for r in names for m, value in self._acc[r].compute().items()}
        if self._with_scores:
            result["selection/precision"] = self._hits_sum / self._hits_count if self._hits_count else math.nan
            current = "mpjpe_current"
            result["selection/gain"] = selection_gain(result[f"random_n/{current}"], result[f"final/{current}"],
                                                      result[f"label_oracle/{current}"])
            result.update({f"selection/{key}": value for key, value in self._stats.compute().items()})
        return result

