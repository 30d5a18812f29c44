"""Parse a BlurHand split's four annotation JSONs once into a compact numpy index, cached on disk.

The real train split lists ~600k annotations; only the ~122k ``is_middle`` ones are samples, and their
past/future frames (``aid_list[0]``, ``aid_list[-1]``) reuse joint and MANO entries shared by many camera views.
The index therefore keeps per-sample rows that point into de-duplicated camera and frame tables. It is written
atomically to the cache (``$HMH_CACHE_DIR``, else ``$XDG_CACHE_HOME/hmh`` or ``~/.cache/hmh``), keyed by the
JSONs' sizes and modification times, so a second start loads one ``.npz`` instead of re-parsing.

Targets follow BlurHandNet's ``BlurHand.load_data``: per-frame joint validity comes from the COCO annotation of
that frame (``aid_list[0]`` / the middle annotation / ``aid_list[-1]``), multiplied by the wrist's validity;
'interacting' annotations give a right and a left sample; samples without a valid middle-frame joint or whose
box is empty after clipping to the image are skipped and counted.

Every number read is checked for NaN and infinity. A non-finite entry is recorded in ``BlurHandIndex.non_finite``
(file, JSON location, value), zeroed in the tables, and the samples of that hand that use it are skipped and
counted by cause (camera, joints, joint validity, MANO). The index is thus the same whatever the reader's
``skip_bad_annotations`` setting: the reader decides whether such an index is an error or is used without them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from hmh.data.blurhand_json import (
    HAND_TYPES,
    NUM_JOINTS,
    SKIP_NON_FINITE_CAMERA,
    SKIP_NON_FINITE_JOINT_VALID,
    SKIP_NON_FINITE_JOINTS,
    SKIP_NON_FINITE_MANO,
    AnnotationTables,
    DatasetError,
    flag,
    lookup,
    require_file,
)
from hmh.data.transforms import joints_bbox, square_bbox
from hmh.files.atomic import atomic_path
from hmh.mano.model import cache_folder, cache_root

log = logging.getLogger(__name__)

INDEX_VERSION = 2  # 2: non-finite checks (non_finite, four more skip reasons)
SKIP_NO_VALID_JOINT = "no_valid_joint"
SKIP_INVALID_BBOX = "invalid_bbox"
SKIP_REASONS = (SKIP_NO_VALID_JOINT, SKIP_INVALID_BBOX, SKIP_NON_FINITE_CAMERA, SKIP_NON_FINITE_JOINTS,
                SKIP_NON_FINITE_JOINT_VALID, SKIP_NON_FINITE_MANO)  # fmt: skip


def annotation_files(root: Path, split: str) -> dict[str, Path]:
    """The four annotation files of ``split``: keys data, camera, joint_3d, mano."""
    folder = Path(root) / "annotations" / split
    stem = f"BlurHand_{split}"
    return {
        "data": folder / f"{stem}_data.json",
        "camera": folder / f"{stem}_camera.json",
        "joint_3d": folder / f"{stem}_joint_3d.json",
        "mano": folder / f"{stem}_MANO_NeuralAnnot.json",
    }


def image_folder(root: Path, split: str) -> Path:
    """``<root>/blur_images/<split>``: COCO ``file_name`` entries are relative to it."""
    return Path(root) / "blur_images" / split


@dataclass
class BlurHandIndex:
    """Everything the samples of one split need. N samples, I images, C cameras, F frames, G groups.

    Per sample: ``image (N,)``, ``cam (N,)``, ``frames (N, 3)`` (past, current, future rows),
    ``joint_valid (N, 3, 21)`` uint8 (InterHand order), ``is_left (N,)`` uint8, ``hand_type (N,)`` uint8 (the
    source annotation's type, index into :data:`HAND_TYPES`), ``bbox (N, 4)`` square crop box ``(x, y, w, h)``,
    ``group (N,)`` (capture/sequence, for validation hold-out), ``annot_id (N,)``.
    Tables: ``image_files (I,)`` str, ``image_size (I, 2)`` (width, height); ``cam_rot (C, 3, 3)``,
    ``cam_pos (C, 3)`` mm, ``cam_focal (C, 2)``, ``cam_princpt (C, 2)``; ``frame_world (F, 42, 3)`` mm,
    ``mano_pose (F, 2, 48)``, ``mano_shape (F, 2, 10)``, ``mano_valid (F, 2)`` (hand 0 right, 1 left);
    ``group_names (G,)``; ``skip_reasons (K,)`` with ``skip_counts (K,)``; ``non_finite (P,)`` str, one message
    per non-finite JSON entry read (file, location, value; zeroed in the tables).
    """

    image: np.ndarray
    cam: np.ndarray
    frames: np.ndarray
    joint_valid: np.ndarray
    is_left: np.ndarray
    hand_type: np.ndarray
    bbox: np.ndarray
    group: np.ndarray
    annot_id: np.ndarray
    image_files: np.ndarray
    image_size: np.ndarray
    cam_rot: np.ndarray
    cam_pos: np.ndarray
    cam_focal: np.ndarray
    cam_princpt: np.ndarray
    frame_world: np.ndarray
    mano_pose: np.ndarray
    mano_shape: np.ndarray
    mano_valid: np.ndarray
    group_names: np.ndarray
    skip_reasons: np.ndarray
    skip_counts: np.ndarray
    non_finite: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    @property
    def skipped(self) -> dict[str, int]:
        """Skipped middle-annotation hands per reason."""
        return {str(r): int(c) for r, c in zip(self.skip_reasons, self.skip_counts, strict=True)}

    def save(self, path: Path) -> None:
        """Write atomically as an uncompressed ``.npz`` (no pickled objects)."""
        with atomic_path(path) as tmp:
            np.savez(tmp, version=np.int64(INDEX_VERSION), **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path) -> BlurHandIndex:
        """Read a file written by :meth:`save`; raises ``ValueError``/``OSError``/``KeyError`` if it is stale."""
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != INDEX_VERSION:
                raise ValueError(f"index version {int(data['version'])} != {INDEX_VERSION}")
            return cls(**{f.name: data[f.name] for f in fields(cls)})


def index_cache_path(root: Path, split: str) -> Path:
    """Cache file for ``(root, split)``, keyed by the annotation files' sizes and modification times."""
    files = annotation_files(root, split)
    for path in files.values():
        require_file(path)
    stats = {name: (p.stat().st_size, p.stat().st_mtime_ns) for name, p in files.items()}
    key = json.dumps([INDEX_VERSION, str(Path(root).resolve()), split, stats], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_root() / "blurhand" / f"{split}-{digest}.npz"


def load_index(root: Path, split: str, use_cache: bool = True) -> tuple[BlurHandIndex, bool]:
    """The index of ``split``, from the cache when it is current. Returns ``(index, loaded_from_cache)``."""
    path = index_cache_path(root, split)
    if use_cache and path.is_file():
        try:
            return BlurHandIndex.load(path), True
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
            log.warning("ignoring unreadable BlurHand index cache %s (%s); re-parsing", path, err)
    index = build_index(root, split)
    if use_cache:
        cache_folder("blurhand")  # a cache that is not a writable folder: one line naming it
        index.save(path)
        log.info("cached the BlurHand %s index in %s", split, path)
    return index, False


def build_index(root: Path, split: str) -> BlurHandIndex:
    """Parse ``split``'s four JSONs into a :class:`BlurHandIndex` (no cache)."""
    files = annotation_files(root, split)
    builder = AnnotationTables(files)
    data_path = files["data"]
    keys = ("image", "cam", "frames", "valid", "is_left", "hand_type", "group", "aid", "cause")
    rows: dict[str, list] = {k: [] for k in keys}
    for aid, ann in builder.anns.items():
        where = f"annotations[id={aid}]"
        if not flag(lookup(ann, "is_middle", data_path, where), data_path, f"{where}['is_middle']"):
            continue
        image = builder.image_of(ann)
        capture = builder.image_field(image, "capture")
        cam = builder.cam_row(capture, builder.image_field(image, "camera"))
        aid_list = lookup(ann, "aid_list", data_path, where)
        if not isinstance(aid_list, list) or not aid_list:
            raise DatasetError(f"{data_path}: {where}['aid_list'] must be a non-empty list, got {aid_list!r}")
        past = builder.frame_of(builder.annotation(aid_list[0], f"{where}['aid_list'][0] -> annotations"))
        current = builder.frame_of(ann)
        future = builder.frame_of(builder.annotation(aid_list[-1], f"{where}['aid_list'][-1] -> annotations"))
        hand_type = lookup(ann, "hand_type", data_path, where)
        if hand_type not in HAND_TYPES:
            raise DatasetError(f"{data_path}: {where}['hand_type'] is {hand_type!r}, expected one of {HAND_TYPES}")
        group = f"{capture}/{builder.image_field(image, 'seq_name') if 'seq_name' in image else ''}"
        group_row = builder.group_rows.setdefault(group, len(builder.group_rows))
        for side, hand in enumerate(("right", "left")):
            if hand_type not in (hand, "interacting"):
                continue
            rows["image"].append(builder.image_row(image))
            rows["cam"].append(cam)
            rows["frames"].append((past[0], current[0], future[0]))
            rows["valid"].append(np.stack([past[1][side], current[1][side], future[1][side]]))
            rows["is_left"].append(side)
            rows["hand_type"].append(HAND_TYPES.index(hand_type))
            rows["group"].append(group_row)
            rows["aid"].append(aid)
            rows["cause"].append(builder.non_finite_cause(cam, (past, current, future), side))
    return _finish(builder, rows)


def _finish(builder: AnnotationTables, rows: dict[str, list]) -> BlurHandIndex:
    """Vectorised crop boxes, skip filtering and conversion to arrays."""
    count = len(rows["image"])
    cam_rot, cam_pos, cam_focal, cam_princpt = (
        np.array([c[i] for c in builder.cam_params], dtype=np.float64).reshape((-1,) + s)
        for i, s in enumerate([(3, 3), (3,), (2,), (2,)])
    )
    frame_world = np.array(builder.frame_world, dtype=np.float32).reshape(-1, 42, 3)
    frames = np.array(rows["frames"], dtype=np.int32).reshape(count, 3)
    valid = np.array(rows["valid"], dtype=np.uint8).reshape(count, 3, NUM_JOINTS)
    is_left = np.array(rows["is_left"], dtype=np.uint8)
    cam = np.array(rows["cam"], dtype=np.int32)
    image = np.array(rows["image"], dtype=np.int32)
    image_size = np.array(builder.image_size, dtype=np.int32).reshape(-1, 2)

    hand_rows = np.arange(NUM_JOINTS)[None, :] + NUM_JOINTS * is_left[:, None].astype(np.int64)  # (N, 21)
    world = frame_world[frames[:, 1, None], hand_rows].astype(np.float64)  # (N, 21, 3) middle frame, mm
    points = np.einsum("nij,nkj->nki", cam_rot[cam], world - cam_pos[cam][:, None])  # (N, 21, 3)
    depth = np.where(np.abs(points[..., 2:]) > 1e-6, points[..., 2:], 1e-6)
    pixels = points[..., :2] / depth * cam_focal[cam][:, None] + cam_princpt[cam][:, None]  # (N, 21, 2)
    cause = np.array(rows["cause"], dtype=str)  # (N,) "" or the non-finite skip reason
    finite = cause == ""
    has_joint = valid[:, 1].any(axis=1)
    bbox, ok = square_bbox(joints_bbox(pixels, valid[:, 1]), image_size[image, 0], image_size[image, 1])
    keep = finite & has_joint & ok
    dropped = {SKIP_NO_VALID_JOINT: finite & ~has_joint, SKIP_INVALID_BBOX: finite & has_joint & ~ok}
    skip_reasons = np.array(SKIP_REASONS)
    skip_counts = np.array([int(dropped.get(r, cause == r).sum()) for r in SKIP_REASONS], dtype=np.int64)
    for reason, skipped in zip(skip_reasons, skip_counts, strict=True):
        if skipped:
            log.info("BlurHand %s: skipped %d hand(s): %s", builder.files["data"].name, skipped, reason)

    pose, shape, mano_valid = (np.array([m[i] for m in builder.frame_mano]) for i in range(3))
    return BlurHandIndex(
        image=image[keep],
        cam=cam[keep],
        frames=frames[keep],
        joint_valid=valid[keep],
        is_left=is_left[keep],
        hand_type=np.array(rows["hand_type"], dtype=np.uint8)[keep],
        bbox=bbox[keep].astype(np.float32),
        group=np.array(rows["group"], dtype=np.int32)[keep],
        annot_id=np.array(rows["aid"], dtype=np.int64)[keep],
        image_files=np.array(builder.image_files, dtype=str),
        image_size=image_size,
        cam_rot=cam_rot,
        cam_pos=cam_pos,
        cam_focal=cam_focal,
        cam_princpt=cam_princpt,
        frame_world=frame_world,
        mano_pose=pose.reshape(-1, 2, 48).astype(np.float32),
        mano_shape=shape.reshape(-1, 2, 10).astype(np.float32),
        mano_valid=mano_valid.reshape(-1, 2).astype(np.uint8),
        group_names=np.array(list(builder.group_rows), dtype=str),
        skip_reasons=skip_reasons,
        skip_counts=skip_counts,
        non_finite=np.array(builder.non_finite, dtype=str),
    )
