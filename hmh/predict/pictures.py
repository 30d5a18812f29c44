"""Pictures of the hypotheses for TensorBoard: the blurred input with every hypothesis' 2D joints drawn.

One row per sample, three panels, each the input upscaled:
1. the ground truth: past (blue), current (green), future (red) skeletons;
2. all K hypotheses' current frame as thin grey skeletons, the selected top-n thick in colour (best first:
   yellow, orange, magenta, cyan, ...); without a selector none is highlighted;
3. the top-ranked hypothesis (hypothesis 0 without a selector) as a sequence: past (blue), current (green),
   future (red).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from hmh.eval.metrics import top_n_by_reward

__all__ = ["draw_panels", "hypothesis_grid"]

FRAME_COLOURS = ((70, 130, 255), (60, 220, 90), (255, 70, 70))  # past, current, future
RANK_COLOURS = ((255, 230, 0), (255, 140, 0), (255, 0, 200), (0, 230, 255), (170, 255, 60), (255, 255, 255))
GREY = (150, 150, 150)


def _skeleton(draw: ImageDraw.ImageDraw, joints: np.ndarray, colour, width: int, valid: np.ndarray | None) -> None:
    """Bones of ``joints (J, 2)`` (already in panel pixels) along the MANO-21 tree; invalid joints skipped."""
    from hmh.mano.model import MANO21_PARENTS

    ok = np.ones(len(joints), dtype=bool) if valid is None else valid > 0
    for child, parent in enumerate(MANO21_PARENTS):
        if parent >= 0 and ok[child] and ok[parent]:
            draw.line([tuple(joints[parent]), tuple(joints[child])], fill=colour, width=width)
    radius = max(1, width)
    for (x, y), good in zip(joints, ok, strict=True):
        if good:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)


def draw_panels(
    image: np.ndarray,
    hypotheses_2d: np.ndarray,
    selected: Sequence[int] | None,
    gt_2d: np.ndarray | None = None,
    gt_valid: np.ndarray | None = None,
    scale: int = 2,
) -> np.ndarray:
    """One sample as three side-by-side panels (see the module docstring).

    ``image (3, S, S)`` in [0, 1]; ``hypotheses_2d (K, T, J, 2)`` crop pixels; ``selected``: hypothesis indices,
    best first (None or empty: nothing highlighted); ``gt_2d (T, J, 2)``, ``gt_valid (T, J)``.
    Returns ``(S * scale, 3 * S * scale, 3)`` uint8.
    """
    size = image.shape[-1] * scale
    base = Image.fromarray((np.clip(image.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8))
    base = base.resize((size, size), Image.BILINEAR)
    panels = [base.copy() for _ in range(3)]
    draws = [ImageDraw.Draw(p) for p in panels]
    hyps = np.asarray(hypotheses_2d, dtype=np.float64) * scale + (scale - 1) / 2  # (K, T, J, 2) panel px
    width = max(1, scale)
    if gt_2d is not None:
        gt = np.asarray(gt_2d, dtype=np.float64) * scale + (scale - 1) / 2
        for t, colour in enumerate(FRAME_COLOURS):
            _skeleton(draws[0], gt[t], colour, width, None if gt_valid is None else np.asarray(gt_valid)[t])
    chosen = list(selected or [])
    for k in range(len(hyps)):
        if k not in chosen:
            _skeleton(draws[1], hyps[k, 1], GREY, 1, None)
    for rank, k in reversed(list(enumerate(chosen))):
        _skeleton(draws[1], hyps[k, 1], RANK_COLOURS[rank % len(RANK_COLOURS)], width + 1, None)
    top = chosen[0] if chosen else 0
    for t, colour in enumerate(FRAME_COLOURS):
        _skeleton(draws[2], hyps[top, t], colour, width, None)
    return np.concatenate([np.asarray(p) for p in panels], axis=1)


def hypothesis_grid(
    batch: dict[str, torch.Tensor],
    hypotheses_2d: torch.Tensor,
    scores: torch.Tensor | None,
    top_n: int,
    max_samples: int = 4,
    scale: int = 2,
) -> torch.Tensor:
    """The first ``max_samples`` samples of a batch as stacked rows of :func:`draw_panels`.

    ``batch``: sample dict with ``image (B, 3, S, S)``, ``joints_2d (B, T, J, 2)``, ``joint_valid (B, T, J)``;
    ``hypotheses_2d (B, K, T, J, 2)``; ``scores (B, K)`` or None. Returns ``(3, H, W)`` uint8 for
    ``SummaryWriter.add_image``.
    """
    count = min(max_samples, int(batch["image"].shape[0]))
    rows = []
    for i in range(count):
        selected = None
        if scores is not None:
            selected = top_n_by_reward(scores[i : i + 1].float(), top_n)[0].tolist()
        rows.append(
            draw_panels(
                batch["image"][i].detach().float().cpu().numpy(),
                hypotheses_2d[i].detach().float().cpu().numpy(),
                selected,
                batch["joints_2d"][i].detach().float().cpu().numpy(),
                batch["joint_valid"][i].detach().float().cpu().numpy(),
                scale,
            )
        )
    return torch.from_numpy(np.concatenate(rows, axis=0)).permute(2, 0, 1).contiguous()  # (3, H, W)
