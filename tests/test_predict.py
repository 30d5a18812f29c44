"""``hmh predict``: files and their contents, the crop and the 2D mapping, left hands, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmh.checkpoint import models_from_checkpoint, save_checkpoint
from hmh.cli import main
from hmh.config import load_config
from hmh.data.transforms import apply_affine
from hmh.metrics import align_past_future
from hmh.models.build import build_models
from hmh.predict import crop_hand, predict

TINY = [
    "model.backbone=resnet18", "model.image_size=64", "model.embed_dim=32", "model.num_hypotheses=3",
    "model.mht_blocks=1", "model.num_heads=2", "selection.top_n=2", "selection.decoder_blocks=1",
]
BOX = [30.0, 20.0, 50.0, 40.0]  # x, y, w, h inside a 120 x 90 image


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A selection-stage and a generation-stage checkpoint of freshly initialised tiny models (fixed seed)."""
    folder = tmp_path_factory.mktemp("ckpt")
    cfg = load_config("cpu", TINY)
    torch.manual_seed(0)
    generator, selector = build_models(cfg)
    return {
        "selection": save_checkpoint(folder / "selection.pt", generator=generator, selector=selector, config=cfg,
                                     stage="selection", epoch=1),
        "generation": save_checkpoint(folder / "generation.pt", generator=generator, config=cfg,
                                      stage="generation", epoch=1),
    }


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "hand.png"
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(path)
    return path


def _run(*args) -> int:
    return main(["predict", *map(str, args)])


def test_cli_writes_prediction_meshes_and_picture(checkpoints, photo, tmp_path, capsys):
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--bbox", *BOX, "--out", tmp_path) == 0
    folder = tmp_path / "hand"
    assert sorted(p.name for p in folder.iterdir()) == ["final_current.obj", "final_future.obj", "final_past.obj",
                                                        "hypotheses.png", "prediction.json"]
    assert str(folder) in capsys.readouterr().out
    doc = json.loads((folder / "prediction.json").read_text())
    assert doc["num_hypotheses"] == 3 and doc["final_source"] == "selected top-n" and doc["hand"] == "right"
    rewards = np.array([h["reward"] for h in doc["hypotheses"]])
    assert doc["selected"] == np.argsort(-rewards, kind="stable")[:2].tolist()
    joints = np.array([h["joints_3d_mm"] for h in doc["hypotheses"]])  # (K, T, J, 3)
    assert joints.shape == (3, 3, 21, 3) and np.abs(joints[:, :, 0]).max() == 0.0  # wrist-relative
    assert np.array([h["joints_2d_px"] for h in doc["hypotheses"]]).shape == (3, 3, 21, 2)
    chosen = joints[doc["selected"]]
    aligned, swapped = align_past_future(chosen[None], chosen[:1])
    assert swapped[0].tolist() == doc["swapped"]
    np.testing.assert_allclose(doc["final"]["joints_3d_mm"], aligned[0].mean(0), atol=2e-3)
    lines = (folder / "final_current.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == 778 and sum(line.startswith("f ") for line in lines) == 1538
    with Image.open(folder / "hypotheses.png") as picture:
        assert picture.size == (3 * 2 * 64, 2 * 64)


def test_outputs_are_the_models_outputs_in_image_pixels(checkpoints, photo):
    models = models_from_checkpoint(checkpoints["selection"])
    with Image.open(photo) as image:
        crop = crop_hand(image.convert("RGB"), 64, BOX)
    (pred,) = predict(models, [crop])
    with torch.no_grad():
        out = models.generator(crop.image[None])
        reward = models.selector(crop.image[None], out).reward
    np.testing.assert_allclose(pred.joints, out.joints[0].double().numpy(), atol=1e-6)
    np.testing.assert_allclose(pred.reward, reward[0].double().numpy(), atol=1e-6)
    np.testing.assert_allclose(apply_affine(pred.joints_2d, crop.affine), out.joints_2d[0].double().numpy(),
                               atol=1e-3)
    # the crop is BlurHandNet's: the box (clipped to pixels 30-79 x 20-59, centre 54.5, 39.5) made square and x1.25
    side = 49 * 1.25
    np.testing.assert_allclose(crop.box, [54.5 - side / 2, 39.5 - side / 2, side, side], atol=1e-9)


def test_left_hand_is_the_mirror_of_the_right(checkpoints, photo):
    models = models_from_checkpoint(checkpoints["selection"])
    with Image.open(photo) as image:
        image = image.convert("RGB")
    width = image.width
    mirrored_box = [width - BOX[0] - BOX[2], *BOX[1:]]
    right = crop_hand(image, 64, BOX)
    left = crop_hand(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 64, mirrored_box, is_left=True)
    torch.testing.assert_close(left.image, right.image, atol=1e-6, rtol=0)  # the model sees the same crop
    pred_r, pred_l = predict(models, [right, left])
    np.testing.assert_allclose(pred_l.joints, pred_r.joints * [-1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(pred_l.final_vertices, pred_r.final_vertices * [-1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(pred_l.joints_2d[..., 0], width - 1.0 - pred_r.joints_2d[..., 0], atol=1e-3)
    np.testing.assert_allclose(pred_l.joints_2d[..., 1], pred_r.joints_2d[..., 1], atol=1e-3)
    assert pred_l.selected.tolist() == pred_r.selected.tolist()


def test_generation_checkpoint_averages_all_hypotheses(checkpoints, photo, tmp_path):
    assert _run(photo, "--checkpoint", checkpoints["generation"], "--out", tmp_path) == 0
    doc = json.loads((tmp_path / "hand" / "prediction.json").read_text())
    assert doc["final_source"] == "mean of K" and doc["selected"] == [0, 1, 2]
    assert all(h["reward"] is None for h in doc["hypotheses"])


def test_unreadable_image_is_reported_and_the_others_are_written(checkpoints, photo, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    assert _run(broken, photo, photo, "--checkpoint", checkpoints["selection"], "--out", out) == 2
    printed = capsys.readouterr()
    err = printed.err
    assert f"{broken}: unreadable or corrupt image" in err and "1 of 3 images" in err and "Traceback" not in err
    # the same image twice: the same rewards and set, which the selection line calls a constant rule
    assert "selection over 2 images: reward spread 0.0000" in printed.out and "for 100% of them" in printed.out
    assert "constant rule" in printed.out
    assert sorted(p.name for p in out.iterdir()) == ["hand", "hand-2"]  # same names get -2
    assert (out / "hand-2" / "prediction.json").is_file()


@pytest.mark.parametrize("box, message", [
    (["500", "500", "10", "10"], "lies outside the 120x90 image"),
    (["10", "10", "0", "10"], "W, H > 0"),
])
def test_bad_bbox_names_the_image_and_the_box(checkpoints, photo, tmp_path, capsys, box, message):
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--bbox", *box, "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert str(photo) in err and "--bbox" in err and message in err
    assert not any(tmp_path.iterdir())


def test_missing_checkpoint_is_one_line_error(photo, tmp_path, capsys):
    assert _run(photo, "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "none.pt: checkpoint file not found" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
