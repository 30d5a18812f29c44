"""The BlurHand reader on a tiny BlurHand-format fixture (tests/blurhand_fixture.py)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from blurhand_fixture import MARKS, WIDTH, Fixture, project_mm
from PIL import Image

from hmh.data.blurhand import (
    BadImageError,
    BlurHandDataset,
    DatasetError,
    check_root,
    load_mano_arrays,
    split_groups,
)
from hmh.data.transforms import Augmentation, crop_affine, mirror_points, warp_image
from hmh.geometry import axis_angle_to_matrix, matrix_to_axis_angle, project
from hmh.mano.model import Mano

SIZE = 64  # crop side


def _find(ds: BlurHandDataset, hand_type: str, side: str) -> int:
    """Dataset position of the first sample from an annotation of ``hand_type`` for ``side``."""
    types = ("right", "left", "interacting")
    for i, row in enumerate(ds.rows):
        if types[ds.index.hand_type[row]] == hand_type and bool(ds.index.is_left[row]) == (side == "left"):
            return i
    raise AssertionError(f"no {hand_type}/{side} sample")


def _expected_cam_joints(fx: Fixture, aid: int, side: str) -> np.ndarray:
    """(3, 21, 3) hand-computed targets: MANO joints of the aid_list frames in the middle camera, wrist-relative."""
    capture, _, cam, _, aid_list = fx.anns[aid]
    rot, _ = fx.cams[(capture, cam)]
    out = []
    for a in (aid_list[0], aid, aid_list[-1]):
        joints = fx.joints[(fx.anns[a][0], fx.anns[a][1], side)]
        out.append((joints - joints[:1]) @ rot.T)
    return np.stack(out)


def test_counts_and_sample_layout(fixture):
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    middles = [a for a in fixture.anns.values() if a[3] in ("right", "left", "interacting") and a[4][2] != a[4][0]]
    assert len(ds) == sum(2 if a[3] == "interacting" else 1 for a in middles) == 24
    assert set(ds.skipped) >= {"no_valid_joint", "invalid_bbox", "non_finite_joints"} and not any(ds.skipped.values())
    sample = ds[0]
    shapes = {k: tuple(v.shape) for k, v in sample.items()}
    assert shapes == {
        "image": (3, SIZE, SIZE), "joints_3d": (3, 21, 3), "joints_2d": (3, 21, 2), "joint_valid": (3, 21),
        "mano_pose": (3, 48), "mano_shape": (3, 10), "mano_valid": (3,), "mesh": (778, 3), "mesh_valid": (),
        "cam_focal": (2,), "cam_princpt": (2,), "is_left": (), "index": (), "annot_id": (),
    }  # fmt: skip
    assert all(v.dtype == torch.float32 for k, v in sample.items() if k not in ("index", "annot_id"))
    assert sample["index"].dtype == torch.int64 and int(sample["index"]) == 0
    assert sample["annot_id"].dtype == torch.int64 and int(sample["annot_id"]) == int(ds.index.annot_id[ds.rows[0]])
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["joints_3d"].shape == (2, 3, 21, 3)


@pytest.mark.parametrize("side", ["right", "left"])
def test_targets_match_hand_computation(fixture, side):
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    i = _find(ds, "interacting", side)
    sample, aid = ds[i], int(ds.index.annot_id[ds.rows[i]])
    expected = _expected_cam_joints(fixture, aid, side)  # (T, J, 3) metres, MANO-21, camera frame
    if side == "left":
        expected = expected * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(sample["joints_3d"].numpy(), expected, atol=2e-6)
    assert sample["joint_valid"].all() and sample["mano_valid"].all() and sample["mesh_valid"] == 1
    assert sample["is_left"] == (side == "left")

    # camera-frame pose: R_cam @ R_world (mirrored for left hands); the articulation is the file's
    capture, frame, cam, _, _ = fixture.anns[aid]
    rot, campos = fixture.cams[(capture, cam)]
    pose48 = fixture.params[(capture, frame, side)][0]
    root = rot @ axis_angle_to_matrix(torch.tensor(pose48[:3])).numpy()
    if side == "left":
        flip = np.diag([-1.0, 1.0, 1.0])
        root = flip @ root @ flip
    np.testing.assert_allclose(axis_angle_to_matrix(sample["mano_pose"][1, :3].double()).numpy(), root, atol=1e-5)

    # the right MANO with the returned pose reproduces the returned joints (left: mirrored pose)
    right = Mano("", side="right")
    out = right(sample["mano_pose"][:, :3], sample["mano_pose"][:, 3:], sample["mano_shape"])
    torch.testing.assert_close(out.joints - out.joints[:, :1], sample["joints_3d"], atol=2e-5, rtol=0)
    torch.testing.assert_close(out.vertices[1] - out.joints[1, :1], sample["mesh"], atol=2e-5, rtol=0)

    # 2D joints: the original projection mapped into the crop, and the crop camera reproduces them
    wrist_cam = (fixture.joints[(capture, frame, side)][0] * 1000.0 - campos) @ rot.T / 1000.0
    if side == "left":
        wrist_cam = wrist_cam * np.array([-1.0, 1.0, 1.0])
    absolute = sample["joints_3d"][1].double() + torch.tensor(wrist_cam)
    reprojected = project(absolute, sample["cam_focal"].double(), sample["cam_princpt"].double())
    torch.testing.assert_close(reprojected, sample["joints_2d"][1].double(), atol=1e-3, rtol=0)


def test_targets_3d_are_the_samples_targets_without_reading_an_image(fixture):
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    samples = [ds[i] for i in range(len(ds))]
    shutil.rmtree(fixture.root / "blur_images")  # targets_3d needs the index only
    joints, valid = ds.targets_3d()
    assert joints.shape == (len(ds), 3, 21, 3) and valid.shape == (len(ds), 3, 21)
    assert {bool(s["is_left"]) for s in samples} == {False, True}
    torch.testing.assert_close(joints, torch.stack([s["joints_3d"] for s in samples]), atol=1e-6, rtol=0)
    torch.testing.assert_close(valid, torch.stack([s["joint_valid"] for s in samples]))


def test_crop_is_blurhandnet_box(fixture):
    """Box from the middle frame's valid joints: tight x1.2, sanitised (x2 = x1 + w - 1, as BlurHandNet), square
    on the longer side, x1.25; the box centre lands on the crop centre; left hands mirrored first."""
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    for i in range(len(ds)):
        aid, side = int(ds.index.annot_id[ds.rows[i]]), "left" if ds.index.is_left[ds.rows[i]] else "right"
        capture, frame, cam, _, _ = fixture.anns[aid]
        pixels = project_mm(fixture.joints[(capture, frame, side)] * 1000.0, *fixture.cams[(capture, cam)])
        low, high = pixels.min(0), pixels.max(0)
        centre = (low + high) / 2.0 - 0.5  # the sanitised box is one pixel shorter, from the same corner
        box_side = 1.25 * (1.2 * (high - low).max() - 1.0)
        expected = (pixels - centre) * (SIZE / box_side) + SIZE / 2.0
        if side == "left":
            expected[:, 0] = SIZE - expected[:, 0]  # mirror about the box centre
        np.testing.assert_allclose(ds[i]["joints_2d"][1].numpy(), expected, atol=1e-3)
        assert (expected > 0).all() and (expected < SIZE).all()


def _colour_at(image: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    size = image.shape[-1]
    grid = (point / (size - 1) * 2 - 1).view(1, 1, 1, 2)
    return torch.nn.functional.grid_sample(image[None], grid, align_corners=True).view(3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augmentation_keeps_image_2d_3d_and_pose_consistent(fixture, seed):
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=True)
    torch.manual_seed(seed)
    right = Mano("", side="right")
    checked = 0
    for i in (_find(ds, "right", "right"), _find(ds, "left", "left"), _find(ds, "interacting", "left")):
        sample = ds[i]
        for joint, colour in MARKS.items():
            if not ((sample["joints_2d"][1, joint] > 3) & (sample["joints_2d"][1, joint] < SIZE - 4)).all():
                continue  # zoomed or rotated out of the crop
            checked += 1
            got = _colour_at(sample["image"], sample["joints_2d"][1, joint])
            assert int(got.argmax()) == int(np.argmax(colour)), (i, joint, got)
            assert got.max() > 0.6 and got.min() < 0.3, (i, joint, got)
        # 3D rotated like the 2D: back-project the wrist at its known depth, re-project every joint
        aid = int(ds.index.annot_id[ds.rows[i]])
        capture, frame, cam, _, _ = fixture.anns[aid]
        rot, campos = fixture.cams[(capture, cam)]
        side = "left" if sample["is_left"] else "right"
        depth = ((fixture.joints[(capture, frame, side)][0] * 1000.0 - campos) @ rot.T)[2] / 1000.0
        focal, princpt = sample["cam_focal"].double(), sample["cam_princpt"].double()
        wrist = torch.cat([(sample["joints_2d"][1, 0].double() - princpt) / focal * depth, torch.tensor([depth])])
        reprojected = project(sample["joints_3d"][1].double() + wrist, focal, princpt)
        torch.testing.assert_close(reprojected, sample["joints_2d"][1].double(), atol=1e-3, rtol=0)
        out = right(sample["mano_pose"][:, :3], sample["mano_pose"][:, 3:], sample["mano_shape"])
        torch.testing.assert_close(out.joints - out.joints[:, :1], sample["joints_3d"], atol=3e-5, rtol=0)
        torch.testing.assert_close(out.vertices[1] - out.joints[1, :1], sample["mesh"], atol=3e-5, rtol=0)
    assert checked >= 5


def test_left_hand_mirror(fixture):
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    i = _find(ds, "left", "left")
    sample, aid = ds[i], int(ds.index.annot_id[ds.rows[i]])
    capture, frame, cam, _, _ = fixture.anns[aid]
    left = Mano("", side="left")
    pose48, shape, _ = fixture.params[(capture, frame, "left")]
    rot, _ = fixture.cams[(capture, cam)]
    cam_root = torch.tensor(rot) @ axis_angle_to_matrix(torch.tensor(pose48[:3]))
    orient = matrix_to_axis_angle(cam_root).float()[None]
    out = left(orient, torch.tensor(pose48[None, 3:]).float(), torch.tensor(shape[None]).float())
    torch.testing.assert_close(sample["mesh"], mirror_points(out.vertices[0] - out.joints[0, :1]), atol=1e-5, rtol=0)
    # the image is the mirrored original, cropped around the mirrored box
    mirrored = Image.open(ds.image_paths[i]).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x, y, w, h = (float(v) for v in ds.index.bbox[ds.rows[i]])
    box = np.array([WIDTH - 1 - (x + w / 2) - w / 2, y, w, h])
    assert torch.equal(sample["image"], warp_image(mirrored, crop_affine(box, SIZE, Augmentation(), WIDTH), SIZE))


def test_per_frame_validity_from_annotations(fixture):
    ds0 = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    i = _find(ds0, "right", "right")
    aid = int(ds0.index.annot_id[ds0.rows[i]])
    aid_list = fixture.anns[aid][4]
    anns = {a["id"]: a for a in fixture.data["data"]["annotations"]}
    anns[aid_list[0]]["joint_valid"][16] = 0  # InterHand pinky tip (right hand), past frame
    anns[aid_list[-1]]["joint_valid"][20] = 0  # right wrist, future frame: the whole hand becomes invalid
    fixture.write("data")
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    sample = ds[i]
    assert sample["joint_valid"][0, 20] == 0 and sample["joint_valid"][0, :20].all()  # MANO-21 pinky tip = 20
    assert sample["joints_3d"][0, 20].abs().sum() == 0 and sample["joints_2d"][0, 20].abs().sum() == 0
    assert sample["joint_valid"][1].all() and not sample["joint_valid"][2].any()


def test_skips_are_counted(fixture):
    anns = [a for a in fixture.data["data"]["annotations"] if a["is_middle"]]
    right_only = next(a for a in anns if a["hand_type"] == "right")
    right_only["joint_valid"] = [0] * 42
    images = fixture.data["data"]["images"]
    interacting = next(a for a in anns if a["hand_type"] == "interacting")
    images[interacting["image_id"]]["width"] = 1  # the clipped box is empty: both hands skipped
    fixture.write("data")
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    assert {k: v for k, v in ds.skipped.items() if v} == {"no_valid_joint": 1, "invalid_bbox": 2}
    assert len(ds) == 24 - 3


def test_missing_mano_frame_is_invalid(fixture):
    capture, frame = "0", "6"  # the future frame of the last middle frames of seq_a
    fixture.data["mano"][capture][frame]["right"] = None
    del fixture.data["mano"][capture]["2"]
    fixture.write("mano")
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    found = 0
    for i, row in enumerate(ds.rows):
        aid = int(ds.index.annot_id[row])
        cap, _, _, _, aid_list = fixture.anns[aid]
        if cap != "0":
            continue
        frames = [fixture.anns[a][1] for a in (aid_list[0], aid, aid_list[-1])]
        side = "left" if ds.index.is_left[row] else "right"
        expected = [0.0 if f == "2" or (f == "6" and side == "right") else 1.0 for f in frames]
        sample = ds[i]
        assert sample["mano_valid"].tolist() == expected
        assert sample["mesh_valid"] == expected[1]
        found += expected != [1.0, 1.0, 1.0]
        if expected[0] == 0.0:
            assert sample["mano_pose"][0].abs().sum() == 0
    assert found >= 2


def test_index_cache_second_start_does_not_parse(fixture, caplog):
    first = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    caplog.clear()
    with caplog.at_level("INFO", logger="hmh.data"):
        second = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    assert not first.index_from_cache and second.index_from_cache
    assert not any("parsing" in r.getMessage() for r in caplog.records)
    for key, value in first[5].items():
        assert torch.equal(value, second[5][key]), key
    path = fixture.path("camera")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an edited annotation file invalidates
    assert not BlurHandDataset(fixture.root, "train", SIZE, augment=False).index_from_cache


def test_validation_split_holds_out_whole_sequences(fixture):
    kwargs = dict(root=fixture.root, split="train", image_size=SIZE, augment=False, val_fraction=0.3, seed=3)
    train = BlurHandDataset(subset="train", **kwargs)
    val = BlurHandDataset(subset="val", **kwargs)
    assert len(train) + len(val) == 24 and len(val) > 0 and len(train) > 0
    assert not set(train.rows) & set(val.rows)
    assert not set(train.index.group[train.rows]) & set(val.index.group[val.rows])
    assert np.array_equal(BlurHandDataset(subset="val", **kwargs).rows, val.rows)
    small = BlurHandDataset(fixture.root, "train", SIZE, augment=False, max_samples=5, seed=1)
    assert len(small) == 5 and len(set(small.rows)) == 5


def test_missing_file_and_key_errors_name_them(fixture):
    fixture.path("camera").unlink()
    with pytest.raises(DatasetError, match="BlurHand_train_camera.json"):
        BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    with pytest.raises(DatasetError, match="not found"):
        BlurHandDataset(fixture.root / "nowhere", "train", SIZE, augment=False)


@pytest.mark.parametrize(
    ("name", "edit", "pattern"),
    [
        ("camera", lambda d: d["1"].pop("campos"), r"camera\.json: missing key \['1'\]\['campos'\]"),
        ("joint_3d", lambda d: d["0"].pop("4"), r"joint_3d\.json: missing key \['0'\]\['4'\]"),
        ("data", lambda d: d["annotations"][3].pop("aid_list"), r"data\.json: missing key annotations\[id=3\]"),
        ("data", lambda d: d["annotations"][3].update(joint_valid=[1] * 41),
         r"data\.json: annotations\[id=3\]\['joint_valid'\] has 41 values, expected 42"),
        ("data", lambda d: d.pop("images"), r"data\.json: missing key \['images'\]"),
        ("mano", lambda d: d["1"]["102"]["left"].update(pose=[0.0] * 47), r"MANO_NeuralAnnot\.json: .*'pose'.* 47"),
    ],
)  # fmt: skip
def test_malformed_annotations_raise_clear_errors(fixture, name, edit, pattern):
    edit(fixture.data[name])
    fixture.write(name)
    with pytest.raises(DatasetError, match=pattern):
        BlurHandDataset(fixture.root, "train", SIZE, augment=False)


def test_truncated_json_names_the_file(fixture):
    path = fixture.path("joint_3d")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=r"joint_3d\.json: invalid JSON .*truncated"):
        BlurHandDataset(fixture.root, "train", SIZE, augment=False)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_bad_image_raises_naming_the_file(fixture, damage):
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    path = ds.image_paths[2]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "garbage":
        path.write_bytes(b"\xff\xd8 not a jpeg" * 20)
    else:
        path.unlink()
    with pytest.raises(BadImageError, match=str(path.name)):
        ds[2]


def test_skip_bad_images_counts_and_substitutes(fixture):
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False, skip_bad_images=True)
    bad = ds.image_paths[4]
    bad.write_bytes(bad.read_bytes()[:200])
    users = [i for i, p in enumerate(ds.image_paths) if p == bad]
    indices = [int(ds[i]["index"]) for i in range(len(ds))]
    assert sorted(ds.bad_images) == users
    assert not set(indices) & set(users)
    assert indices[users[0]] == max(users) + 1  # the next readable sample stands in
    assert all(bad.name in msg for msg in ds.bad_images.values())


def test_split_groups_hand_computed():
    groups = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 3])
    for seed in range(5):
        is_val = split_groups(groups, 0.25, seed)
        held = set(groups[is_val])
        assert all(is_val[groups == g].all() for g in held)  # whole groups only
        assert is_val.sum() >= 0.25 * len(groups) and len(held) < 4
        assert np.array_equal(is_val, split_groups(groups, 0.25, seed))
    assert not split_groups(groups, 0.0, 0).any()
    single = split_groups(np.zeros(10, dtype=int), 0.2, 0)
    assert single.sum() == 2


def test_check_root_reports_counts_and_problems(fixture):
    (report,) = check_root(fixture.root)
    assert report.split == "train" and report.samples == 24 and not report.problems
    assert report.counts == {"right_hands": 12, "left_hands": 12, "from_right": 6, "from_left": 6,
                             "from_interacting": 12}  # fmt: skip
    assert report.images_checked == report.images_total == 18
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    ds.image_paths[0].write_bytes(b"broken")
    Image.new("RGB", (10, 10)).save(ds.image_paths[-1])
    (report,) = check_root(fixture.root, max_images=100)
    assert len(report.problems) == 2
    assert ds.image_paths[0].name in report.problems[0] and "10x10" in report.problems[1]
    (sampled,) = check_root(fixture.root, max_images=5)
    assert sampled.images_checked == 5 and sampled.images_total == 18
    with pytest.raises(DatasetError, match="no BlurHand split"):
        check_root(fixture.root / "annotations")


def test_cli_check(fixture, capsys):
    from hmh.cli import main

    assert main(["data", "check", str(fixture.root)]) == 0
    out = capsys.readouterr().out
    assert "train: 24 samples (right_hands 12, left_hands 12" in out and out.strip().endswith("ok")
    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    ds.image_paths[3].write_bytes(b"\xff\xd8 broken")
    assert main(["data", "check", str(fixture.root), "--full"]) == 1
    assert ds.image_paths[3].name in capsys.readouterr().out
    assert main(["data", "check", str(fixture.root / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_reads_a_synthetic_dataset_end_to_end(tmp_path):
    """The generator's output flows through the same reader: targets agree with the written MANO params."""
    from hmh.data.synthetic import build_dataset

    root = build_dataset(tmp_path / "synth", train=8, test=4, size=64, subframes=3, seed=0, progress=False)
    (train_report, test_report) = check_root(root, full=True)
    assert not train_report.problems and not test_report.problems
    right = Mano("", side="right")
    for split, augment in (("train", True), ("test", False)):
        ds = BlurHandDataset(root, split, 64, augment=augment)
        assert len(ds) > 0 and ds.skipped["invalid_bbox"] == 0
        torch.manual_seed(0)
        batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
        valid = batch["joint_valid"].bool()
        assert valid[:, 1].any(-1).all()
        inside = (batch["joints_2d"] >= 0) & (batch["joints_2d"] <= 64)
        assert inside.all(-1)[valid].float().mean() > 0.9
        assert batch["mano_valid"].all() and batch["mesh_valid"].all()
        pose, shape = batch["mano_pose"].reshape(-1, 48), batch["mano_shape"].reshape(-1, 10)
        out = right(pose[:, :3], pose[:, 3:], shape)
        joints = (out.joints - out.joints[:, :1]).reshape(-1, 3, 21, 3)
        non_tip = [j for j in range(21) if j not in (4, 8, 12, 16, 20)]
        err = (joints - batch["joints_3d"]).norm(dim=-1)[..., non_tip][valid[..., non_tip]]
        assert err.max() < 1e-3, err.max()  # same model: well under a millimetre
        assert set(batch["is_left"].tolist()) == {0.0, 1.0} or len(ds) < 4


def test_left_mano_shapedirs_fix(tmp_path):
    """BlurHandNet flips the x shapedirs of an official-style MANO_LEFT whose sign equals the right model's."""
    from hmh.mano.model import synthetic_model, write_model

    right, left = synthetic_model(side="right"), synthetic_model(side="left")
    assert np.array_equal(load_mano_arrays("", "left")["shapedirs"], left["shapedirs"])  # a proper mirror: kept
    buggy = dict(left, shapedirs=left["shapedirs"].copy())
    buggy["shapedirs"][:, 0] = right["shapedirs"][:, 0]
    write_model(right, tmp_path / "MANO_RIGHT.npz")
    write_model(buggy, tmp_path / "MANO_LEFT.npz")
    np.testing.assert_allclose(load_mano_arrays(str(tmp_path), "left")["shapedirs"], left["shapedirs"])
