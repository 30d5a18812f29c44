"""The constant mean-pose baseline: the error of predicting one sequence for every image, the training split's
mean wrist-relative joints. It is what a model that ignores the image converges to, so a model's MPJPE as a share
of it tells how much it learnt from the image (the ``bench`` preset's K=1 model reaches 0.32x, docs/benchmarks.md).
``hmh train`` reports it as the ``constant`` row of its test table; ``benchmarks/baseline.py`` computes the same
figure from the JSON files alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hmh.eval.metrics import blurhand_errors
from hmh.results.tables import CONSTANT

if TYPE_CHECKING:
    from hmh.data.blurhand import BlurHandDataset

__all__ = ["CONSTANT", "constant_errors", "mean_pose", "share_line"]


def mean_pose(train: BlurHandDataset) -> torch.Tensor:
    """``(T, J, 3)`` metres: the mean of the samples' wrist-relative 3D targets, per frame and joint over the
    valid ones (no augmentation; 0 for a joint never valid)."""
    joints, valid = train.targets_3d()
    return (joints * valid[..., None]).sum(0) / valid.sum(0)[..., None].clamp_min(1.0)


def constant_errors(train: BlurHandDataset, test: BlurHandDataset) -> dict[str, float]:
    """``{"constant/mpjpe_past" | ..._current | ..._future: mm}`` of :func:`mean_pose` of ``train`` on ``test``,
    through the BlurHand protocol (``hmh.eval.metrics.blurhand_errors``)."""
    gt, valid = test.targets_3d()
    errors = blurhand_errors(mean_pose(train).expand_as(gt), gt, valid)
    return {f"{CONSTANT}/{k}": v for k, v in errors.items() if k.startswith("mpjpe")}


def share_line(metrics: dict[str, float]) -> str:
    """``"current MPJPE as a share of the constant mean pose: final 0.32x, best of K 0.30x, ..."``; empty without
    the ``constant`` row."""
    base = metrics.get(f"{CONSTANT}/mpjpe_current")
    if not base:
        return ""
    names = {"final": "final", "best_of_k": "best of K", "mean_of_k": "mean of K", "hyp0": "hypothesis 0"}
    shares = [f"{name} {metrics[f'{key}/mpjpe_current'] / base:.2f}x" for key, name in names.items()
              if f"{key}/mpjpe_current" in metrics]
    return f"current MPJPE as a share of the constant mean pose ({base:.2f} mm): " + ", ".join(shares)
