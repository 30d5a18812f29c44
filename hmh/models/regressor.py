"""Regressor: MANO pose per hypothesis and frame; MANO shape and camera per frame, shared by all hypotheses.

Pose (BlurHandNet's kinematic-tree decoding): for each of the 16 MANO joints, in MANO's order (wrist, index1-3,
middle1-3, pinky1-3, ring1-3, thumb1-3), a linear layer maps the frame's flattened joint features ``F_J^k``, the
detached Unfolder 2D joints and the 6D rotations already predicted for the joint's ancestors to its 6D rotation
(Zhou et al.). One ``(J*(E+2)) -> 16*6`` matrix holds every joint's feature part, so the features are read once;
the ancestors' parts are small bias-free layers added joint by joint. The 6D outputs start near the identity,
i.e. at the MANO mean pose: poses are axis-angle relative to the mean pose (``flat_hand_mean=False``; the MANO layer
adds ``hands_mean``), first 3 = global orientation.

Shape (10 per frame) and camera (3 per frame) come from the pooled backbone feature ``F_B``. The camera is
BlurHandNet's ``get_camera_trans`` with a virtual focal length: ``(tx, ty)`` in metres and depth
``tz = k * sigmoid(gamma)`` with ``k = sqrt(fx * fy) * CAMERA_3D_SIZE / S``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hmh import geometry

NUM_MANO_JOINTS = 16
NUM_BETAS = 10
# MANO's own 16-joint kinematic tree (wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3)
MANO16_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# BlurHandNet's virtual camera: focal 5000 px for a 256 px crop (scaled with the crop), 0.4 m of space across it
VIRTUAL_FOCAL_AT_256 = 5000.0
CAMERA_3D_SIZE = 0.4
_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def ancestors(parents: tuple[int, ...] = MANO16_PARENTS) -> list[list[int]]:
    """Every joint's ancestors, root first: ``[[], [0], [0, 1], ...]``."""
    out: list[list[int]] = []
    for parent in parents:
        out.append([] if parent < 0 else out[parent] + [parent])
    return out


def virtual_camera(image_size: int) -> tuple[float, float]:
    """``(focal, principal point)`` in pixels of the virtual camera for an ``image_size`` crop."""
    return VIRTUAL_FOCAL_AT_256 * image_size / 256.0, image_size / 2.0


@dataclass
class RegressorOutput:
    """``pose (B, K, T, 48)`` axis-angle relative to the mean pose; ``shape (B, T, 10)``;
    ``translation (B, T, 3)`` the wrist's position in the virtual camera (metres)."""

    pose: torch.Tensor
    shape: torch.Tensor
    translation: torch.Tensor


class Regressor(nn.Module):
    """``F_J^k``, Unfolder 2D joints and ``F_B`` -> :class:`RegressorOutput`."""

    def __init__(self, embed_dim: int, image_channels: int, image_size: int, num_frames: int = 3,
                 num_joints: int = 21) -> None:
        super().__init__()
        self.image_size = image_size
        self.num_frames = num_frames
        self.ancestors = ancestors()
        self.features = nn.Linear(num_joints * (embed_dim + 2), NUM_MANO_JOINTS * 6)
        self.from_ancestors = nn.ModuleList(
            nn.Linear(6 * len(anc), 6, bias=False) if anc else nn.Identity() for anc in self.ancestors
        )
        self.shape = nn.Linear(image_channels, num_frames * NUM_BETAS)
        self.camera = nn.Linear(image_channels, num_frames * 3)
        focal, _ = virtual_camera(image_size)
        self.depth_scale = focal * CAMERA_3D_SIZE / image_size  # k: sqrt(fx * fy * size^2 / (H * W))
        with torch.no_grad():
            nn.init.normal_(self.features.weight, std=1e-3)
            self.features.bias.copy_(torch.tensor(_IDENTITY_6D).repeat(NUM_MANO_JOINTS))
            for layer in self.from_ancestors:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=1e-3)
            for layer in (self.shape, self.camera):  # start at the mean shape, centred at mid depth
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, joint_features: torch.Tensor, joints_2d: torch.Tensor, image_feature: torch.Tensor
                ) -> RegressorOutput:
        """``joint_features (B, K, T, J, E)``, ``joints_2d (B, T, J, 2)`` crop pixels (detached here),
        ``image_feature (B, C)`` -> :class:`RegressorOutput`."""
        b, k, t, j, _ = joint_features.shape
        uv = 2.0 * joints_2d.detach() / self.image_size - 1.0  # (B, T, J, 2) in [-1, 1]
        uv = uv[:, None].expand(b, k, t, j, 2).to(joint_features.dtype)  # (B, K, T, J, 2)
        x = torch.cat([joint_features, uv], dim=-1).reshape(b * k * t, -1)  # (B*K*T, J*(E+2))
        base = self.features(x).reshape(b * k * t, NUM_MANO_JOINTS, 6)  # (B*K*T, 16, 6)
        rot6d: list[torch.Tensor] = []
        for i, (anc, layer) in enumerate(zip(self.ancestors, self.from_ancestors, strict=True)):
            rot6d.append(base[:, i] + layer(torch.cat([rot6d[a] for a in anc], dim=-1)) if anc else base[:, i])
        rot6d_all = torch.stack(rot6d, dim=1).float()  # (B*K*T, 16, 6)
        pose = geometry.matrix_to_axis_angle(geometry.rot6d_to_matrix(rot6d_all))  # (B*K*T, 16, 3)
        pose = pose.reshape(b, k, t, NUM_MANO_JOINTS * 3)  # (B, K, T, 48)

        shape = self.shape(image_feature).reshape(b, t, NUM_BETAS)  # (B, T, 10)
        cam = self.camera(image_feature).reshape(b, t, 3).float()  # (B, T, 3)
        depth = self.depth_scale * torch.sigmoid(cam[..., 2:])  # (B, T, 1)
        return RegressorOutput(pose, shape, torch.cat([cam[..., :2], depth], dim=-1))
