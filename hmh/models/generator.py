"""Generation model: backbone -> Unfolder -> Multi-Hypothesis Transformer -> Regressor -> MANO -> projection.

One blurred image gives K hypotheses, each a T-frame MANO sequence (T = past, current, future). Pose is per
hypothesis and frame; shape and camera are per frame and shared by the K hypotheses. With K = 1 this is a
single-hypothesis BlurHandNet-like model (a KTFormer-style encoder with one extra learned embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hmh import geometry
from hmh.config import ModelConfig
from hmh.models.backbone import Backbone
from hmh.models.mht import MultiHypothesisTransformer
from hmh.models.regressor import Regressor, virtual_camera
from hmh.models.unfolder import Unfolder

NUM_JOINTS = 21
WRIST = 0


@dataclass
class GeneratorOutput:
    """The K hypotheses of a batch. Joints are MANO-21 (wrist first), metres; frames (past, current, future).

    - ``pose (B, K, T, 48)``: axis-angle relative to the MANO mean pose, first 3 = global orientation (camera).
    - ``shape (B, T, 10)``, ``camera (B, T, 3)``: MANO betas and the wrist's translation ``(tx, ty, tz)`` in the
      virtual camera, shared by all K.
    - ``joints (B, K, T, 21, 3)``, ``vertices (B, K, T, 778, 3)``: wrist-relative.
    - ``joints_2d (B, K, T, 21, 2)``: ``joints + camera`` projected by the virtual camera, crop pixels.
    - ``unfolder_joints_2d (B, T, 21, 2)``: the Unfolder's soft-argmax joints, crop pixels.
    - ``features (B, K, T, 21, E)``: refined ``F_J^k``; ``image_features (B, T, 21, E)``: ``F_J`` before the MHT.
    """

    pose: torch.Tensor
    shape: torch.Tensor
    camera: torch.Tensor
    joints: torch.Tensor
    vertices: torch.Tensor
    joints_2d: torch.Tensor
    unfolder_joints_2d: torch.Tensor
    features: torch.Tensor
    image_features: torch.Tensor


class Generator(nn.Module):
    """``Generator(model_cfg, mano)``: ``mano`` is a right-hand :class:`hmh.mano.model.Mano` (left hands arrive
    mirrored).

    ``forward(image (B, 3, S, S))`` -> :class:`GeneratorOutput`. MANO runs once on all ``B*K*T`` poses.
    """

    def __init__(self, model_cfg: ModelConfig, mano: nn.Module) -> None:
        super().__init__()
        cfg = model_cfg
        self.num_hypotheses = cfg.num_hypotheses
        self.num_frames = cfg.num_frames
        self.image_size = cfg.image_size
        self.backbone = Backbone(cfg.backbone, cfg.pretrained)
        self.unfolder = Unfolder(self.backbone.channels, cfg.embed_dim, cfg.num_frames, NUM_JOINTS)
        self.mht = MultiHypothesisTransformer(cfg.embed_dim, cfg.num_hypotheses, cfg.mht_blocks, cfg.num_heads,
                                              cfg.mlp_ratio, cfg.dropout, cfg.num_frames, NUM_JOINTS)
        self.regressor = Regressor(cfg.embed_dim, self.backbone.channels[2], cfg.image_size, cfg.num_frames,
                                   NUM_JOINTS)
        self.mano = mano
        focal, princpt = virtual_camera(cfg.image_size)
        self.register_buffer("focal", torch.tensor([focal, focal]), persistent=False)
        self.register_buffer("princpt", torch.tensor([princpt, princpt]), persistent=False)

    def forward(self, image: torch.Tensor) -> GeneratorOutput:
        b, k, t = image.shape[0], self.num_hypotheses, self.num_frames
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"Generator: image must be (B, 3, {self.image_size}, {self.image_size}) "
                             f"(model.image_size), got {tuple(image.shape)}")
        feats = self.backbone(image)
        unfolded = self.unfolder(feats)  # joints_2d (B, T, J, 2), features (B, T, J, E)
        refined = self.mht(unfolded.features)  # (B, K, T, J, E)
        reg = self.regressor(refined, unfolded.joints_2d, feats.pooled)

        pose = reg.pose.reshape(b * k * t, -1)  # (B*K*T, 48)
        betas = reg.shape[:, None].expand(b, k, t, -1).reshape(b * k * t, -1)  # (B*K*T, 10)
        hand = self.mano(pose[:, :3], pose[:, 3:], betas)
        wrist = hand.joints[:, WRIST:WRIST + 1]  # (B*K*T, 1, 3)
        joints = (hand.joints - wrist).reshape(b, k, t, NUM_JOINTS, 3)  # (B, K, T, J, 3)
        vertices = (hand.vertices - wrist).reshape(b, k, t, -1, 3)  # (B, K, T, V, 3)

        joints_cam = joints.float() + reg.translation[:, None, :, None, :]  # (B, K, T, J, 3)
        joints_2d = geometry.project(joints_cam, self.focal, self.princpt)  # (B, K, T, J, 2)
        return GeneratorOutput(
            pose=reg.pose, shape=reg.shape, camera=reg.translation, joints=joints, vertices=vertices,
            joints_2d=joints_2d, unfolder_joints_2d=unfolded.joints_2d, features=refined,
            image_features=unfolded.features,
        )
