"""Rotations, slerp, camera transforms and projection (hmh.geometry), checked against independent references."""

from __future__ import annotations

import math

import pytest
import torch

from hmh import geometry as g


def _random_axis_angle(n: int, seed: int = 0, max_angle: float = math.pi - 1e-3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64), dim=-1)
    angle = torch.rand(n, 1, generator=gen, dtype=torch.float64) * max_angle
    return axis * angle


def _reference_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """exp of the skew matrix: an independent route to the rotation matrix."""
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*axis_angle.shape[:-1], 3, 3)
    return torch.linalg.matrix_exp(skew)


def _quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, -1).reshape(*q.shape[:-1], 3, 3)


def _angle_between(r0: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    trace = (r0.transpose(-1, -2) @ r1).diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.acos(((trace - 1) / 2).clamp(-1, 1))


def test_axis_angle_to_matrix_matches_the_matrix_exponential() -> None:
    aa = _random_axis_angle(64).reshape(4, 16, 3)  # any leading shape
    mats = g.axis_angle_to_matrix(aa)
    assert mats.shape == (4, 16, 3, 3)
    torch.testing.assert_close(mats, _reference_matrix(aa), atol=1e-12, rtol=0)
    torch.testing.assert_close(mats @ mats.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(mats))
    torch.testing.assert_close(torch.linalg.det(mats), torch.ones(4, 16, dtype=torch.float64))
    quarter = g.axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
    torch.testing.assert_close(quarter @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))  # x -> y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_axis_angle_matrix_quaternion_round_trips(dtype) -> None:
    aa = torch.cat([_random_axis_angle(200), torch.zeros(1, 3), torch.tensor([[1e-7, 0.0, 0.0]])]).to(dtype)
    tol = {"atol": 2e-5 if dtype == torch.float32 else 1e-10, "rtol": 0}
    mats = g.axis_angle_to_matrix(aa)
    torch.testing.assert_close(g.matrix_to_axis_angle(mats), aa, **tol)
    quat = g.matrix_to_quaternion(mats)
    assert torch.all(quat[..., 0] >= 0)
    torch.testing.assert_close(quat.norm(dim=-1), torch.ones(len(aa), dtype=dtype), **tol)
    torch.testing.assert_close(quat, g.axis_angle_to_quaternion(aa), **tol)  # both routes agree (w >= 0)
    torch.testing.assert_close(_quaternion_to_matrix(quat), mats, **tol)
    torch.testing.assert_close(g.quaternion_to_axis_angle(quat), aa, **tol)
    torch.testing.assert_close(g.quaternion_to_axis_angle(-quat), aa, **tol)  # q and -q are one rotation


def test_round_trip_near_pi_keeps_the_rotation() -> None:
    axis = torch.nn.functional.normalize(_random_axis_angle(50, seed=1), dim=-1)
    aa = axis * (math.pi - torch.logspace(-6, -1, 50, dtype=torch.float64))[:, None]
    back = g.matrix_to_axis_angle(g.axis_angle_to_matrix(aa))
    assert torch.all(back.norm(dim=-1) <= math.pi + 1e-9)
    torch.testing.assert_close(g.axis_angle_to_matrix(back), g.axis_angle_to_matrix(aa), atol=1e-9, rtol=0)


def test_gradients_are_finite_at_the_identity() -> None:
    aa = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    mats = g.axis_angle_to_matrix(aa)
    (mats * torch.randn(2, 3, 3, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(aa.grad).all()
    aa = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    g.axis_angle_to_matrix(aa)[1, 0].backward()  # R = I + skew(aa) + O(|aa|^2), so R[1, 0] = z + ...
    torch.testing.assert_close(aa.grad, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    rot = g.axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)).requires_grad_(True)
    g.matrix_to_axis_angle(rot).sum().backward()
    assert torch.isfinite(rot.grad).all()


def test_rot6d_round_trip_and_projection_onto_rotations() -> None:
    mats = g.axis_angle_to_matrix(_random_axis_angle(32, seed=2))
    six = g.matrix_to_rot6d(mats)
    assert six.shape == (32, 6)
    torch.testing.assert_close(six[:, :3], mats[:, :, 0])  # first column, then the second
    torch.testing.assert_close(g.rot6d_to_matrix(six), mats, atol=1e-12, rtol=0)
    raw = torch.randn(5, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = g.rot6d_to_matrix(raw)
    torch.testing.assert_close(out.transpose(-1, -2) @ out, torch.eye(3, dtype=torch.float64).expand_as(out))
    torch.testing.assert_close(torch.linalg.det(out), torch.ones(5, 7, dtype=torch.float64))
    torch.testing.assert_close(out[..., 0], torch.nn.functional.normalize(raw[..., :3], dim=-1))


def test_quaternion_slerp_endpoints_midpoint_and_shortest_path() -> None:
    q0 = g.axis_angle_to_quaternion(_random_axis_angle(20, seed=4))
    q1 = g.axis_angle_to_quaternion(_random_axis_angle(20, seed=5))
    torch.testing.assert_close(g.quaternion_slerp(q0, q1, torch.zeros(20, dtype=torch.float64)), q0)
    end = g.quaternion_slerp(q0, q1, 1.0)
    torch.testing.assert_close(_quaternion_to_matrix(end), _quaternion_to_matrix(q1))
    mid = _quaternion_to_matrix(g.quaternion_slerp(q0, q1, 0.5))
    m0, m1 = _quaternion_to_matrix(q0), _quaternion_to_matrix(q1)
    total = _angle_between(m0, m1)
    torch.testing.assert_close(_angle_between(m0, mid), total / 2)  # on the geodesic, halfway
    torch.testing.assert_close(_angle_between(mid, m1), total / 2)
    flipped = g.quaternion_slerp(q0, -q1, 0.5)  # -q1 is the same rotation: the same (shortest) path
    torch.testing.assert_close(_quaternion_to_matrix(flipped), mid)
    q_same = q0.clone().requires_grad_(True)
    same = g.quaternion_slerp(q_same, q0.clone(), torch.full((20,), 0.3, dtype=torch.float64))
    torch.testing.assert_close(same, q0)  # the near-identical branch ...
    same.sum().backward()
    assert torch.isfinite(q_same.grad).all()  # ... with finite gradients (acos is singular at 1)
    times = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]  # (5, 1) broadcasts against (20,)
    assert g.quaternion_slerp(q0, q1, times).shape == (5, 20, 4)


def test_slerp_axis_angle_scales_a_rotation_from_identity() -> None:
    aa = _random_axis_angle(10, seed=6)
    zero = torch.zeros_like(aa)
    for t in (0.0, 0.25, 0.5, 1.0):
        torch.testing.assert_close(g.slerp_axis_angle(zero, aa, t), t * aa, atol=1e-10, rtol=0)
    small = aa / 2  # angles < pi/2: the shortest path from R(a) to R(-a) passes through the identity
    mid = g.slerp_axis_angle(small, -small, 0.5)
    torch.testing.assert_close(g.axis_angle_to_matrix(mid), torch.eye(3, dtype=torch.float64).expand(10, 3, 3))
    wide = aa / aa.norm(dim=-1, keepdim=True) * 2.0  # angles > pi/2: it passes through the half turn instead
    torch.testing.assert_close(g.slerp_axis_angle(wide, -wide, 0.5).norm(dim=-1), torch.full((10,), math.pi,
                               dtype=torch.float64))


def test_world_to_camera_and_projection() -> None:
    camrot = g.axis_angle_to_matrix(torch.tensor([0.1, -0.4, 0.2], dtype=torch.float64))
    campos = torch.tensor([100.0, -50.0, 20.0], dtype=torch.float64)
    points = torch.randn(2, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) * 100
    cam = g.world_to_camera(points, camrot, campos)
    expected = torch.einsum("ij,bnj->bni", camrot, points - campos)  # X_cam = R (X - C)
    torch.testing.assert_close(cam, expected)
    translation = -camrot @ campos  # BlurHand's t = -R C: X_cam = R X + t
    torch.testing.assert_close(cam, points @ camrot.T + translation)
    focal = torch.tensor([[1000.0, 900.0], [500.0, 500.0]], dtype=torch.float64)  # per batch element
    princpt = torch.tensor([[320.0, 240.0], [128.0, 128.0]], dtype=torch.float64)
    pts = torch.tensor([[[10.0, -20.0, 500.0]], [[0.0, 0.0, 2.0]]], dtype=torch.float64)
    pix = g.project(pts, focal, princpt)
    torch.testing.assert_close(pix, torch.tensor([[[340.0, 204.0]], [[128.0, 128.0]]], dtype=torch.float64))
