"""Constant mean-pose baseline, computed from a BlurHand-format dataset's JSON files alone (no hmh reader).

    python benchmarks/baseline.py ROOT [--out FILE]
    python benchmarks/baseline.py --config bench [--set key=value ...]   # ROOT = that config's cached dataset

The prediction is one constant: the training split's mean wrist-relative camera-frame joints of the past,
current and future frames, ``(3, 21, 3)``, averaged over valid joints. It is what a model that ignores the image
converges to, so a model's MPJPE as a share of it says how much the model learnt from the image. The numbers are
computed with ``json`` and ``numpy`` only, following the protocol of BlurHand (BlurHandNet's evaluation):

- ground truth: ``joint_3d.json`` world coordinates -> the middle image's camera (``X = R (X_w - campos)``),
  minus the wrist (InterHand joint 20); a joint counts where its own and the wrist's ``joint_valid`` are set;
- left hands are mirrored (x negated) before averaging, as the model predicts them with the right-hand MANO;
  'interacting' annotations give a right and a left sample;
- current MPJPE: the constant's middle frame against the current frame; past/future: per sample the better of
  the two assignments of the constant's past/future to the ground truth's; errors are averaged per joint over
  all samples, then over the 21 joints.

It exists to check the project's own figures (``hmh train`` reports the same baseline in its metric table);
the two agree where hmh's validation hold-out is small (hmh averages over the training split minus validation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

WRIST = 20  # InterHand joint order
HANDS = {"right": (slice(0, 21), False), "left": (slice(21, 42), True)}


def _load(root: Path, split: str, part: str) -> dict:
    path = root / "annotations" / split / f"BlurHand_{split}_{part}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"baseline: cannot read {path}: {exc}") from exc


def samples(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``joints (N, 3, 21, 3)`` mm, wrist-relative, camera frame, left hands mirrored; ``valid (N, 3, 21)``."""
    data, cameras, joints3d = (_load(root, split, p) for p in ("data", "camera", "joint_3d"))
    images = {img["id"]: img for img in data["images"]}
    annotations = {ann["id"]: ann for ann in data["annotations"]}
    out_joints, out_valid = [], []
    for ann in data["annotations"]:
        if not ann["is_middle"]:
            continue
        image = images[ann["image_id"]]
        capture, cam = str(image["capture"]), str(image["camera"])
        rot = np.asarray(cameras[capture]["camrot"][cam], dtype=np.float64)
        pos = np.asarray(cameras[capture]["campos"][cam], dtype=np.float64)
        frames = [annotations[ann["aid_list"][0]], ann, annotations[ann["aid_list"][-1]]]
        entries = [joints3d[capture][str(images[f["image_id"]]["frame_idx"])] for f in frames]
        hands = ["right", "left"] if ann["hand_type"] == "interacting" else [ann["hand_type"]]
        for hand in hands:
            part, mirror = HANDS[hand]
            world = np.stack([np.asarray(e["world_coord"], dtype=np.float64)[part] for e in entries])  # (3, 21, 3)
            valid = np.stack([np.asarray(e["joint_valid"], dtype=np.float64).reshape(-1)[part] for e in entries])
            cam_xyz = (world - pos) @ rot.T
            cam_xyz = cam_xyz - cam_xyz[:, WRIST:WRIST + 1]
            if mirror:
                cam_xyz[..., 0] *= -1
            out_joints.append(cam_xyz)
            out_valid.append(valid * valid[:, WRIST:WRIST + 1])
    if not out_joints:
        raise SystemExit(f"baseline: {root}: split {split!r} has no is_middle annotation")
    return np.stack(out_joints), np.stack(out_valid)


def per_joint_mean(err: np.ndarray, valid: np.ndarray) -> float:
    """``err, valid (N, 21)`` -> mean over samples per joint (valid ones), then over joints."""
    return float(np.nanmean((err * valid).sum(0) / np.where(valid.sum(0) > 0, valid.sum(0), np.nan)))


def baseline(root: Path) -> dict[str, float]:
    """MPJPE past / current / future (mm) on the test split of the training split's mean joints."""
    train, train_valid = samples(root, "train")
    mean = (train * train_valid[..., None]).sum(0) / np.maximum(train_valid.sum(0), 1)[..., None]  # (3, 21, 3)
    gt, valid = samples(root, "test")
    err = np.linalg.norm(gt - mean, axis=-1)  # (N, 3, 21), the constant in its own frame order
    swapped = np.linalg.norm(gt - mean[[2, 1, 0]], axis=-1)  # the constant's past against the future

    def frame_mean(e: np.ndarray, v: np.ndarray) -> np.ndarray:  # (N, 21) -> (N,), NaN without a valid joint
        with np.errstate(invalid="ignore"):
            return (e * v).sum(1) / np.where(v.sum(1) > 0, v.sum(1), np.nan)

    forward = frame_mean(err[:, 0], valid[:, 0]) + frame_mean(err[:, 2], valid[:, 2])
    backward = frame_mean(swapped[:, 0], valid[:, 0]) + frame_mean(swapped[:, 2], valid[:, 2])
    keep_forward = ~(np.nan_to_num(backward, nan=np.inf) < np.nan_to_num(forward, nan=np.inf))[:, None]
    past = np.where(keep_forward, err[:, 0], swapped[:, 0])
    future = np.where(keep_forward, err[:, 2], swapped[:, 2])
    return {
        "samples_train": float(len(train)), "samples_test": float(len(gt)),
        "mpjpe_past": per_joint_mean(past, valid[:, 0]),
        "mpjpe_current": per_joint_mean(err[:, 1], valid[:, 1]),
        "mpjpe_future": per_joint_mean(future, valid[:, 2]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, help="dataset root (blur_images/, annotations/)")
    parser.add_argument("--config", help="instead of ROOT: the cached synthetic dataset of this hmh config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if (args.root is None) == (args.config is None):
        parser.error("give ROOT or --config")
    root = args.root
    if root is None:  # only to find the folder; the numbers below never touch hmh
        from hmh.config import load_config
        from hmh.train.runner import data_root

        root = data_root(load_config(args.config, args.overrides), progress=False)
    result = baseline(Path(root))
    print(f"constant mean-pose baseline, {root}: train {result['samples_train']:.0f} samples, test "
          f"{result['samples_test']:.0f}; MPJPE past {result['mpjpe_past']:.2f} / current "
          f"{result['mpjpe_current']:.2f} / future {result['mpjpe_future']:.2f} mm")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"root": str(root), **result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
