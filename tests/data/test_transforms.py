"""Crop, augmentation and mirroring (hmh.data.transforms) against hand-computed expectations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hmh.data.transforms import (
    Augmentation,
    apply_affine,
    crop_affine,
    crop_intrinsics,
    joints_bbox,
    mirror_points,
    mirror_pose,
    rotate_global_orient,
    rotation_z,
    sample_augmentation,
    square_bbox,
    warp_image,
)
from hmh.geometry import axis_angle_to_matrix, project


def _reference_warp(pixels: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """Bilinear warp with integer pixel centres (cv2.warpAffine's convention) via grid_sample."""
    height, width = pixels.shape[:2]
    inv = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))[:2]
    u, v = np.meshgrid(np.arange(size), np.arange(size))
    src = np.stack([u, v], -1).reshape(-1, 2) @ inv[:, :2].T + inv[:, 2]
    grid = np.stack([2 * src[:, 0] / (width - 1) - 1, 2 * src[:, 1] / (height - 1) - 1], -1)
    image = torch.tensor(pixels, dtype=torch.float64).permute(2, 0, 1)[None]
    out = F.grid_sample(image, torch.tensor(grid).reshape(1, size, size, 2), align_corners=True)
    inside = (src[:, 0] >= 0) & (src[:, 0] <= width - 1) & (src[:, 1] >= 0) & (src[:, 1] <= height - 1)
    return out[0].permute(1, 2, 0).numpy() / 255.0, inside.reshape(size, size)


@pytest.mark.parametrize("aug", [Augmentation(), Augmentation(scale=0.8, rotation=37.0, flip=True)])
def test_warp_image_matches_integer_centre_bilinear(aug):
    pixels = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    affine = crop_affine(np.array([12.0, 8.0, 30.0, 30.0]), 24, aug, image_width=70)
    out = warp_image(Image.fromarray(pixels), affine, 24).permute(1, 2, 0).numpy()
    ref, inside = _reference_warp(pixels, affine, 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    assert inside.mean() > 0.9
    assert np.abs(out - ref)[inside].max() <= 1.0 / 255 + 1e-6


def test_warp_image_colour_gain_and_clamp():
    pixels = np.full((10, 10, 3), 200, dtype=np.uint8)
    out = warp_image(Image.fromarray(pixels), crop_affine(np.array([2.0, 2, 5, 5]), 8, Augmentation(), 10), 8,
                     color=(0.5, 1.0, 1.5))  # fmt: skip
    assert torch.allclose(out[:, 4, 4], torch.tensor([100 / 255, 200 / 255, 1.0]), atol=1e-6)


def test_crop_affine_box_fills_crop():
    affine = crop_affine(np.array([10.0, 20.0, 40.0, 40.0]), 64, Augmentation(), image_width=100)
    corners = apply_affine(np.array([[10.0, 20.0], [50.0, 60.0], [30.0, 40.0]]), affine)
    np.testing.assert_allclose(corners, [[0, 0], [64, 64], [32, 32]], atol=1e-9)
    zoomed = crop_affine(np.array([10.0, 20.0, 40.0, 40.0]), 64, Augmentation(scale=2.0), image_width=100)
    np.testing.assert_allclose(apply_affine(np.array([50.0, 60.0]), zoomed), [48, 48], atol=1e-9)


def test_crop_rotation_direction_matches_blurhandnet():
    """BlurHandNet rotates the sampling axes by +rot: the image point below the box centre (+y) maps to the
    right of the crop centre for rot = 90; the camera-frame rotation maps +y to +x the same way."""
    affine = crop_affine(np.array([0.0, 0.0, 40.0, 40.0]), 40, Augmentation(rotation=90.0), image_width=100)
    np.testing.assert_allclose(apply_affine(np.array([20.0, 30.0]), affine), [30, 20], atol=1e-9)
    np.testing.assert_allclose(rotation_z(90.0) @ torch.tensor([0.0, 1.0, 5.0], dtype=torch.float64),
                               [1.0, 0.0, 5.0], atol=1e-12)  # fmt: skip


def test_flip_equals_cropping_the_mirrored_image():
    pixels = (np.random.default_rng(1).random((30, 41, 3)) * 255).astype(np.uint8)
    bbox = np.array([5.0, 4.0, 20.0, 20.0])
    flipped_affine = crop_affine(bbox, 16, Augmentation(flip=True, rotation=10.0), image_width=41)
    mirrored_bbox = np.array([41 - 1 - (5.0 + 10.0) - 10.0, 4.0, 20.0, 20.0])  # same centre, mirrored
    plain_affine = crop_affine(mirrored_bbox, 16, Augmentation(rotation=10.0), image_width=41)
    a = warp_image(Image.fromarray(pixels), flipped_affine, 16)
    b = warp_image(Image.fromarray(np.ascontiguousarray(pixels[:, ::-1])), plain_affine, 16)
    assert torch.equal(a, b)
    point = np.array([7.0, 9.0])
    np.testing.assert_allclose(apply_affine(point, flipped_affine), apply_affine(np.array([33.0, 9.0]), plain_affine))


def test_joints_bbox_and_square_bbox_hand_computed():
    points = np.array([[10.0, 20.0], [30.0, 60.0], [500.0, 500.0]])
    box = joints_bbox(points, np.array([1, 1, 0]))
    np.testing.assert_allclose(box, [8.0, 16.0, 24.0, 48.0])  # centre (20, 40), size (20, 40) * 1.2
    square, ok = square_bbox(box, 200, 200)
    # BlurHandNet's sanitising clips to x2 = x1 + w - 1: w 23, h 47, centre (19.5, 39.5); side 47 * 1.25
    assert ok
    np.testing.assert_allclose(square, [19.5 - 29.375, 39.5 - 29.375, 58.75, 58.75])
    _, outside = square_bbox(np.array([250.0, 10.0, 20.0, 20.0]), 200, 200)
    empty, none_valid = square_bbox(joints_bbox(points, np.zeros(3)), 200, 200)
    assert not outside and not none_valid and np.isnan(empty).all()


def test_bbox_functions_are_batched():
    points = np.random.default_rng(2).random((5, 21, 2)) * 100 + 50
    boxes, ok = square_bbox(joints_bbox(points, np.ones((5, 21))), np.full(5, 300), np.full(5, 300))
    single, _ = square_bbox(joints_bbox(points[3], np.ones(21)), 300, 300)
    assert boxes.shape == (5, 4) and ok.all()
    np.testing.assert_allclose(boxes[3], single)


def test_sample_augmentation_ranges_and_determinism():
    gen = torch.Generator().manual_seed(0)
    augs = [sample_augmentation(generator=gen) for _ in range(3000)]
    scales = np.array([a.scale for a in augs])
    rots = np.array([a.rotation for a in augs])
    colors = np.array([a.color for a in augs])
    assert scales.min() >= 0.75 and scales.max() <= 1.25 and (scales == 0.75).any() and (scales == 1.25).any()
    assert np.abs(rots).max() <= 60.0 and (np.abs(rots) == 60.0).any()
    assert 0.36 < (rots == 0.0).mean() < 0.44  # rotation with probability 0.6
    assert colors.min() >= 0.8 and colors.max() <= 1.2 and colors.std() > 0.1
    assert not any(a.flip for a in augs) and sample_augmentation(flip=True).flip
    assert sample_augmentation(generator=torch.Generator().manual_seed(0)) == augs[0]


def test_crop_intrinsics_reproduce_crop_joints():
    """Camera-frame points mirrored and rotated like the targets, projected with the crop intrinsics, land on
    the affine-mapped original projections (fx == fy)."""
    rng = np.random.default_rng(3)
    points = torch.tensor(rng.normal([0.0, 0.0, 600.0], [60.0, 60.0, 20.0], (21, 3)))
    focal, princpt = np.array([500.0, 500.0]), np.array([310.0, 250.0])
    pixels = project(points, torch.tensor(focal), torch.tensor(princpt))
    for aug in [Augmentation(), Augmentation(scale=1.2, rotation=-41.0, flip=True), Augmentation(rotation=75.0)]:
        affine = crop_affine(np.array([200.0, 150.0, 220.0, 220.0]), 128, aug, image_width=640)
        focal_c, princpt_c = crop_intrinsics(focal, princpt, affine)
        moved = (mirror_points(points) if aug.flip else points) @ rotation_z(aug.rotation).T
        expected = apply_affine(pixels, affine)
        got = project(moved, torch.tensor(focal_c), torch.tensor(princpt_c))
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_mirror_pose_and_points():
    pose = torch.arange(48, dtype=torch.float64).reshape(16, 3)
    mirrored = mirror_pose(pose.reshape(48)).reshape(16, 3)
    assert torch.equal(mirrored[:, 0], pose[:, 0]) and torch.equal(mirrored[:, 1:], -pose[:, 1:])
    assert torch.equal(mirror_points(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[-1.0, 2.0, 3.0]]))
    # a mirrored rotation is M R M with M = diag(-1, 1, 1)
    rot = axis_angle_to_matrix(torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64))
    m = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    flipped = axis_angle_to_matrix(mirror_pose(torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)))
    torch.testing.assert_close(flipped, m @ rot @ m)


def test_rotate_global_orient():
    pose = torch.randn(4, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.5
    rot = axis_angle_to_matrix(torch.tensor([0.2, 0.5, -0.4], dtype=torch.float64))
    out = rotate_global_orient(pose, rot)
    torch.testing.assert_close(axis_angle_to_matrix(out[:, :3]), rot @ axis_angle_to_matrix(pose[:, :3]))
    assert torch.equal(out[:, 3:], pose[:, 3:])


def test_mirrored_pose_on_right_model_is_mirrored_left_mesh():
    """The synthetic MANO's left model is the right one mirrored: right(mirror_pose(p)) == mirror(left(p))."""
    from hmh.mano.model import Mano

    gen = torch.Generator().manual_seed(0)
    pose = torch.randn(3, 48, generator=gen) * 0.4
    betas = torch.randn(3, 10, generator=gen)
    right, left = Mano("", side="right"), Mano("", side="left")
    mirrored = mirror_pose(pose)
    out_r = right(mirrored[:, :3], mirrored[:, 3:], betas)
    out_l = left(pose[:, :3], pose[:, 3:], betas)
    torch.testing.assert_close(out_r.vertices, mirror_points(out_l.vertices), atol=1e-5, rtol=0)
    torch.testing.assert_close(out_r.joints, mirror_points(out_l.joints), atol=1e-5, rtol=0)
