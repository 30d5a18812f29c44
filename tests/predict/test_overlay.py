"""Mesh pictures of predictions: the overlay lands where the projection says, for either hand; sheets and GIFs."""

import numpy as np
import pytest
import torch
from PIL import Image

from hmh.data.transforms import Augmentation, apply_affine, crop_affine, invert_affine, square_bbox
from hmh.mano.model import Mano
from hmh.models.regressor import virtual_camera
from hmh.predict import overlay

SIZE = 64
CAMERA = np.array([0.01, -0.005, 4.0])  # wrist translation in the crop camera, metres


@pytest.fixture(scope="module")
def hand() -> tuple[np.ndarray, np.ndarray]:
    """``faces (F, 3)`` and wrist-relative vertices ``(V, 3)`` of a posed synthetic MANO hand."""
    mano = Mano()
    out = mano(torch.tensor([[0.3, 0.2, 0.1]]), torch.zeros(1, 45), torch.zeros(1, 10))
    return mano.faces.numpy(), (out.vertices - out.joints[:, :1])[0].double().numpy()


def _crop_intrinsics() -> np.ndarray:
    focal, princpt = virtual_camera(SIZE)
    return np.array([focal, focal, princpt, princpt])


def _unmirror(points: np.ndarray, is_left: bool) -> np.ndarray:
    return points * np.array([-1.0, 1.0, 1.0]) if is_left else points


def _changed(a: Image.Image, b: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box (x0, x1, y0, y1) of the pixels where two pictures differ."""
    ys, xs = np.nonzero(np.any(np.asarray(a) != np.asarray(b), axis=-1))
    return xs.min(), xs.max(), ys.min(), ys.max()


@pytest.mark.parametrize("is_left", [False, True])
def test_overlay_draws_the_mesh_where_it_projects_in_the_photo(hand, is_left):
    faces, vertices = hand
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    box, _ = square_bbox(np.array([100.0, 50.0, 80.0, 80.0]), 320, 240)
    to_crop = crop_affine(box, SIZE, Augmentation(flip=is_left), 320)
    model_scene = vertices + CAMERA  # (V, 3) as the model sees the crop (mirrored for a left hand)
    crop_px = model_scene[:, :2] / model_scene[:, 2:] * _crop_intrinsics()[:2] + _crop_intrinsics()[2:]
    expected = apply_affine(crop_px, invert_affine(to_crop))  # (V, 2) photo pixels
    scene = np.stack([_unmirror(model_scene, is_left)] * 3)  # past = current = future
    drawn = overlay.overlay_image(photo, faces, scene, _crop_intrinsics(), invert_affine(to_crop), box, is_left)
    assert drawn.size == photo.size
    x0, x1, y0, y1 = _changed(drawn, photo)
    tolerance = 1.5  # px: rasterisation at pixel centres plus anti-aliased edges
    np.testing.assert_allclose([x0, x1, y0, y1], [expected[:, 0].min(), expected[:, 0].max(),
                                                  expected[:, 1].min(), expected[:, 1].max()], atol=tolerance)


def test_overlay_leaves_the_photo_unchanged_away_from_the_hand(hand):
    faces, vertices = hand
    photo = Image.new("RGB", (200, 200), (10, 200, 30))
    box = np.array([50.0, 50.0, 100.0, 100.0])
    scene = np.stack([vertices + CAMERA] * 3)
    drawn = np.asarray(overlay.overlay_image(photo, faces, scene, _crop_intrinsics(),
                                             invert_affine(crop_affine(box, SIZE, Augmentation(), 200)), box, False))
    assert (drawn[:20] == (10, 200, 30)).all() and (drawn[-20:] == (10, 200, 30)).all()


def test_view_intrinsics_refuse_a_rotated_or_wrongly_mirrored_view():
    with pytest.raises(ValueError, match="axis-aligned"):
        overlay.view_intrinsics(_crop_intrinsics(), np.array([[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0]]), False)
    with pytest.raises(ValueError, match="mirror"):
        overlay.view_intrinsics(_crop_intrinsics(), overlay.crop_view_affine(SIZE, 2, False), True)


def test_contact_sheet_has_a_tile_per_hypothesis_with_the_selected_in_colour(hand):
    faces, vertices = hand
    crop = np.full((3, SIZE, SIZE), 0.5, dtype=np.float32)
    k = 5
    scenes = np.stack([vertices + CAMERA + np.array([0.02 * i, 0.0, 0.0]) for i in range(k)])
    sheet = overlay.contact_sheet(crop, faces, scenes, _crop_intrinsics(), False,
                                  np.array([0.1, 0.9, 0.5, 0.3, 0.2]), selected=[1, 2], columns=3)
    assert sheet.size == (3 * 2 * SIZE, 2 * 2 * SIZE)
    tiles = np.asarray(sheet)
    assert (tiles[2 * SIZE:, 2 * 2 * SIZE:] == 0).all()  # the sixth cell is empty
    for i in range(k):
        tile = tiles[(i // 3) * 2 * SIZE:(i // 3 + 1) * 2 * SIZE, (i % 3) * 2 * SIZE:(i % 3 + 1) * 2 * SIZE]
        assert (np.abs(tile[14:].astype(int) - 128).sum(-1) > 30).any(), f"hypothesis {i} has no mesh"


def test_sequence_and_turntable_gifs_have_the_stated_frames(hand, tmp_path):
    faces, vertices = hand
    crop = np.zeros((3, SIZE, SIZE), dtype=np.float32)
    scene = np.stack([vertices + CAMERA + np.array([dx, 0.0, 0.0]) for dx in (-0.03, 0.0, 0.03)])
    frames = overlay.sequence_frames(crop, faces, scene, _crop_intrinsics(), True, steps=3)
    assert len(frames) == 12
    assert [f.size for f in frames] == [(2 * SIZE, 2 * SIZE)] * 12
    assert np.asarray(frames[0]).tobytes() != np.asarray(frames[6]).tobytes()  # past differs from future
    turn = overlay.turntable_frames(faces, vertices, frames=8, size=64)
    for name, pictures in (("sequence.gif", frames), ("turntable.gif", turn)):
        overlay.save_gif(tmp_path / name, pictures)
        with Image.open(tmp_path / name) as gif:
            assert gif.n_frames == len(pictures) and gif.info["loop"] == 0
    with pytest.raises(ValueError, match="steps"):
        overlay.sequence_frames(crop, faces, scene, _crop_intrinsics(), False, steps=0)
