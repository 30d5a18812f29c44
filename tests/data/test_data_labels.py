"""The synthetic dataset's labels against its images, to the sub-pixel: the written camera reproduces the rendered
silhouette, and every annotation's validity and box follow from the written joints and camera."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hmh.data import motion, synth_worker
from hmh.data.synthetic import build_dataset
from hmh.mano.model import Mano

SIZE = 64


def load(root: Path, split: str, name: str) -> dict:
    return json.loads((root / "annotations" / split / f"BlurHand_{split}_{name}.json").read_text())


def camera(cameras: dict, image: dict) -> tuple[np.ndarray, ...]:
    """``camrot (3, 3)``, ``campos (3,)`` mm, ``focal (2,)``, ``princpt (2,)`` px of an image, as written."""
    cam = cameras[str(image["capture"])]
    return tuple(np.array(cam[key][image["camera"]], dtype=np.float64) for key in ("camrot", "campos", "focal",
                                                                                   "princpt"))


def pixels(world_mm: np.ndarray, rot, campos, focal, princpt) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV projection of ``world_mm (..., 3)``: pixels ``(..., 2)`` and depth ``(...)`` mm."""
    cam = (world_mm - campos) @ rot.T
    return cam[..., :2] / cam[..., 2:] * focal + princpt, cam[..., 2]


def centroid(alpha: np.ndarray) -> np.ndarray:
    """Coverage-weighted centre ``(u, v)`` px of ``alpha (S, S)``, pixel centres at integers."""
    rows, cols = np.indices(alpha.shape)
    return np.array([(alpha * cols).sum(), (alpha * rows).sum()]) / alpha.sum()


@pytest.fixture(scope="module")
def coverage_dataset(tmp_path_factory) -> Path:
    """Sharp images (one sub-frame, the labelled keyframe, no jitter) whose files hold the renderer's coverage
    ``(S, S)`` float32 as ``.npy`` bytes instead of a JPEG."""

    def coverage(rng, rgb, alpha, back) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, alpha)
        return buffer.getvalue()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synth_worker, "finish_image", coverage)
        return build_dataset(tmp_path_factory.mktemp("cover") / "ds", train=8, test=0, size=SIZE, subframes=1,
                             seed=3, progress=False, workers=1)


def test_written_camera_reproduces_the_rendered_silhouette_to_a_third_of_a_pixel(coverage_dataset):
    """Each image's coverage against the same renderer fed only with what the JSONs say (MANO parameters and the
    written camera): any offset between the written principal point and the rendering one shows as a shift."""
    data, cameras, mano = (load(coverage_dataset, "train", name) for name in ("data", "camera", "MANO_NeuralAnnot"))
    images = {image["id"]: image for image in data["images"]}
    renderers = synth_worker._models(SIZE, 1).renderers
    layers = {side: Mano("", side=side) for side in ("right", "left")}
    shifts = []
    for ann in (a for a in data["annotations"] if a["is_middle"]):
        image, side = images[ann["image_id"]], ann["hand_type"]
        rot, campos, focal, princpt = camera(cameras, image)
        entry = mano[str(image["capture"])][str(image["frame_idx"])][side]
        pose, shape, trans = (torch.tensor([entry[k]], dtype=torch.float32) for k in ("pose", "shape", "trans"))
        with torch.no_grad():
            world = layers[side](pose[:, :3], pose[:, 3:], shape, transl=trans).vertices[0].double().numpy()  # (V, 3)
        verts = ((world * 1000.0 - campos) @ rot.T / 1000.0)[None]  # (1, V, 3) camera frame, metres
        ones = np.ones((1, 4))
        expected = renderers[side].render(verts, np.concatenate([focal, princpt])[None], ones, ones).alpha[0]
        rendered = np.load(coverage_dataset / "blur_images" / "train" / image["file_name"])
        inside = expected[[0, -1]].sum() + expected[:, [0, -1]].sum() == 0  # not cut by the image border
        if inside and expected.sum() > 20:
            shifts.append(np.abs(centroid(rendered) - centroid(expected)).max())
    assert len(shifts) >= 4
    assert max(shifts) < 0.3, shifts


def expected_labels(uv: np.ndarray, depth: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Validity ``(21,)`` (in front, inside ``[0, size - 1]``) and box ``[x, y, w, h]`` (the valid joints' extent
    x1.2 about its centre, clipped to the image; the whole image without valid joints) of ``uv (21, 2)``."""
    valid = (depth > 0) & (uv >= 0).all(1) & (uv <= size - 1).all(1)
    if not valid.any():
        return valid, np.array([0.0, 0.0, size - 1.0, size - 1.0])
    lo, hi = uv[valid].min(0), uv[valid].max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.2
    lo, hi = np.clip(centre - half, 0, size - 1), np.clip(centre + half, 0, size - 1)
    return valid, np.concatenate([lo, hi - lo])


def test_every_annotation_s_validity_and_box_follow_from_the_written_joints_and_camera(tmp_path):
    """All five keyframes of every view, recomputed from ``joint_3d`` and the written camera (principal points are
    not centred, so an x/y swap or a half-pixel shift moves the boxes)."""
    root = build_dataset(tmp_path / "ds", train=12, test=0, size=SIZE, subframes=1, seed=1, progress=False,
                         workers=1)
    data, cameras, joints = (load(root, "train", name) for name in ("data", "camera", "joint_3d"))
    images = {image["id"]: image for image in data["images"]}
    asymmetric = 0
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        rot, campos, focal, princpt = camera(cameras, image)
        asymmetric += abs(princpt[0] - princpt[1]) > 0.5
        hand = slice(0, 21) if ann["hand_type"] == "right" else slice(21, 42)
        world = np.array(joints[str(image["capture"])][str(image["frame_idx"])]["world_coord"])[hand]  # (21, 3)
        valid, box = expected_labels(*pixels(world, rot, campos, focal, princpt), SIZE)
        assert ann["joint_valid"][hand] == valid.astype(int).tolist()
        np.testing.assert_allclose(ann["bbox"], box, atol=0.006)  # written to 2 decimals
    assert asymmetric >= len(data["annotations"]) // 2


def test_worker_projection_uses_each_principal_point_coordinate_on_its_own_axis():
    rig = motion.Rig(names=["0"], camrot=np.eye(3)[None], campos=np.zeros((1, 3)), focal=np.array([[100.0, 80.0]]),
                     princpt=np.array([[10.25, 52.5]]))
    points = np.array([[0.0, 0.0, 500.0], [-51.25, 0.0, 500.0], [0.0, 71.875, 500.0], [20.0, -10.0, 400.0]])
    uv, z = synth_worker.project(points, rig, 0)
    np.testing.assert_allclose(uv, [[10.25, 52.5], [0.0, 52.5], [10.25, 64.0], [15.25, 50.5]])
    np.testing.assert_allclose(z, [500.0, 500.0, 500.0, 400.0])
    valid = synth_worker._inside(uv, z, SIZE)
    assert valid.tolist() == [True, True, False, True]  # u = 0 is the first pixel centre; v = 64 is past the last
