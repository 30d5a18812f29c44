"""Losses of both stages (the dissertation's Eq. 3.1-3.12): winner-takes-all generation terms, diversity, JRC.

Normalisation (per sample and frame, then summed over the T frames and averaged over the batch, as BlurHandNet sums
its per-frame loss terms; an invalid frame contributes 0 but still counts in the batch mean):
- ``joint_3d``: mean L1 (metres) over the valid joints' coordinates;
- ``proj`` and ``aux``: mean L1 over the valid joints inside the crop, in units of 1/32 of the crop side
  (BlurHandNet's heatmap units at 256 px, so its weights 0.0625 and 0.25 keep their meaning at any size);
- ``mano``: mean L1 over the 48 pose values (winner-takes-all) + mean L1 over the 10 betas (shared by all K),
  where ``mano_valid``;
- winner-takes-all, ``LossConfig.winner``: ``frame`` (literal to Eq. 3.2-3.4, the default) gives ``joint_3d``,
  ``proj`` and the pose part of ``mano`` each their own minimum over the K hypotheses per sample and frame, so
  only that term's best hypothesis of that frame gets its gradient; ``sample`` picks one winner per sample, the
  hypothesis with the lowest 3D joint error summed over its T frames (the sequence as one whole, as best of K,
  the selection labels and the selector see it), and every term trains that winner;
- mode hypothesis, ``LossConfig.mode_hypothesis`` (beyond the dissertation; ProHMR keeps such a mode beside its
  samples): hypothesis 0 takes every term on every sample, as a K = 1 model would, and the winner-takes-all runs
  over hypotheses 1..K-1 only; each term is the mode's error plus the winner's. Diversity still spans all K;
- ``diversity`` (Eq. 3.6): ``1/(K(K-1)) sum_{k<m} sum_t exp(-d_t^{km} / alpha)``, ``d`` the L1 distance between
  ``F_{J_t}^k`` and ``F_{J_t}^m`` divided by ``J*E`` (mean absolute difference per feature; the MHT output is
  layer-normalised, so ``d`` is of order 1 and ``alpha = 1`` is a sane scale); 0 for K = 1.
``generation_loss`` returns the unweighted terms and ``total`` = their ``LossConfig``-weighted sum.

Selection (``LossConfig.selection_target``): ``jrc`` is the method's ``jrc * L_jrc + aux * L_aux`` on binary top-n
labels; ``jrc_graded`` adds ``rank_weight * L_rank``, a pairwise RankNet term (:func:`ranknet_loss`) on the
hypotheses' sequence errors, which keeps the margins that binary labels throw away (ScoreHypo ranks likewise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hmh.config import LossConfig
from hmh.eval.metrics import sequence_errors, top_n_by_error
from hmh.models.generator import GeneratorOutput
from hmh.models.selector import SelectorOutput

HEATMAP_CELLS = 32.0  # 2D losses in units of crop_side / 32


def _masked_frame_l1(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean |pred - gt| over the valid points of each frame. ``pred (B, K, T, N, D)``, ``gt (B, T, N, D)``,
    ``valid (B, T, N)`` -> ``(B, K, T)`` (0 where a frame has no valid point)."""
    w = valid.to(pred.dtype)[:, None, ..., None]  # (B, 1, T, N, 1)
    err = ((pred - gt[:, None]).abs() * w).sum(dim=(-1, -2))  # (B, K, T)
    count = w.sum(dim=(-1, -2)) * pred.shape[-1]  # (B, 1, T)
    return err / count.clamp_min(1.0)


def _winner_takes_all(err: torch.Tensor, winner: torch.Tensor | None = None) -> torch.Tensor:
    """``err (B, K, T)`` -> the winner's error summed over T, mean over B (gradient only to the winner).
    ``winner (B,)`` hypothesis index per sample; ``None``: each frame's own minimum over K."""
    if winner is None:
        return err.min(dim=1).values.sum(dim=1).mean()
    return err.gather(1, winner[:, None, None].expand(-1, 1, err.shape[2]))[:, 0].sum(dim=1).mean()


def _hypothesis_term(err: torch.Tensor, winner: torch.Tensor | None, mode: bool) -> torch.Tensor:
    """``err (B, K, T)`` -> the term over the hypotheses: the winner-takes-all of all K, or with ``mode`` the mode's
    (hypothesis 0) error summed over T, mean over B, plus the winner-takes-all of the other K-1 (``winner`` indexes
    those)."""
    if not mode:
        return _winner_takes_all(err, winner)
    return err[:, 0].sum(dim=1).mean() + _winner_takes_all(err[:, 1:], winner)


def _crop_mask(joints_2d: torch.Tensor, valid: torch.Tensor, size: int) -> torch.Tensor:
    """Valid joints whose GT 2D position lies inside the crop. ``(B, T, J, 2)``, ``(B, T, J)`` -> ``(B, T, J)``."""
    inside = ((joints_2d >= 0) & (joints_2d < size)).all(dim=-1)
    return (valid > 0) & inside


def aux_loss(unfolder_joints_2d: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """L_aux (Eq. 3.5): Unfolder 2D joints ``(B, T, J, 2)`` vs ``batch["joints_2d"]``, crop/32 units."""
    size = batch["image"].shape[-1]
    scale = HEATMAP_CELLS / size
    gt = batch["joints_2d"].float()
    mask = _crop_mask(gt, batch["joint_valid"], size)
    err = _masked_frame_l1(unfolder_joints_2d.float()[:, None] * scale, gt * scale, mask)  # (B, 1, T)
    return err[:, 0].sum(dim=1).mean()


def diversity_loss(features: torch.Tensor, alpha: float) -> torch.Tensor:
    """L_div (Eq. 3.6) of ``features (B, K, T, J, E)`` (see the module docstring); mean over the batch."""
    b, k, t, j, e = features.shape
    if k < 2:
        return features.float().sum() * 0.0
    x = features.float().transpose(1, 2).reshape(b * t, k, j * e)  # (B*T, K, J*E)
    dist = torch.cdist(x, x, p=1.0) / (j * e)  # (B*T, K, K) mean absolute difference
    first, second = torch.triu_indices(k, k, offset=1, device=x.device)
    pairs = torch.exp(-dist[:, first, second] / alpha)  # (B*T, K(K-1)/2)
    return pairs.reshape(b, t * pairs.shape[-1]).sum(dim=1).mean() / (k * (k - 1))


def generation_loss(out: GeneratorOutput, batch: dict[str, torch.Tensor], loss_cfg: LossConfig
                    ) -> dict[str, torch.Tensor]:
    """Stage-1 loss (Eq. 3.1). ``batch``: a dataset batch (``image``, ``joints_3d``, ``joints_2d``,
    ``joint_valid``, ``mano_pose``, ``mano_shape``, ``mano_valid``). Returns ``{"total", "joint_3d", "proj",
    "mano", "aux", "diversity"}`` (scalars, fp32; the terms unweighted)."""
    size = batch["image"].shape[-1]
    scale = HEATMAP_CELLS / size
    joint_valid = batch["joint_valid"]
    mano_valid = batch["mano_valid"].float()  # (B, T)

    mode = loss_cfg.mode_hypothesis
    joint_err = _masked_frame_l1(out.joints.float(), batch["joints_3d"].float(), joint_valid)  # (B, K, T)
    wta_err = joint_err[:, 1:] if mode else joint_err  # (B, K or K-1, T): the winner-takes-all hypotheses
    winner = wta_err.detach().sum(dim=2).argmin(dim=1) if loss_cfg.winner == "sample" else None  # (B,)
    joint_3d = _hypothesis_term(joint_err, winner, mode)
    mask_2d = _crop_mask(batch["joints_2d"].float(), joint_valid, size)
    proj = _hypothesis_term(_masked_frame_l1(out.joints_2d.float() * scale, batch["joints_2d"].float() * scale,
                                             mask_2d), winner, mode)
    pose_err = (out.pose.float() - batch["mano_pose"].float()[:, None]).abs().mean(-1)  # (B, K, T)
    pose = _hypothesis_term(pose_err * mano_valid[:, None], winner, mode)
    shape_err = (out.shape.float() - batch["mano_shape"].float()).abs().mean(-1)  # (B, T)
    mano = pose + (shape_err * mano_valid).sum(dim=1).mean()
    terms = {
        "joint_3d": joint_3d,
        "proj": proj,
        "mano": mano,
        "aux": aux_loss(out.unfolder_joints_2d, batch),
        "diversity": diversity_loss(out.features, loss_cfg.diversity_alpha),
    }
    total = sum(getattr(loss_cfg, name) * value for name, value in terms.items())
    return {"total": total, **terms}


def topn_labels(seq_err: torch.Tensor, top_n: int) -> torch.Tensor:
    """JRC labels ``(B, K)`` float: 1 for the ``top_n`` lowest errors of ``seq_err (B, K)`` per image (ties: lower
    index first; NaN sorts last), else 0."""
    if seq_err.dim() != 2 or not 1 <= top_n <= seq_err.shape[1]:
        raise ValueError(f"topn_labels: seq_err must be (B, K) with 1 <= top_n <= K, got {tuple(seq_err.shape)} "
                         f"and top_n={top_n}")
    best = top_n_by_error(seq_err, top_n)  # (B, n)
    return torch.zeros_like(seq_err, dtype=torch.float32).scatter_(1, best, 1.0)


def jrc_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float, valid: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Joint Ranking Calibration (Sheng et al. 2023; the dissertation's Eq. 3.8-3.11).

    ``logits (B, K, 2)`` = ``f^k``, ``labels (B, K)`` in {0, 1}, ``valid (B,)`` images to use (default all).
    Per hypothesis: ``alpha * -log softmax_c(f^k)[y^k] + (1 - alpha) * -log softmax_m(f^m[y^k])[k]``, the second a
    softmax over the K hypotheses of the same image on channel ``y^k``. Mean over K, then over the valid images
    (0 with a graph when none is valid).
    """
    if logits.dim() != 3 or logits.shape[-1] != 2 or labels.shape != logits.shape[:2]:
        raise ValueError(f"jrc_loss: expected logits (B, K, 2) and labels (B, K), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    logits = logits.float()
    y = labels.long()[..., None]  # (B, K, 1)
    calib = -F.log_softmax(logits, dim=-1).gather(-1, y)[..., 0]  # (B, K)
    own = logits.gather(-1, y)[..., 0]  # (B, K): f^k[y^k]
    lse = torch.logsumexp(logits, dim=1)  # (B, 2): over the K hypotheses per channel
    rank = lse.gather(1, y[..., 0]) - own  # (B, K)
    per_image = (alpha * calib + (1.0 - alpha) * rank).mean(dim=1)  # (B,)
    if valid is None:
        return per_image.mean()
    valid = valid.bool()
    if valid.shape != per_image.shape:
        raise ValueError(f"jrc_loss: valid must be (B,) = {tuple(per_image.shape)}, got {tuple(valid.shape)}")
    return torch.where(valid, per_image, 0.0).sum() / valid.sum().clamp_min(1)


def ranknet_loss(logits: torch.Tensor, seq_err: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise RankNet term on graded targets: for every pair of hypotheses of one image with ``seq_err[k] <
    seq_err[m]`` (ties and NaN make no pair), ``log(1 + exp(-(s^k - s^m)))`` with ``s^k = f^k[1] - f^k[0]`` (the
    reward's logit, so it ranks as the reward does). ``logits (B, K, 2)``, ``seq_err (B, K)``, ``valid (B,)``
    images to use (default all). Mean over an image's pairs, then over the images with a pair (0 with a graph when
    none has one)."""
    if logits.dim() != 3 or logits.shape[-1] != 2 or seq_err.shape != logits.shape[:2]:
        raise ValueError(f"ranknet_loss: expected logits (B, K, 2) and seq_err (B, K), got {tuple(logits.shape)} "
                         f"and {tuple(seq_err.shape)}")
    score = (logits[..., 1] - logits[..., 0]).float()  # (B, K)
    pairs = seq_err[:, :, None] < seq_err[:, None, :]  # (B, K, K): k better than m
    if valid is not None:
        pairs = pairs & valid.bool()[:, None, None]
    per_pair = F.softplus(score[:, None, :] - score[:, :, None])  # (B, K, K): -log sigmoid(s^k - s^m)
    count = pairs.sum(dim=(1, 2))  # (B,)
    per_image = torch.where(pairs, per_pair, 0.0).sum(dim=(1, 2)) / count.clamp_min(1)  # (B,)
    ranked = count > 0
    return torch.where(ranked, per_image, 0.0).sum() / ranked.sum().clamp_min(1)


def selection_loss(sel_out: SelectorOutput, gen_out: GeneratorOutput, batch: dict[str, torch.Tensor],
                   loss_cfg: LossConfig, top_n: int) -> dict[str, torch.Tensor]:
    """Stage-2 loss (Eq. 3.12): ``jrc * L_jrc + aux * L_aux`` of the selector's own Unfolder. Labels: the top-n of
    the K hypotheses by ground-truth order-invariant sequence MPJPE; images without a valid joint are masked.
    ``loss.selection_target: jrc_graded`` adds ``rank_weight * L_rank`` (:func:`ranknet_loss` on the same errors).
    Returns ``{"total", "jrc", "aux"}`` (+ ``"rank"`` with jrc_graded; unweighted terms)."""
    with torch.no_grad():
        seq_err = sequence_errors(gen_out.joints.detach().float(), batch["joints_3d"].float(),
                                  batch["joint_valid"])  # (B, K) mm, NaN without valid joints
        valid = torch.isfinite(seq_err).all(dim=1)  # (B,)
        labels = topn_labels(seq_err, top_n)
    terms = {"jrc": jrc_loss(sel_out.logits, labels, loss_cfg.jrc_alpha, valid),
             "aux": aux_loss(sel_out.unfolder_joints_2d, batch)}
    total = loss_cfg.jrc * terms["jrc"] + loss_cfg.aux * terms["aux"]
    if loss_cfg.selection_target == "jrc_graded":
        terms["rank"] = ranknet_loss(sel_out.logits, seq_err, valid)
        total = total + loss_cfg.rank_weight * terms["rank"]
    return {"total": total, **terms}
