"""The EGL mesh renderer: projection conventions, tiles, sub-frame averaging, anti-aliasing, capping, errors."""

from __future__ import annotations

import numpy as np
import pytest

from hmh.data import render
from hmh.data.render import MeshRenderer, RendererUnavailableError, boundary_loops, orient_outward

SIZE = 64
FOCAL = 100.0
RADIUS, DEPTH = 0.05, 0.5  # metres: a sphere 10 px in radius on the image


def uv_sphere(lat: int = 16, lon: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere ``(V, 3)`` and its faces ``(F, 3)`` (poles + rings)."""
    theta = np.pi * np.arange(1, lat) / lat
    phi = 2 * np.pi * np.arange(lon) / lon
    ring = np.stack(np.broadcast_arrays(np.sin(theta)[:, None] * np.cos(phi), np.sin(theta)[:, None] * np.sin(phi),
                                        np.cos(theta)[:, None] + 0 * phi), -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 0, 1]], ring, [[0, 0, -1]]])
    last = len(verts) - 1
    faces = [[0, 1 + j, 1 + (j + 1) % lon] for j in range(lon)]
    for i in range(lat - 2):
        for j in range(lon):
            a, b = 1 + i * lon + j, 1 + i * lon + (j + 1) % lon
            faces += [[a, a + lon, b], [b, a + lon, b + lon]]
    faces += [[1 + (lat - 2) * lon + j, last, 1 + (lat - 2) * lon + (j + 1) % lon] for j in range(lon)]
    faces = np.array(faces)
    return verts, orient_outward(faces, verts)


@pytest.fixture(scope="module")
def sphere():
    return uv_sphere()


def frame_arrays(n: int, principal=(SIZE / 2 - 0.5, SIZE / 2 - 0.5)):
    intrinsics = np.tile([FOCAL, FOCAL, *principal], (n, 1))
    albedo = np.tile([0.5, 0.35, 0.25, 0.1], (n, 1))
    light = np.tile([0.0, -0.6, -1.0, 0.2], (n, 1))  # from above, on the camera's side
    return intrinsics, albedo, light


def centroid(alpha: np.ndarray) -> np.ndarray:
    rows, cols = np.mgrid[: alpha.shape[0], : alpha.shape[1]]
    return np.array([(alpha * cols).sum(), (alpha * rows).sum()]) / alpha.sum()


def test_sphere_silhouette_follows_opencv_projection(sphere):
    verts, faces = sphere
    centres = np.array([[0.0, 0.0, DEPTH], [0.04, 0.0, DEPTH], [0.0, 0.04, DEPTH]])  # centre, +x, +y
    with MeshRenderer(faces, len(verts), SIZE, images_per_draw=8) as renderer:
        out = renderer.render(verts[None] * RADIUS + centres[:, None], *frame_arrays(3))
    assert out.rgb.shape == (3, SIZE, SIZE, 3) and out.alpha.shape == (3, SIZE, SIZE)
    area = np.pi * (FOCAL * RADIUS / DEPTH) ** 2
    for alpha, centre in zip(out.alpha, centres, strict=True):
        expected = FOCAL * centre[:2] / centre[2] + SIZE / 2 - 0.5
        assert abs(alpha.sum() - area) < 0.06 * area
        np.testing.assert_allclose(centroid(alpha), expected, atol=0.3)  # +x right, +y down, pixel centres
    assert out.alpha[0, :18].sum() == 0 and out.alpha[0, :, :18].sum() == 0  # nothing far from the sphere
    upper, lower = out.rgb[0, 24:31, 26:38].mean(), out.rgb[0, 33:40, 26:38].mean()
    assert upper > lower  # lit from above (-y)
    assert np.all(out.rgb <= out.alpha[..., None] + 1e-3)  # premultiplied by coverage


def test_meshes_stay_inside_their_tile(sphere):
    verts, faces = sphere
    centres = np.array([[0.16, 0.0, DEPTH], [5.0, 5.0, DEPTH], [0.0, 0.16, DEPTH], [0.0, 0.0, -1.0]])
    with MeshRenderer(faces, len(verts), SIZE, images_per_draw=4) as renderer:
        out = renderer.render(verts[None] * RADIUS + centres[:, None], *frame_arrays(4))
    assert 0.3 * np.pi * 100 < out.alpha[0].sum() < 0.7 * np.pi * 100  # half a sphere at the right edge
    assert out.alpha[0][:, -1].sum() > 0 and out.alpha[1].sum() == 0  # clipped, not spilled into image 1
    assert out.alpha[2][-1].sum() > 0 and out.alpha[3].sum() == 0  # bottom edge; behind the camera: nothing


def test_subframes_average_and_chunking_match_single_renders(sphere):
    verts, faces = sphere
    offsets = np.linspace(-0.03, 0.03, 6)
    frames = verts[None] * RADIUS + np.stack([offsets, 0 * offsets, DEPTH + 0 * offsets], -1)[:, None]
    with MeshRenderer(faces, len(verts), SIZE, images_per_draw=8) as single:
        each = single.render(frames, *frame_arrays(6))
    with MeshRenderer(faces, len(verts), SIZE, frames_per_image=3, images_per_draw=1) as blurred:
        mean = blurred.render(frames, *frame_arrays(6))  # 2 images, one per draw
    assert mean.alpha.shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(mean.alpha, each.alpha.reshape(2, 3, SIZE, SIZE).mean(1), atol=2e-3)
    np.testing.assert_allclose(mean.rgb, each.rgb.reshape(2, 3, SIZE, SIZE, 3).mean(1), atol=2e-3)
    assert ((mean.alpha > 0.2) & (mean.alpha < 0.5)).sum() > 20  # the blur trail is partly covered


def test_antialiasing_by_jitter_or_msaa(sphere):
    verts, faces = sphere
    still = np.repeat(verts[None] * RADIUS + [0.0, 0.0, DEPTH], 9, axis=0)
    intrinsics, albedo, light = frame_arrays(9)
    jitter = (np.stack(np.meshgrid(np.arange(3), np.arange(3)), -1).reshape(9, 2) + 0.5) / 3 - 0.5
    with MeshRenderer(faces, len(verts), SIZE) as plain:
        hard = plain.render(still[:1], intrinsics[:1], albedo[:1], light[:1]).alpha[0]
    with MeshRenderer(faces, len(verts), SIZE, frames_per_image=9) as accumulate:
        soft = accumulate.render(still, intrinsics + np.pad(jitter, ((0, 0), (2, 0))), albedo, light).alpha[0]
    with MeshRenderer(faces, len(verts), SIZE, samples=4) as msaa:
        multi = msaa.render(still[:1], intrinsics[:1], albedo[:1], light[:1]).alpha[0]
    partial = lambda a: ((a > 0.05) & (a < 0.95)).sum()  # noqa: E731
    assert partial(hard) == 0
    assert partial(soft) > 30 and partial(multi) > 30  # a smooth edge all around the disc
    assert abs(soft.sum() - hard.sum()) < 0.03 * hard.sum()


def test_a_part_filled_atlas_after_a_full_one_equals_a_fresh_render(sphere):
    """The draw clears the whole atlas (fast on llvmpipe), not only the rows it uses (the straightforward way):
    tiles left from an earlier, larger draw must not show up; timing the phases changes nothing."""
    from hmh.data.timing import PhaseTimer

    verts, faces = sphere
    offsets = np.linspace(-0.04, 0.04, 24)
    frames = verts[None] * RADIUS + np.stack([offsets, offsets[::-1], DEPTH + 0 * offsets], -1)[:, None]
    arrays = frame_arrays(24)
    with MeshRenderer(faces, len(verts), SIZE, frames_per_image=3, images_per_draw=8) as fresh:
        expected = fresh.render(frames[:6], *(a[:6] for a in arrays))  # 2 of 8 atlas rows
    with MeshRenderer(faces, len(verts), SIZE, frames_per_image=3, images_per_draw=8) as reused:
        reused.render(frames[::-1], *(a[::-1] for a in arrays))  # all 8 rows drawn first
        timer = PhaseTimer()
        again = reused.render(frames[:6], *(a[:6] for a in arrays), timer=timer)
    np.testing.assert_array_equal(again.rgb, expected.rgb)
    np.testing.assert_array_equal(again.alpha, expected.alpha)
    assert set(timer.wall) == {"rendering", "averaging"} and all(t >= 0 for t in timer.cpu.values())


def test_renderer_then_torchvision_and_triton_do_not_crash():
    """EGL first, then triton's LLVM (torchvision, torch.compile) segfaulted; create_context preloads triton."""
    import subprocess
    import sys

    pytest.importorskip("triton")  # CPU-only torch builds have no triton, and so nothing to conflict with
    code = ("from hmh.data.render import create_context; ctx = create_context(); import torchvision, triton, torch; "
            "print(float((torchvision.ops.box_area(torch.ones(1, 4) * torch.tensor([0, 0, 2, 3]))).sum()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "6.0"


def test_open_mesh_is_capped_and_winding_is_checked(sphere):
    verts, faces = sphere
    top = np.isin(faces, [0]).any(1)  # remove the faces around the north pole: one open ring
    loops = boundary_loops(faces[~top])
    assert len(loops) == 1 and len(loops[0]) == 24
    assert boundary_loops(faces) == []
    np.testing.assert_array_equal(orient_outward(faces[:, ::-1], verts), faces)
    looking_in = verts * RADIUS + [0.0, 0.0, DEPTH]
    looking_in[:, 2] = DEPTH - (verts[:, 2] * RADIUS)  # the opening faces the camera
    with MeshRenderer(faces[~top], len(verts), SIZE) as renderer:
        out = renderer.render(looking_in[None], *frame_arrays(1))
    assert out.alpha[0, 30:34, 30:34].min() == 1.0  # the cap closes the hole: no see-through


def test_bad_inputs_raise(sphere):
    verts, faces = sphere
    with pytest.raises(ValueError, match="faces"):
        MeshRenderer(faces + len(verts), len(verts), SIZE)
    with MeshRenderer(faces, len(verts), SIZE, frames_per_image=2) as renderer:
        with pytest.raises(ValueError, match="multiple of 2"):
            renderer.render(verts[None], *frame_arrays(1))
        with pytest.raises(ValueError, match="intrinsics"):
            renderer.render(np.stack([verts, verts]), *(a[:1] for a in frame_arrays(2)))


def test_missing_egl_names_the_packages(monkeypatch):
    import moderngl

    def fail(**kwargs):
        raise Exception("libEGL.so.1: cannot open shared object file")

    monkeypatch.setattr(moderngl, "create_context", fail)
    with pytest.raises(RendererUnavailableError, match="libegl1 libegl-mesa0 libgl1-mesa-dri libgl1"):
        render.create_context()
