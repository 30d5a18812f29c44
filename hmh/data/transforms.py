"""BlurHandNet's crop, augmentation and left-hand mirroring as pure functions.

Pixel convention: integer coordinates are pixel centres (OpenCV's; BlurHandNet's ``cv2.warpAffine``), so a
horizontal flip maps ``x -> W - 1 - x``. An affine ``A (2, 3)`` maps original image pixels to crop pixels:
``q = A[:, :2] @ p + A[:, 2]``. The mirror and the crop rotation act on camera-frame 3D targets too:
mirroring negates camera x; a crop rotated by ``rot`` degrees rotates camera-frame points by
:func:`rotation_z` about the optical axis (BlurHandNet's ``rot_aug_mat``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from hmh.geometry import axis_angle_to_matrix, matrix_to_axis_angle

BBOX_EXTEND = 1.2  # tight joint box enlarged by this factor per axis (BlurHandNet get_bbox)
BBOX_EXPAND = 1.25  # square box enlarged by this factor (BlurHandNet process_bbox)
SCALE_FACTOR = 0.25  # scale = 1 + 0.25 * clip(N(0,1), -1, 1)
ROT_FACTOR = 30.0  # rotation = 30 * clip(N(0,1), -2, 2) degrees ...
ROT_PROB = 0.6  # ... with probability 0.6, else 0
COLOR_FACTOR = 0.2  # per-channel colour gain ~ U[0.8, 1.2]


@dataclass(frozen=True)
class Augmentation:
    """One sample's crop augmentation. ``rotation`` in degrees; ``color`` per-channel RGB gain."""

    scale: float = 1.0
    rotation: float = 0.0
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    flip: bool = False


def sample_augmentation(flip: bool = False, generator: torch.Generator | None = None) -> Augmentation:
    """Draw BlurHandNet's training augmentation (scale, rotation with p=0.6, colour) from torch's RNG.

    Torch's RNG is seeded per DataLoader worker, so runs are reproducible under ``torch.manual_seed``.
    ``flip`` is not random: left hands are always mirrored, right hands never.
    """
    normal = torch.randn(2, generator=generator, dtype=torch.float64)
    uniform = torch.rand(4, generator=generator, dtype=torch.float64)
    scale = 1.0 + SCALE_FACTOR * float(normal[0].clamp(-1.0, 1.0))
    rotation = ROT_FACTOR * float(normal[1].clamp(-2.0, 2.0)) if float(uniform[0]) <= ROT_PROB else 0.0
    gains = (1.0 - COLOR_FACTOR + 2.0 * COLOR_FACTOR * uniform[1:]).tolist()
    return Augmentation(scale=scale, rotation=rotation, color=(gains[0], gains[1], gains[2]), flip=flip)


def joints_bbox(points: np.ndarray, valid: np.ndarray, extend: float = BBOX_EXTEND) -> np.ndarray:
    """Tight box around the valid 2D joints, enlarged by ``extend`` about its centre, per axis.

    ``points (..., J, 2)`` pixels, ``valid (..., J)`` 0/1 -> ``(..., 4)`` boxes ``(x, y, w, h)``. A box with no
    valid joint is all NaN.
    """
    mask = np.asarray(valid, dtype=bool)[..., None]  # (..., J, 1)
    with np.errstate(invalid="ignore"):
        low = np.where(mask, points, np.inf).min(axis=-2)  # (..., 2)
        high = np.where(mask, points, -np.inf).max(axis=-2)
        centre = (low + high) / 2.0
        size = (high - low) * extend
    size = np.where(mask.any(axis=-2), size, np.nan)
    return np.concatenate([centre - size / 2.0, size], axis=-1).astype(np.float64)


def square_bbox(
    bbox: np.ndarray, width: np.ndarray | float, height: np.ndarray | float, expand: float = BBOX_EXPAND
) -> tuple[np.ndarray, np.ndarray]:
    """BlurHandNet's ``process_bbox``: clip to the image, make square about the centre, enlarge by ``expand``.

    ``bbox (..., 4)`` ``(x, y, w, h)``; ``width``/``height`` image size, broadcastable to ``(...)``.
    Returns ``(boxes (..., 4), ok (...))``; ``ok`` is False where the clipped box is empty (BlurHandNet skips
    those samples); such rows hold NaN.
    """
    x, y, w, h = np.moveaxis(np.asarray(bbox, dtype=np.float64), -1, 0)
    x1 = np.maximum(0.0, x)
    y1 = np.maximum(0.0, y)
    with np.errstate(invalid="ignore"):
        x2 = np.minimum(np.asarray(width, dtype=np.float64) - 1.0, x1 + np.maximum(0.0, w - 1.0))
        y2 = np.minimum(np.asarray(height, dtype=np.float64) - 1.0, y1 + np.maximum(0.0, h - 1.0))
        ok = (w * h > 0) & (x2 > x1) & (y2 > y1)
    w, h = x2 - x1, y2 - y1
    centre_x, centre_y = x1 + w / 2.0, y1 + h / 2.0
    side = np.maximum(w, h) * expand
    boxes = np.stack([centre_x - side / 2.0, centre_y - side / 2.0, side, side], axis=-1)
    return np.where(ok[..., None], boxes, np.nan), ok


def crop_affine(bbox: np.ndarray, out_size: int, aug: Augmentation, image_width: int) -> np.ndarray:
    """Affine ``(2, 3)`` from original image pixels to the ``out_size`` crop (BlurHandNet's patch transform).

    The (square) ``bbox (4,)`` is scaled by ``aug.scale`` about its centre and rotated by ``aug.rotation``
    degrees; with ``aug.flip`` the image is mirrored first (``x -> image_width - 1 - x``). The box centre lands on
    crop pixel ``out_size / 2``.
    """
    x, y, w, h = (float(v) for v in bbox)
    centre = np.array([x + 0.5 * w, y + 0.5 * h])
    flip = np.eye(3)
    if aug.flip:
        flip = np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        centre[0] = image_width - 1.0 - centre[0]
    side = max(w, h) * aug.scale
    angle = np.deg2rad(-aug.rotation)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = (out_size / side) * rot  # (2, 2)
    crop = np.eye(3)
    crop[:2, :2] = linear
    crop[:2, 2] = out_size / 2.0 - linear @ centre
    return (crop @ flip)[:2]


def apply_affine(points: np.ndarray | torch.Tensor, affine: np.ndarray) -> np.ndarray | torch.Tensor:
    """``points (..., 2)`` -> ``(..., 2)`` under ``affine (2, 3)``; keeps the input's type (numpy or torch)."""
    if isinstance(points, torch.Tensor):
        mat = torch.as_tensor(affine, dtype=points.dtype, device=points.device)
        return points @ mat[:, :2].T + mat[:, 2]
    return points @ affine[:, :2].T + affine[:, 2]


def crop_intrinsics(focal: np.ndarray, princpt: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics of the virtual camera that sees the crop directly.

    Projecting the (mirrored, rotated) camera-frame points with ``(focal', princpt')`` reproduces the crop's 2D
    joints exactly when ``fx == fy`` or there is no rotation (InterHand cameras have ``fx ~= fy``).
    ``focal, princpt (2,)`` -> ``(2,), (2,)``.
    """
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    return np.asarray(focal, dtype=np.float64) * scale, apply_affine(np.asarray(princpt, dtype=np.float64), affine)


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """The inverse ``(2, 3)`` of ``affine (2, 3)``: crop pixels back to original image pixels."""
    return np.linalg.inv(np.vstack([affine, [0.0, 0.0, 1.0]]))[:2]


def warp_image(image: Image.Image, affine: np.ndarray, out_size: int, color=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Crop an RGB PIL image with ``affine (2, 3)`` (bilinear, black outside), times per-channel ``color``.

    Returns ``(3, S, S)`` float32 in ``[0, 1]``. PIL samples at pixel centres ``i + 0.5``; the half-pixel shift
    converts our integer-centre affine into PIL's convention.
    """
    inv = invert_affine(affine)  # crop -> image, integer centres
    offset = 0.5 + inv[:, 2] - inv[:, :2] @ np.array([0.5, 0.5])
    data = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    crop = image.transform((out_size, out_size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32).copy()).permute(2, 0, 1)  # (3, S, S)
    gains = torch.tensor(color, dtype=torch.float32)[:, None, None]  # (3, 1, 1)
    return (pixels * (gains / 255.0)).clamp_(0.0, 1.0)


def rotation_z(degrees: float) -> torch.Tensor:
    """``(3, 3)`` rotation of camera-frame points that matches a crop rotated by ``degrees`` (float64)."""
    angle = np.deg2rad(-degrees)
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    return torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def mirror_points(points: torch.Tensor) -> torch.Tensor:
    """Mirror camera-frame points across the camera's y-z plane (negate x). ``(..., 3)`` -> ``(..., 3)``."""
    return points * points.new_tensor([-1.0, 1.0, 1.0])


def mirror_pose(pose: torch.Tensor) -> torch.Tensor:
    """Mirror a MANO pose: each joint's axis-angle ``(x, y, z) -> (x, -y, -z)``. ``(..., 48)`` -> ``(..., 48)``.

    A left-hand pose mirrored this way, posed with the right-hand model, gives the left mesh with x negated
    (MANO's left and right models are mirror images, their mean poses too).
    """
    sign = pose.new_tensor([1.0, -1.0, -1.0]).repeat(pose.shape[-1] // 3)  # (48,)
    return pose * sign


def rotate_global_orient(pose: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Pre-multiply the global orientation (first 3 values) by ``rotation (3, 3)``: ``R_root' = rotation @ R_root``.

    ``pose (..., 48)`` -> ``(..., 48)``; the hand articulation is untouched.
    """
    root = axis_angle_to_matrix(pose[..., :3].double())  # (..., 3, 3)
    root = matrix_to_axis_angle(rotation.to(root) @ root).to(pose.dtype)  # (..., 3)
    return torch.cat([root, pose[..., 3:]], dim=-1)
