"""Selection (reward) model: scores each of the generator's K hypotheses against the image.

- Its own backbone + Unfolder give ``F_R (B, T, J, E)`` (+ ``pe_T + pe_J``): the cross-attention keys/values.
- Query ``F_Q`` per hypothesis and token (t, j), the Model-Specific Feature ``h(H^k) (+) g(F_J^k)``: ``h`` maps the
  hypothesis' frame pose ``theta_t^k (48)`` to ``J`` tokens of width ``E - E/2`` (``E`` without MSF), ``g`` maps the
  generator's refined ``F_J^k`` token-wise to ``E/2``; concatenated, ``+ pe_T + pe_J``. ``msf=False`` (the
  "w/o MSF" ablation) uses ``h`` alone.
- Pre-norm transformer decoder blocks: self-attention within one hypothesis' ``T*J`` tokens, cross-attention to
  ``F_R`` of the same image (row ``b*K + k`` attends to image ``b``'s context, expanded, never tiled).
- Mean over the tokens, reward MLP -> ``f^k (2)``; reward ``r^k = sigmoid(f^k[1] - f^k[0])``.
There is no hypothesis embedding, so permuting the K hypotheses permutes the rewards (and leaves the selection
loss as it is): slot order carries no signal, only the hypotheses' content does.

``selection.set_blocks > 0`` puts pre-norm transformer blocks over the K hypotheses' pooled tokens ``(B, K, E)``
before the reward MLP: each reward is then given with the other hypotheses in view, as the ranking it feeds is
relative (a listwise reranker's view); still no slot embedding, so permutations carry over. ``0`` (the
dissertation's) scores each hypothesis alone and builds no extra weights.

Hypothesis-specific evidence (``selection.evidence``), each a linear map added to every query token ``(k, t, j)``:
- ``reprojection``: :func:`reprojection_features` of the hypothesis' projected 2D joints against the selector's own
  Unfolder joints (detached: the Unfolder learns from ``L_aux`` alone);
- ``sampled``: the backbone's stride-8 map bilinearly sampled at the hypothesis' projected 2D joints (ScoreHypo);
- ``both``; ``none`` (the method as published) adds nothing and builds no extra weights.
``selection.unfolder_stride: 4`` gives the selector's own Unfolder (whose joints the ``reprojection`` evidence
compares against) heatmaps twice as fine as the generator's (:mod:`hmh.models.unfolder`).
``selection.reprojection_align: similarity`` compares each frame's 2D joints with the evidence after centring and
scaling them onto it (:func:`aligned_to_evidence`), in the evidence and in the rules below: only the 2D shape counts.

:func:`reprojection_reward` is the training-free ranking of ``selection.rule: reprojection`` (D3DP's JPMA idea):
the hypotheses closest in 2D to the generator's own Unfolder joints get the highest reward; ``combined`` multiplies
it into the trained selector's reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hmh.config import ModelConfig, SelectionConfig
from hmh.eval.metrics import Aggregate, aggregate, top_n_by_reward
from hmh.models.backbone import Backbone
from hmh.models.generator import NUM_JOINTS, GeneratorOutput
from hmh.models.unfolder import STRIDE4_STAGE, Unfolder, sample_joint_features

POSE_DIM = 48
REPROJECTION_FEATURES = 4  # per token: offset (x, y), distance, distance to the past/future-exchanged frame
REPROJECTION_CELLS = 32.0  # reprojection_reward's unit: 1/32 of the crop side (the losses' heatmap cells)


@dataclass
class SelectorOutput:
    """``logits (B, K, 2)`` = ``f^k``; ``reward (B, K)`` = ``sigmoid(f1 - f0)``; ``unfolder_joints_2d (B, T, J, 2)``
    the selector's own Unfolder joints (crop pixels, for its auxiliary loss)."""

    logits: torch.Tensor
    reward: torch.Tensor
    unfolder_joints_2d: torch.Tensor


def _mlp(din: int, dhidden: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, dhidden), nn.GELU(), nn.Linear(dhidden, dout))


def aligned_to_evidence(joints_2d: torch.Tensor, evidence_2d: torch.Tensor, align: str) -> torch.Tensor:
    """``joints_2d (B, K, T, J, 2)`` as compared with ``evidence_2d (B, T, J, 2)`` under
    ``selection.reprojection_align``: ``none`` returns them as they are; ``similarity`` centres each hypothesis'
    frame on the evidence's centroid and scales it by the least-squares factor onto the evidence's joints (about
    their centroids), so only the 2D shape is left to differ. Crop pixels in and out."""
    if align == "none":
        return joints_2d
    if align != "similarity":
        raise ValueError(f"selection.reprojection_align: expected none or similarity, got {align!r}")
    joints, evidence = joints_2d.float(), evidence_2d.float()[:, None]  # (B, K, T, J, 2), (B, 1, T, J, 2)
    jc = joints - joints.mean(dim=-2, keepdim=True)
    ec = evidence - evidence.mean(dim=-2, keepdim=True)
    scale = (jc * ec).sum(dim=(-2, -1), keepdim=True) / (jc * jc).sum(dim=(-2, -1), keepdim=True).clamp(min=1e-9)
    return evidence.mean(dim=-2, keepdim=True) + scale * jc  # (B, K, T, J, 2)


def reprojection_features(joints_2d: torch.Tensor, evidence_2d: torch.Tensor, image_size: int,
                          align: str = "none") -> torch.Tensor:
    """How each hypothesis' 2D joints agree with 2D evidence, per frame and joint, in crop sides (each clamped to
    [-1, 1] so a hypothesis projected far off the crop stays bounded), after :func:`aligned_to_evidence`.
    ``joints_2d (B, K, T, J, 2)`` and ``evidence_2d (B, T, J, 2)`` crop pixels -> ``(B, K, T, J, 4)``: the offset
    ``(x, y)``, its length, and the distance to the evidence of the exchanged frame ``T-1-t`` (past and future look
    alike in a blurred image)."""
    evidence = evidence_2d.float()
    joints = aligned_to_evidence(joints_2d, evidence, align).float()  # (B, K, T, J, 2)
    offset = ((joints - evidence[:, None]) / image_size).clamp(-1.0, 1.0)  # (B, K, T, J, 2)
    swapped = aligned_to_evidence(joints_2d, evidence.flip(1), align).float()  # (B, K, T, J, 2)
    exchanged = ((swapped - evidence.flip(1)[:, None]) / image_size).clamp(-1.0, 1.0)  # (B, K, T, J, 2)
    return torch.cat([offset, offset.norm(dim=-1, keepdim=True), exchanged.norm(dim=-1, keepdim=True)], dim=-1)


def reprojection_errors(joints_2d: torch.Tensor, evidence_2d: torch.Tensor, image_size: int,
                        align: str = "none") -> torch.Tensor:
    """Each hypothesis' 2D distance to the evidence: the mean over frames and joints of the per-joint distance in
    crop sides after :func:`aligned_to_evidence`, past/future matched (the smaller of the frames as they are and
    exchanged, as the sequence errors match them). ``joints_2d (B, K, T, J, 2)``, ``evidence_2d (B, T, J, 2)`` crop
    pixels -> ``(B, K)``."""
    evidence = evidence_2d.float()

    def distance(reference: torch.Tensor) -> torch.Tensor:  # (B, T, J, 2) -> (B, K)
        joints = aligned_to_evidence(joints_2d, reference, align).float()
        return (joints - reference[:, None]).norm(dim=-1).mean(dim=(2, 3))

    return torch.minimum(distance(evidence), distance(evidence.flip(1))) / image_size


def reprojection_reward(gen_out: GeneratorOutput, image_size: int, align: str = "none") -> torch.Tensor:
    """``selection.rule: reprojection``: ``1 / (1 + d)`` with ``d`` the :func:`reprojection_errors` of the
    hypotheses' projected joints against the generator's own Unfolder joints (``align``:
    ``selection.reprojection_align``), in 1/32 crop sides. ``(B, K)`` in (0, 1], higher = closer; no weights, no
    training."""
    errors = reprojection_errors(gen_out.joints_2d, gen_out.unfolder_joints_2d, image_size, align)  # (B, K)
    return 1.0 / (1.0 + REPROJECTION_CELLS * errors)


class Selector(nn.Module):
    """``Selector(model_cfg, selection_cfg)``; ``forward(image (B, 3, S, S), gen_out)`` -> :class:`SelectorOutput`.

    The generator's outputs are detached: the selector never trains the generator. ``query_input_dim`` is the
    per-token input width of the query: 48 (pose) + E (``F_J^k``) with MSF, 48 without (the evidence of
    ``selection.evidence`` is added to the tokens, not concatenated).
    """

    def __init__(self, model_cfg: ModelConfig, selection_cfg: SelectionConfig) -> None:
        super().__init__()
        e, t = model_cfg.embed_dim, model_cfg.num_frames
        self.msf = selection_cfg.msf
        self.image_size = model_cfg.image_size
        self.reprojection_align = selection_cfg.reprojection_align
        self.backbone = Backbone(model_cfg.backbone, model_cfg.pretrained)
        self.unfolder = Unfolder(self.backbone.channels, e, t, NUM_JOINTS, selection_cfg.unfolder_stride,
                                 self.backbone.stride4_channels)
        pose_width = e - e // 2 if self.msf else e
        self.pose_query = _mlp(POSE_DIM, e, NUM_JOINTS * pose_width)  # h
        self.feature_query = _mlp(e, e, e // 2) if self.msf else None  # g
        self.query_input_dim = POSE_DIM + (e if self.msf else 0)
        std = selection_cfg.embedding_std
        self.pe_t = nn.Parameter(std * torch.randn(t, e))  # (T, E)
        self.pe_j = nn.Parameter(std * torch.randn(NUM_JOINTS, e))  # (J, E)
        self.blocks = nn.ModuleList(
            nn.TransformerDecoderLayer(e, model_cfg.num_heads, dim_feedforward=round(e * model_cfg.mlp_ratio),
                                       dropout=model_cfg.dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(selection_cfg.decoder_blocks)
        )
        self.norm = nn.LayerNorm(e)
        self.head = _mlp(e, e, 2)
        # built last and only when asked for, so the other weights start as without them
        evidence = selection_cfg.evidence
        self.reprojection_evidence = (nn.Linear(REPROJECTION_FEATURES, e) if evidence in ("reprojection", "both")
                                      else None)
        self.sampled_evidence = nn.Linear(self.backbone.channels[0], e) if evidence in ("sampled", "both") else None
        self.set_blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(e, model_cfg.num_heads, dim_feedforward=round(e * model_cfg.mlp_ratio),
                                       dropout=model_cfg.dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(selection_cfg.set_blocks)
        )
        self.set_norm = nn.LayerNorm(e) if selection_cfg.set_blocks else None

    def forward(self, image: torch.Tensor, gen_out: GeneratorOutput) -> SelectorOutput:
        pose = gen_out.pose.detach()  # (B, K, T, 48)
        b, k, t, _ = pose.shape
        if image.dim() != 4 or image.shape[0] != b or image.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"Selector: image must be (B={b}, 3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(image.shape)}")
        feats = self.backbone(image)
        unfolded = self.unfolder(feats)
        pos = self.pe_t[:, None, :] + self.pe_j[None, :, :]  # (T, J, E)
        context = unfolded.features + pos  # (B, T, J, E) = F_R
        e = context.shape[-1]
        context = context[:, None].expand(b, k, t, NUM_JOINTS, e).reshape(b * k, t * NUM_JOINTS, e)  # (B*K, T*J, E)

        query = self.pose_query(pose.to(context.dtype)).reshape(b, k, t, NUM_JOINTS, -1)  # (B, K, T, J, E')
        if self.feature_query is not None:
            feat = self.feature_query(gen_out.features.detach().to(context.dtype))  # (B, K, T, J, E/2)
            query = torch.cat([query, feat], dim=-1)  # (B, K, T, J, E)
        if self.reprojection_evidence is not None:
            agreement = reprojection_features(gen_out.joints_2d.detach(), unfolded.joints_2d.detach(),
                                              self.image_size, self.reprojection_align)  # (B, K, T, J, 4)
            query = query + self.reprojection_evidence(agreement.to(context.dtype))  # (B, K, T, J, E)
        if self.sampled_evidence is not None:
            points = gen_out.joints_2d.detach().float().reshape(b, k * t * NUM_JOINTS, 2)  # (B, K*T*J, 2)
            sampled = sample_joint_features(feats.stride8, points, 8).reshape(b, k, t, NUM_JOINTS, -1)  # (B,K,T,J,C8)
            query = query + self.sampled_evidence(sampled.to(context.dtype))  # (B, K, T, J, E)
        x = (query + pos).reshape(b * k, t * NUM_JOINTS, e)  # (B*K, T*J, E): row b*K + k
        for block in self.blocks:
            x = block(x, context)
        pooled = self.norm(x).mean(dim=1).reshape(b, k, e)  # (B, K, E)
        if self.set_norm is not None:
            for block in self.set_blocks:
                pooled = block(pooled)  # attention across the K hypotheses of one image
            pooled = self.set_norm(pooled)
        logits = self.head(pooled).float()  # (B, K, 2)
        reward = torch.sigmoid(logits[..., 1] - logits[..., 0])  # (B, K)
        return SelectorOutput(logits, reward, unfolded.joints_2d)

    @torch.no_grad()
    def init_from_generator(self, generator: nn.Module) -> int:
        """Copy ``generator.backbone`` and ``generator.unfolder`` weights (and BatchNorm statistics) into this
        selector's own ones; a stride-4 selector Unfolder keeps its extra stage (``STRIDE4_STAGE``) as built.
        Returns the number of tensors copied. Raises ValueError naming the first mismatch."""
        copied = 0
        for name in ("backbone", "unfolder"):
            mine, theirs = getattr(self, name).state_dict(), getattr(generator, name).state_dict()
            own = {key for key in mine.keys() - theirs.keys() if name == "unfolder"
                   and key.split(".")[2] in STRIDE4_STAGE}  # keys "decoders.<t>.<module>...."
            if mine.keys() - own != theirs.keys():
                raise ValueError(f"init_from_generator: {name} layouts differ (different model.backbone?)")
            for key, value in theirs.items():
                if mine[key].shape != value.shape:
                    raise ValueError(f"init_from_generator: {name}.{key} has shape {tuple(value.shape)} in the "
                                     f"generator, {tuple(mine[key].shape)} here")
                mine[key].copy_(value)
                copied += 1
        return copied


def select_top_n(reward: torch.Tensor, top_n: int) -> torch.Tensor:
    """Indices ``(B, n)`` of the ``top_n`` highest rewards of ``reward (B, K)``, best first (ties: lower index)."""
    if not 1 <= top_n <= reward.shape[-1]:
        raise ValueError(f"selection.top_n={top_n} must be in [1, K={reward.shape[-1]}]")
    return top_n_by_reward(reward, top_n)


def final_prediction(gen_out: GeneratorOutput, reward: torch.Tensor, top_n: int) -> Aggregate:
    """The method's final output: the ``top_n`` hypotheses by ``reward (B, K)``, each one's past/future aligned to
    the top-1, averaged per frame. Returns :class:`hmh.eval.metrics.Aggregate` with ``joints (B, T, J, 3)`` and
    ``verts (B, T, V, 3)`` (wrist-relative), ``indices (B, n)``, ``swapped (B, n)``."""
    return aggregate(gen_out.joints, reward, top_n, gen_out.vertices)
