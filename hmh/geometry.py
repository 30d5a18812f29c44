"""Rotations, interpolation, projection and camera transforms: pure torch functions.

Conventions: rotation matrices act on column vectors (``x' = R @ x``); quaternions are ``(w, x, y, z)``;
axis-angle vectors have the rotation angle as their norm. Every function accepts any leading batch shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. ``axis_angle (..., 3)`` -> ``(..., 3, 3)``."""
    angle = axis_angle.norm(dim=-1, keepdim=True).clamp_min(_EPS)  # (..., 1)
    axis = axis_angle / angle  # (..., 3)
    x, y, z = axis.unbind(-1)
    zeros = torch.zeros_like(x)
    skew = torch.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], dim=-1)
    skew = skew.reshape(axis.shape[:-1] + (3, 3))  # (..., 3, 3)
    sin = torch.sin(angle)[..., None]  # (..., 1, 1)
    cos = torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    return eye + sin * skew + (1.0 - cos) * (skew @ skew)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation matrices -> unit quaternions ``(..., 4)`` with ``w >= 0``."""
    m = matrix
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack(
        [
            1.0 + trace,
            1.0 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1.0 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1.0 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        dim=-1,
    )  # (..., 4): 4 * (w^2, x^2, y^2, z^2)
    best = candidates.argmax(dim=-1, keepdim=True)  # (..., 1) numerically safest branch
    root = candidates.clamp_min(_EPS).sqrt()  # (..., 4): 2 * |component|
    w = torch.stack(
        [
            root[..., 0],
            (m[..., 2, 1] - m[..., 1, 2]) / root[..., 1],
            (m[..., 0, 2] - m[..., 2, 0]) / root[..., 2],
            (m[..., 1, 0] - m[..., 0, 1]) / root[..., 3],
        ],
        dim=-1,
    )
    x = torch.stack(
        [
            (m[..., 2, 1] - m[..., 1, 2]) / root[..., 0],
            root[..., 1],
            (m[..., 0, 1] + m[..., 1, 0]) / root[..., 2],
            (m[..., 0, 2] + m[..., 2, 0]) / root[..., 3],
        ],
        dim=-1,
    )
    y = torch.stack(
        [
            (m[..., 0, 2] - m[..., 2, 0]) / root[..., 0],
            (m[..., 0, 1] + m[..., 1, 0]) / root[..., 1],
            root[..., 2],
            (m[..., 1, 2] + m[..., 2, 1]) / root[..., 3],
        ],
        dim=-1,
    )
    z = torch.stack(
        [
            (m[..., 1, 0] - m[..., 0, 1]) / root[..., 0],
            (m[..., 0, 2] + m[..., 2, 0]) / root[..., 1],
            (m[..., 1, 2] + m[..., 2, 1]) / root[..., 2],
            root[..., 3],
        ],
        dim=-1,
    )
    quat = torch.stack([w, x, y, z], dim=-1)  # (..., 4 branches, 4 components)
    quat = quat.gather(-2, best[..., None].expand(best.shape[:-1] + (1, 4))).squeeze(-2) / 2.0  # (..., 4)
    quat = F.normalize(quat, dim=-1)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` -> axis-angle ``(..., 3)`` with angle in ``[0, pi]``."""
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    vec = quat[..., 1:]  # (..., 3)
    sin_half = vec.norm(dim=-1, keepdim=True)  # (..., 1)
    angle = 2.0 * torch.atan2(sin_half, quat[..., :1])  # (..., 1)
    # angle / sin(angle/2) -> 2 as the angle -> 0
    scale = torch.where(sin_half > 1e-6, angle / sin_half.clamp_min(_EPS), torch.full_like(angle, 2.0))
    return vec * scale


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` -> unit quaternions ``(..., 4)``."""
    angle = axis_angle.norm(dim=-1, keepdim=True)  # (..., 1)
    half = angle / 2.0
    # sin(a/2)/a -> 1/2 as a -> 0
    scale = torch.where(angle > 1e-6, torch.sin(half) / angle.clamp_min(_EPS), torch.full_like(angle, 0.5))
    return torch.cat([torch.cos(half), axis_angle * scale], dim=-1)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` -> axis-angle ``(..., 3)``."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """Zhou et al.'s continuous 6D representation (two columns, Gram-Schmidt). ``(..., 6)`` -> ``(..., 3, 3)``."""
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)  # columns


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` -> ``(..., 6)``: the first two columns."""
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def quaternion_slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Shortest-path spherical interpolation. ``q0, q1 (..., 4)``, ``t`` broadcastable to ``(...)`` -> ``(..., 4)``."""
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)[..., None]  # (..., 1)
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6
    w0 = torch.where(near, 1.0 - t, torch.sin((1.0 - t) * theta) / sin_theta.clamp_min(_EPS))
    w1 = torch.where(near, t, torch.sin(t * theta) / sin_theta.clamp_min(_EPS))
    return F.normalize(w0 * q0 + w1 * q1, dim=-1)


def slerp_axis_angle(aa0: torch.Tensor, aa1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Slerp between axis-angle rotations. ``aa0, aa1 (..., 3)`` -> ``(..., 3)``."""
    q = quaternion_slerp(axis_angle_to_quaternion(aa0), axis_angle_to_quaternion(aa1), t)
    return quaternion_to_axis_angle(q)


def world_to_camera(points_world: torch.Tensor, camrot: torch.Tensor, campos: torch.Tensor) -> torch.Tensor:
    """InterHand/BlurHand extrinsics: ``X_cam = R @ (X_world - campos)``.

    ``points_world (..., N, 3)``, ``camrot (..., 3, 3)``, ``campos (..., 3)`` -> ``(..., N, 3)``.
    """
    return (points_world - campos[..., None, :]) @ camrot.transpose(-1, -2)


def project(points_cam: torch.Tensor, focal: torch.Tensor, princpt: torch.Tensor) -> torch.Tensor:
    """Pinhole projection. ``points_cam (..., N, 3)``, ``focal, princpt (..., 2)`` -> pixels ``(..., N, 2)``."""
    z = points_cam[..., 2:].clamp_min(_EPS)
    return points_cam[..., :2] / z * focal[..., None, :] + princpt[..., None, :]
