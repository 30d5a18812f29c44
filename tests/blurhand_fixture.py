"""A tiny BlurHand-format root for the reader's tests: MANO-posed joints, JPEGs with marked joints (built once per
test module, then copied per test so tests can edit its files)."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from hmh.mano.model import MANO21_TO_INTERHAND, Mano

WIDTH, HEIGHT = 240, 180
FOCAL, PRINCPT = (200.0, 200.0), (113.0, 95.0)
MARKS = {0: (255, 0, 0), 4: (0, 0, 255), 12: (0, 255, 0)}  # MANO-21 joint -> disc colour: wrist, thumb/middle tip
SEQUENCES = [("0", "seq_a", 0), ("1", "seq_b", 0), ("1", "seq_c", 100)]  # capture, seq_name, first frame
FRAMES_PER_SEQ = 7  # middle frames 2, 3, 4 with aid_list covering frame-2 .. frame+2
CAMERAS = {"400": (0.0, -700.0, 1000.0), "401": (350.0, -620.0, 1200.0)}  # mm, all looking at the hands


@dataclass
class Fixture:
    root: Path
    joints: dict = field(default_factory=dict)  # (capture, frame, side) -> (21, 3) world metres, MANO-21
    params: dict = field(default_factory=dict)  # (capture, frame, side) -> (pose 48, shape 10, trans 3)
    cams: dict = field(default_factory=dict)  # (capture, cam) -> (R (3, 3), campos (3,) mm)
    anns: dict = field(default_factory=dict)  # annotation id -> (capture, frame, cam, hand_type, aid_list)
    data: dict = field(default_factory=dict)  # the four JSONs by name

    def path(self, name: str, split: str = "train") -> Path:
        suffix = {"data": "data", "camera": "camera", "joint_3d": "joint_3d", "mano": "MANO_NeuralAnnot"}[name]
        return self.root / "annotations" / split / f"BlurHand_{split}_{suffix}.json"

    def write(self, name: str) -> None:
        self.path(name).write_text(json.dumps(self.data[name]))


def _look_at(campos: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = (target - campos) / np.linalg.norm(target - campos)
    down = np.array([0.0, 0.0, -1.0])
    y = down - down.dot(z) * z
    y /= np.linalg.norm(y)
    return np.stack([np.cross(y, z), y, z])  # rows: camera x, y, z axes in world coordinates


def build_fixture(root: Path) -> Fixture:
    """Three sequences x 7 frames, 2 cameras, both hands posed with the synthetic MANO; images for middles."""
    fx = Fixture(root)
    rng = np.random.default_rng(0)
    models = {"right": Mano("", side="right"), "left": Mano("", side="left")}
    world_joints, mano_json, cameras_json = {}, {}, {}
    for capture, _, first in SEQUENCES:
        cameras_json.setdefault(capture, {"campos": {}, "camrot": {}, "focal": {}, "princpt": {}})
        for cam, pos in CAMERAS.items():
            rot = _look_at(np.array(pos), np.array([0.0, 0.0, 1000.0]))
            fx.cams[(capture, cam)] = (rot, np.array(pos))
            cameras_json[capture]["campos"][cam] = list(pos)
            cameras_json[capture]["camrot"][cam] = rot.tolist()
            cameras_json[capture]["focal"][cam] = list(FOCAL)
            cameras_json[capture]["princpt"][cam] = list(PRINCPT)
        base = {side: (rng.normal(0, 0.6, 3), rng.normal(0, 0.3, 45), rng.normal(0, 0.8, 10)) for side in models}
        for k in range(FRAMES_PER_SEQ):
            frame = str(first + k)
            coords = []
            for side, centre in (("right", (-0.125, 0.0, 1.0)), ("left", (0.125, 0.0, 1.0))):
                orient, pose, shape = base[side]
                pose48 = np.concatenate([orient + 0.05 * k, pose + 0.02 * k * np.sin(np.arange(45))])
                trans = np.array(centre) + np.array([0.01 * k, 0.0, 0.0])
                t = lambda a: torch.tensor(np.asarray(a)[None], dtype=torch.float32)  # noqa: E731
                out = models[side](t(pose48[:3]), t(pose48[3:]), t(shape), transl=t(trans))
                fx.joints[(capture, frame, side)] = out.joints[0].double().numpy()
                fx.params[(capture, frame, side)] = (pose48, shape, trans)
                coords.append(out.joints[0].double().numpy()[MANO21_TO_INTERHAND] * 1000.0)
                entry = {"pose": pose48.tolist(), "shape": shape.tolist(), "trans": trans.tolist()}
                mano_json.setdefault(capture, {}).setdefault(frame, {})[side] = entry
            world_joints.setdefault(capture, {})[frame] = {
                "world_coord": np.concatenate(coords).tolist(), "joint_valid": [1] * 42, "hand_type": "interacting",
            }  # fmt: skip
    images, annotations = [], []
    hand_cycle = ["right", "left", "interacting"]
    for capture, seq, first in SEQUENCES:
        for cam in CAMERAS:
            ids = {}
            for k in range(FRAMES_PER_SEQ):
                image_id = len(images)
                ids[k] = image_id  # annotation id == image id
                images.append({"id": image_id, "file_name": f"Capture{capture}/{seq}/cam{cam}/image{first + k}.jpg",
                               "width": WIDTH, "height": HEIGHT, "capture": int(capture), "subject": 0,
                               "seq_name": seq, "camera": cam, "frame_idx": first + k})  # fmt: skip
            for k in range(FRAMES_PER_SEQ):
                middle = 2 <= k <= 4
                hand_type = hand_cycle[(len(annotations) + k) % 3] if middle else "interacting"
                annotations.append({
                    "id": ids[k], "image_id": ids[k], "bbox": [0, 0, 10, 10], "joint_valid": [1] * 42,
                    "hand_type": hand_type, "hand_type_valid": 1,
                    "aid_list": [ids[j] for j in range(k - 2, k + 3)] if middle else [ids[k]] * 5,
                    "is_middle": middle,
                })  # fmt: skip
                fx.anns[ids[k]] = (capture, str(first + k), cam, hand_type, annotations[-1]["aid_list"])
    fx.data = {"data": {"images": images, "annotations": annotations}, "camera": cameras_json,
               "joint_3d": world_joints, "mano": mano_json}  # fmt: skip
    fx.path("data").parent.mkdir(parents=True)
    for name in fx.data:
        fx.write(name)
    for ann in annotations:
        if ann["is_middle"]:
            _draw_image(fx, images[ann["image_id"]], ann["hand_type"])
    return fx


def _draw_image(fx: Fixture, image: dict, hand_type: str) -> None:
    capture, frame, cam = str(image["capture"]), str(image["frame_idx"]), image["camera"]
    rot, campos = fx.cams[(capture, cam)]
    canvas = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
    draw = ImageDraw.Draw(canvas)
    for side in ("right", "left"):
        if hand_type not in (side, "interacting"):
            continue
        pixels = project_mm(fx.joints[(capture, frame, side)] * 1000.0, rot, campos)
        for joint, colour in MARKS.items():
            x, y = pixels[joint]
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    path = fx.root / "blur_images" / "train" / image["file_name"]
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=95, subsampling=0)


def project_mm(world_mm: np.ndarray, rot: np.ndarray, campos: np.ndarray) -> np.ndarray:
    cam = (world_mm - campos) @ rot.T
    return cam[:, :2] / cam[:, 2:] * np.array(FOCAL) + np.array(PRINCPT)


def private_copy(pristine: Fixture, folder: Path) -> Fixture:
    """A copy of ``pristine`` under ``folder`` (files and the Python-side records) for one test to edit."""
    root = folder / "blurhand"
    shutil.copytree(pristine.root, root)
    return replace(copy.deepcopy(pristine), root=root)
