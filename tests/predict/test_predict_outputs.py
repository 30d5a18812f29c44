"""``hmh predict``'s exported numbers: MANO parameters that rebuild the joints and meshes, the table's schema, the
un-mirrored hypotheses picture, and the warning when the averaged hypotheses disagree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import test_predict
import torch
from PIL import Image
from test_predict import BOX, TINY, _run

from hmh.config import load_config
from hmh.mano.model import Mano
from hmh.models.build import build_models
from hmh.models.checkpoint import save_checkpoint
from hmh.predict.files import COLUMNS, TABLE_SCHEMA
from hmh.predict.run import AVERAGE_SPREAD_LIMIT_MM, prediction_name

DOCS = Path(__file__).resolve().parents[2] / "docs" / "predict" / "outputs.md"

checkpoints, photo = test_predict.checkpoints, test_predict.photo  # the shared fixtures


@pytest.fixture(scope="module")
def posed(tmp_path_factory) -> Path:
    """A selection-stage checkpoint whose hypotheses are far from the mean pose and from each other (the pose
    layer's weights enlarged): about 30 mm between the averaged ones, above the unreliable-average limit."""
    cfg = load_config("cpu", TINY)
    torch.manual_seed(0)
    generator, selector = build_models(cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        generator.regressor.features.weight.normal_(std=0.05)
    return save_checkpoint(tmp_path_factory.mktemp("posed") / "posed.pt", generator=generator, selector=selector,
                           config=cfg, stage="selection", epoch=1)


@pytest.fixture(scope="module")
def gradient(tmp_path_factory) -> Path:
    """A smooth photo, dark on the left and bright on the right, with a bright blob: mirroring it is obvious."""
    y, x = np.mgrid[0:90, 0:120]
    red = 255.0 * x / 119.0
    blob = 255.0 * np.exp(-((x - 45.0) ** 2 + (y - 35.0) ** 2) / 60.0)
    pixels = np.stack([red, blob, 0.5 * red], axis=-1).clip(0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("gradient") / "gradient.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def mano() -> Mano:
    return Mano()  # the checkpoints' MANO: hmh's synthetic right hand


def _rebuild(mano: Mano, global_orient, hand_pose, betas, is_left: bool) -> tuple[np.ndarray, np.ndarray]:
    """The documented recipe: right-hand MANO (flat_hand_mean=False) of ``(..., T, 3)``, ``(..., T, 45)``,
    ``(..., T, 10)``, made wrist-relative, x negated for a left hand -> joints ``(..., T, 21, 3)`` and vertices
    ``(..., T, 778, 3)`` in mm."""
    def tensor(x):
        return torch.as_tensor(np.array(x, dtype=np.float32))

    with torch.no_grad():
        out = mano(tensor(global_orient), tensor(hand_pose), tensor(betas))
    wrist = out.joints[..., :1, :]
    flip = np.array([-1.0 if is_left else 1.0, 1.0, 1.0])
    return ((out.joints - wrist).double().numpy() * flip * 1000.0,
            (out.vertices - wrist).double().numpy() * flip * 1000.0)


def _project(points_mm: np.ndarray, translation_mm: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """``points_mm (T, J, 3)`` + ``translation_mm (T, 3)`` through ``fx, fy, cx, cy`` -> ``(T, J, 2)`` pixels."""
    scene = points_mm + translation_mm[:, None]
    return scene[..., :2] / scene[..., 2:] * intrinsics[:2] + intrinsics[2:]


def _array(value) -> np.ndarray:
    """A pandas cell of a nested list column (arrays of arrays) as one array with the cell's shape."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.stack([_array(v) for v in value])
    return np.asarray(value)


def _obj_vertices(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in line.split()[1:]] for line in path.read_text().splitlines()
                     if line.startswith("v ")])


@pytest.mark.parametrize("hand", ["right", "left"])
def test_exported_mano_parameters_rebuild_the_exported_joints_and_meshes(posed, photo, mano, tmp_path, hand):
    assert _run(photo, "--checkpoint", posed, "--bbox", *BOX, "--hand", hand, "--out", tmp_path) == 0
    folder = tmp_path / prediction_name(photo)
    doc = json.loads((folder / "prediction.json").read_text())
    is_left = hand == "left"
    assert doc["mano_model"] == {"file": doc["mano_model"]["file"], "side": "right", "flat_hand_mean": False,
                                 "x_negated": is_left}
    translation = np.array(doc["camera"]["translation_mm"])  # (T, 3)
    intrinsics = np.array(doc["camera"]["image_intrinsics_px"])
    for h in doc["hypotheses"]:  # JSON: each hypothesis rebuilds from its own parameters
        joints, _ = _rebuild(mano, h["mano"]["global_orient"], h["mano"]["hand_pose"], h["mano"]["betas"], is_left)
        np.testing.assert_allclose(joints, h["joints_3d_mm"], atol=0.01)
        np.testing.assert_allclose(_project(joints, translation, intrinsics), h["joints_2d_px"], atol=0.02)
    assert any(doc["swapped"])  # this checkpoint exercises the past/future exchange of a member
    final = doc["final"]["mano"]  # the final: the mean of its members' meshes
    joints, vertices = _rebuild(mano, final["global_orient"], final["hand_pose"], final["betas"], is_left)
    np.testing.assert_allclose(joints.mean(0), doc["final"]["joints_3d_mm"], atol=0.01)
    for t, frame in enumerate(doc["frames"]):
        np.testing.assert_allclose(vertices.mean(0)[t], _obj_vertices(folder / f"final_{frame}.obj") * 1000.0,
                                   atol=0.01)
    np.testing.assert_allclose(_project(joints.mean(0), translation, intrinsics), doc["final"]["joints_2d_px"],
                               atol=0.02)
    table = pd.read_parquet(tmp_path / "predictions.parquet")  # Parquet: the same from its columns
    hypotheses = table[table["row"] == "hypothesis"]
    stacked = {c: np.stack([_array(v) for v in hypotheses[c]])
               for c in ("mano_global_orient", "mano_hand_pose", "mano_betas", "joints_3d_mm")}
    joints, _ = _rebuild(mano, stacked["mano_global_orient"], stacked["mano_hand_pose"], stacked["mano_betas"],
                         is_left)
    np.testing.assert_allclose(joints, stacked["joints_3d_mm"], atol=0.01)
    final_row = table[table["row"] == "final"].iloc[0]
    members = hypotheses.set_index("hypothesis").loc[list(final_row["members"])]
    rebuilt = [_rebuild(mano, *(_array(row[c])[::(-1 if swap else 1)] for c in
                                ("mano_global_orient", "mano_hand_pose", "mano_betas")), is_left)[0]
               for (_, row), swap in zip(members.iterrows(), final_row["members_swapped"], strict=True)]
    np.testing.assert_allclose(np.mean(rebuilt, axis=0), _array(final_row["joints_3d_mm"]), atol=0.01)


def test_the_table_is_shaped_zero_based_nullable_and_documented(checkpoints, photo, tmp_path):
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--bbox", *BOX, "--out", tmp_path) == 0
    doc = json.loads((tmp_path / prediction_name(photo) / "prediction.json").read_text())
    table = pd.read_parquet(tmp_path / "predictions.parquet")
    for column in ("hypothesis", "rank", "selected_rank"):
        assert table[column].dtype == "Int32", column  # nullable integers, never float with NaN
    hypotheses, final = table[table["row"] == "hypothesis"], table[table["row"] == "final"]
    assert sorted(hypotheses["rank"].tolist()) == [0, 1, 2] and len(final) == 1
    assert hypotheses["rank"].tolist() == [h["rank"] for h in doc["hypotheses"]]
    assert hypotheses.sort_values("rank")["hypothesis"].tolist()[:2] == doc["selected"]
    assert hypotheses.sort_values("selected_rank")["hypothesis"].tolist()[:2] == doc["selected"]
    assert final["hypothesis"].isna().all() and final["rank"].isna().all() and final["selected_rank"].isna().all()
    assert list(final.iloc[0]["members"]) == doc["selected"]
    for column, shape in (("joints_3d_mm", (3, 21, 3)), ("joints_2d_px", (3, 21, 2)), ("mano_hand_pose", (3, 45)),
                          ("camera_translation_mm", (3, 3)), ("crop_box_px", (4,))):
        assert _array(hypotheses.iloc[0][column]).shape == shape, column
    np.testing.assert_allclose(_array(final.iloc[0]["crop_box_px"]), doc["crop_box_px"], atol=0.01)
    assert pq.read_schema(tmp_path / "predictions.parquet").remove_metadata() == TABLE_SCHEMA
    documented = DOCS.read_text()
    assert all(f"`{name}`" in documented for name, _, _ in COLUMNS)  # every column has its entry


def test_left_hand_pictures_are_not_mirrored(checkpoints, gradient, tmp_path):
    """The left hand's hypotheses.png shows the crop as the person sees it: like the right hand's of the same box
    (one crop pixel apart: the crop centre is pixel S / 2), not like its mirror image."""
    panels = {}
    for hand in ("right", "left"):
        assert _run(gradient, "--checkpoint", checkpoints["selection"], "--bbox", *BOX, "--hand", hand,
                    "--out", tmp_path / hand) == 0
        with Image.open(tmp_path / hand / prediction_name(gradient) / "hypotheses.png") as picture:
            panels[hand] = np.asarray(picture, dtype=np.float64)[:, :128]  # the first panel: the crop alone
    right, left = panels["right"][:, 4:-4], panels["left"]
    shifted = np.abs(left[:, 2:-6] - right).mean()
    mirrored = np.abs(left[:, ::-1][:, 4:-4] - right).mean()
    assert shifted < 2.0 and mirrored > 10.0 * shifted, (shifted, mirrored)


def test_disagreeing_averaged_hypotheses_are_flagged_and_shown_beside_the_top1(posed, photo, tmp_path, capsys):
    assert _run(photo, "--checkpoint", posed, "--bbox", *BOX, "--out", tmp_path, pictures=True) == 0
    folder = tmp_path / prediction_name(photo)
    doc = json.loads((folder / "prediction.json").read_text())
    confidence = doc["confidence"]
    joints = np.array([h["joints_3d_mm"] for h in doc["hypotheses"]])[doc["selected"]]
    joints = np.where(np.array(doc["swapped"])[:, None, None, None], joints[:, ::-1], joints)
    spread = np.linalg.norm(joints - joints.mean(0), axis=-1).mean(axis=(0, 2))  # (T,) mm
    np.testing.assert_allclose([confidence["averaged_spread_mm"][f] for f in doc["frames"]], spread, atol=2e-3)
    assert spread.max() > AVERAGE_SPREAD_LIMIT_MM and confidence["average_unreliable"] is True
    assert confidence["average_unreliable_above_mm"] == AVERAGE_SPREAD_LIMIT_MM
    err = capsys.readouterr().err
    assert f"hmh predict: warning: {photo}: the 2 averaged hypotheses are {spread.max():.1f} mm apart" in err
    assert f"hypothesis {doc['selected'][0]} beside it" in err and "Traceback" not in err
    with Image.open(photo) as original, Image.open(folder / "overlay.png") as drawn:
        assert drawn.size == (2 * original.width, original.height)  # the average, then the top-1
    with Image.open(folder / "turntable.gif") as gif:
        assert gif.size == (2 * 256, 256)
    assert pd.read_parquet(tmp_path / "predictions.parquet")["average_unreliable"].all()


def test_agreeing_hypotheses_are_not_flagged(checkpoints, photo, tmp_path, capsys):
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--bbox", *BOX, "--out", tmp_path) == 0
    confidence = json.loads((tmp_path / prediction_name(photo) / "prediction.json").read_text())["confidence"]
    assert confidence["average_unreliable"] is False and max(confidence["averaged_spread_mm"].values()) < 5.0
    assert "warning" not in capsys.readouterr().err
