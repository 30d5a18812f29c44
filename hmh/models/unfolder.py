"""Unfolder: T independent decoders turn one blurred image's features into per-frame joint features.

Each decoder (BlurHandNet's, no weights shared between frames): deconv of the stride-32 map, skip from stride 16,
conv; deconv, skip from stride 8, conv -> ``F_t (E, S/8, S/8)`` (32 x 32 at 256 px). A 1x1 conv gives one heatmap
per joint, a 2D soft-argmax the joints ``J2D_t`` in crop pixels, and bilinear sampling of ``F_t`` at ``J2D_t`` the
joint features ``F_{J_t} (J, E)``.

``stride=4`` (the selector's ``selection.unfolder_stride``, beyond BlurHandNet) adds one more stage before the
heatmaps: ``F_t`` at stride 4 = ``F_t`` at stride 8 upsampled bilinearly, plus a residual of (deconv of it, skip
from the backbone's stride-4 map, conv + BatchNorm). That BatchNorm starts at zero scale, so the stage starts as the
stride-8 decoder upsampled and the stride-8 weights copied into it (``selection.init_from_generator``) keep their
meaning; the heatmaps are then 2x finer (16 x 16 at 64 px instead of 8 x 8).

Pixel convention (as the data reader's): pixel ``i`` covers ``[i, i + 1)``; at stride ``s`` heatmap cell ``c``
covers pixels ``[s c, s c + s)`` and its centre is pixel ``s c + s/2``, so ``x_px = (x_cell + 0.5) * s``.
``grid_sample`` uses ``align_corners=False``, whose normalised coordinate of a pixel position is ``2 x_px / S - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hmh.config import UNFOLDER_STRIDES
from hmh.models.backbone import BackboneFeatures

STRIDE4_STAGE = ("deconv3", "skip3", "conv3")  # the modules that stride 4 adds to each FrameDecoder
NUM_JOINTS = 21


def _conv(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class FrameDecoder(nn.Module):
    """One frame's decoder: the backbone's maps -> ``F_t (B, E, S/s, S/s)`` and heatmaps ``(B, J, S/s, S/s)`` at
    ``stride`` s (8, or 4 with the extra stage). ``channels = (C8, C16, C32)`` of the backbone; ``stride4_channels``
    its C4 (read only at stride 4)."""

    def __init__(self, channels: tuple[int, int, int], embed_dim: int, num_joints: int = NUM_JOINTS,
                 stride: int = 8, stride4_channels: int = 64) -> None:
        super().__init__()
        c8, c16, c32 = channels
        self.deconv1 = _deconv(c32, c32 // 4)
        self.skip1 = _conv(c16, c16, 1)
        self.conv1 = _conv(c32 // 4 + c16, c16, 3)
        self.deconv2 = _deconv(c16, c16 // 4)
        self.skip2 = _conv(c8, c8, 1)
        self.conv2 = _conv(c16 // 4 + c8, embed_dim, 3)
        self.heatmap = nn.Conv2d(embed_dim, num_joints, 1)
        if stride == 4:  # named as in STRIDE4_STAGE
            self.deconv3 = _deconv(embed_dim, embed_dim // 4)
            self.skip3 = _conv(stride4_channels, stride4_channels, 1)
            self.conv3 = nn.Sequential(nn.Conv2d(embed_dim // 4 + stride4_channels, embed_dim, 3, padding=1,
                                                 bias=False), nn.BatchNorm2d(embed_dim))
            nn.init.zeros_(self.conv3[1].weight)  # the residual starts at zero
        elif stride != 8:
            raise ValueError(f"Unfolder stride must be one of {UNFOLDER_STRIDES}, got {stride}")
        self.stride = stride

    def forward(self, feats: BackboneFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.deconv1(feats.stride32)  # (B, C32/4, S/16, S/16)
        x = self.conv1(torch.cat([x, self.skip1(feats.stride16)], dim=1))  # (B, C16, S/16, S/16)
        x = self.deconv2(x)  # (B, C16/4, S/8, S/8)
        x = self.conv2(torch.cat([x, self.skip2(feats.stride8)], dim=1))  # (B, E, S/8, S/8)
        if self.stride == 4:
            residual = self.conv3(torch.cat([self.deconv3(x), self.skip3(feats.stride4)], dim=1))  # (B, E, S/4, S/4)
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False) + residual
        return x, self.heatmap(x)  # (B, E, S/s, S/s), (B, J, S/s, S/s)


def soft_argmax_2d(heatmaps: torch.Tensor) -> torch.Tensor:
    """Expected cell position under a softmax over each map. ``(B, J, H, W)`` -> ``(B, J, 2)`` as (x, y) in
    cell units (0 = the first cell's centre)."""
    b, j, h, w = heatmaps.shape
    prob = F.softmax(heatmaps.reshape(b, j, h * w).float(), dim=-1).reshape(b, j, h, w)  # (B, J, H, W)
    xs = torch.arange(w, device=heatmaps.device, dtype=prob.dtype)
    ys = torch.arange(h, device=heatmaps.device, dtype=prob.dtype)
    x = (prob.sum(dim=2) * xs).sum(-1)  # (B, J)
    y = (prob.sum(dim=3) * ys).sum(-1)  # (B, J)
    return torch.stack([x, y], dim=-1)  # (B, J, 2)


def sample_joint_features(feature_map: torch.Tensor, joints_px: torch.Tensor, stride: int) -> torch.Tensor:
    """Bilinear features at pixel positions. ``feature_map (B, E, H, W)`` (``stride`` crop pixels per cell),
    ``joints_px (B, J, 2)`` -> ``(B, J, E)``."""
    size = torch.tensor([feature_map.shape[3], feature_map.shape[2]], device=joints_px.device) * stride
    grid = (2.0 * joints_px / size - 1.0)[:, :, None, :]  # (B, J, 1, 2) in [-1, 1]
    sampled = F.grid_sample(feature_map, grid.to(feature_map.dtype), mode="bilinear", align_corners=False)
    return sampled[..., 0].transpose(1, 2)  # (B, E, J, 1) -> (B, J, E)


@dataclass
class UnfolderOutput:
    """``joints_2d (B, T, J, 2)`` crop pixels; ``features (B, T, J, E)`` = ``F_J``."""

    joints_2d: torch.Tensor
    features: torch.Tensor


class Unfolder(nn.Module):
    """``num_frames`` independent :class:`FrameDecoder` s (past, current, future), at ``stride`` 8 or 4."""

    def __init__(self, channels: tuple[int, int, int], embed_dim: int, num_frames: int = 3,
                 num_joints: int = NUM_JOINTS, stride: int = 8, stride4_channels: int = 64) -> None:
        super().__init__()
        self.decoders = nn.ModuleList(FrameDecoder(channels, embed_dim, num_joints, stride, stride4_channels)
                                      for _ in range(num_frames))

    def forward(self, feats: BackboneFeatures) -> UnfolderOutput:
        joints, features = [], []
        for decoder in self.decoders:
            feature_map, heatmaps = decoder(feats)  # (B, E, h, w), (B, J, h, w)
            joints_px = (soft_argmax_2d(heatmaps) + 0.5) * decoder.stride  # (B, J, 2) crop pixels
            joints.append(joints_px)
            features.append(sample_joint_features(feature_map, joints_px, decoder.stride))  # (B, J, E)
        return UnfolderOutput(torch.stack(joints, dim=1), torch.stack(features, dim=1))  # (B, T, J, 2), (B, T, J, E)
