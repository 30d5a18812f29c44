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
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hmh.atomic import atomic_path
from hmh.data.transforms import joints_bbox, square_bbox
from hmh.errors import HmhError
from hmh.mano import cache_root

log = logging.getLogger(__name__)

INDEX_VERSION = 1
NUM_JOINTS = 21  # per hand; the files hold 42 (right 0-20, then left 21-41)
WRIST = 20  # InterHand order
HAND_TYPES = ("right", "left", "interacting")
SKIP_NO_VALID_JOINT = "no_valid_joint"
SKIP_INVALID_BBOX = "invalid_bbox"


class DatasetError(HmhError):
    """A BlurHand root, annotation file or image is missing or malformed; the message names file and key."""


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
    ``group_names (G,)``; ``skip_reasons (K,)`` with ``skip_counts (K,)``.
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
        if not path.is_file():
            raise DatasetError(f"{path}: BlurHand annotation file not found (expected <root>/annotations/{split}/)")
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
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("ignoring unreadable BlurHand index cache %s (%s); re-parsing", path, err)
    index = build_index(root, split)
    if use_cache:
        index.save(path)
        log.info("cached the BlurHand %s index in %s", split, path)
    return index, False


def _load_json(path: Path) -> Any:
    log.info("parsing %s", path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DatasetError(f"{path}: BlurHand annotation file not found") from None
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg}); is the file truncated?"
        ) from None
    except (UnicodeDecodeError, OSError) as err:
        raise DatasetError(f"{path}: cannot read ({err})") from None


def _get(obj: Any, key: Any, path: Path, where: str) -> Any:
    """``obj[key]``, or a :class:`DatasetError` naming the file and the JSON location."""
    try:
        return obj[key]
    except (KeyError, IndexError, TypeError):
        raise DatasetError(f"{path}: missing key {where}[{key!r}]") from None


def _array(value: Any, shape: tuple[int, ...], path: Path, where: str) -> np.ndarray:
    """``value`` as a float array of ``shape`` (size must match), or a :class:`DatasetError`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {where} is not numeric") from None
    if array.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: {where} has {array.size} values, expected {int(np.prod(shape))} {shape}")
    return array.reshape(shape)


class _Builder:
    """Accumulates de-duplicated tables while walking the middle annotations."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        data = _load_json(files["data"])
        self.cameras = _load_json(files["camera"])
        self.joints = _load_json(files["joint_3d"])
        self.mano = _load_json(files["mano"])
        path = files["data"]
        self.images = {_get(im, "id", path, "images[...]"): im for im in _get(data, "images", path, "")}
        self.anns = {_get(an, "id", path, "annotations[...]"): an for an in _get(data, "annotations", path, "")}
        self.image_rows: dict[Any, int] = {}
        self.image_files: list[str] = []
        self.image_size: list[tuple[int, int]] = []
        self.cam_rows: dict[tuple[str, str], int] = {}
        self.cam_params: list[tuple[np.ndarray, ...]] = []
        self.frame_rows: dict[tuple[str, str], int] = {}
        self.frame_world: list[np.ndarray] = []
        self.frame_mano: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.group_rows: dict[str, int] = {}

    def annotation(self, aid: Any, where: str) -> dict:
        return _get(self.anns, aid, self.files["data"], where)

    def image_of(self, ann: dict) -> dict:
        path = self.files["data"]
        image_id = _get(ann, "image_id", path, f"annotations[id={ann.get('id')}]")
        return _get(self.images, image_id, path, "images[id=...]")

    def image_row(self, image: dict) -> int:
        key = image["id"]
        if key not in self.image_rows:
            path, where = self.files["data"], f"images[id={key}]"
            self.image_rows[key] = len(self.image_files)
            self.image_files.append(str(_get(image, "file_name", path, where)))
            self.image_size.append((int(_get(image, "width", path, where)), int(_get(image, "height", path, where))))
        return self.image_rows[key]

    def cam_row(self, capture: str, camera: str) -> int:
        key = (capture, camera)
        if key not in self.cam_rows:
            path = self.files["camera"]
            cams = _get(self.cameras, capture, path, "")
            where = f"[{capture!r}]"

            def param(name: str, shape: tuple[int, ...]) -> np.ndarray:
                value = _get(_get(cams, name, path, where), camera, path, f"{where}[{name!r}]")
                return _array(value, shape, path, f"{where}[{name!r}][{camera!r}]")

            self.cam_rows[key] = len(self.cam_params)
            self.cam_params.append((param("camrot", (3, 3)), param("campos", (3,)), param("focal", (2,)),
                                    param("princpt", (2,))))  # fmt: skip
        return self.cam_rows[key]

    def frame_row(self, capture: str, frame: str) -> int:
        key = (capture, frame)
        if key not in self.frame_rows:
            path = self.files["joint_3d"]
            entry = _get(_get(self.joints, capture, path, ""), frame, path, f"[{capture!r}]")
            where = f"[{capture!r}][{frame!r}]['world_coord']"
            world = _array(_get(entry, "world_coord", path, f"[{capture!r}][{frame!r}]"), (42, 3), path, where)
            self.frame_rows[key] = len(self.frame_world)
            self.frame_world.append(world.astype(np.float32))
            self.frame_mano.append(self._mano_params(capture, frame))
        return self.frame_rows[key]

    def _mano_params(self, capture: str, frame: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MANO params of both hands of a frame; a missing capture/frame/hand or null entry is invalid (as in
        BlurHandNet), a malformed one an error."""
        pose, shape, valid = np.zeros((2, 48), np.float32), np.zeros((2, 10), np.float32), np.zeros(2, np.uint8)
        path = self.files["mano"]
        frames = self.mano.get(capture) if isinstance(self.mano, dict) else None
        entry = frames.get(frame) if isinstance(frames, dict) else None
        for side, hand in enumerate(("right", "left")):
            params = entry.get(hand) if isinstance(entry, dict) else None
            if params is None:
                continue
            where = f"[{capture!r}][{frame!r}][{hand!r}]"
            pose[side] = _array(_get(params, "pose", path, where), (48,), path, f"{where}['pose']")
            shape[side] = _array(_get(params, "shape", path, where), (10,), path, f"{where}['shape']")
            valid[side] = 1
        return pose, shape, valid

    def joint_valid(self, ann: dict) -> np.ndarray:
        """``(2, 21)`` validity of one frame's annotation, each hand multiplied by its wrist's validity."""
        where, path = f"annotations[id={ann.get('id')}]", self.files["data"]
        valid = _array(_get(ann, "joint_valid", path, where), (2, NUM_JOINTS), path, f"{where}['joint_valid']")
        return (valid * valid[:, WRIST : WRIST + 1] > 0).astype(np.uint8)

    def frame_of(self, ann: dict) -> tuple[int, np.ndarray]:
        """Frame-table row and joint validity ``(2, 21)`` of an annotation."""
        image = self.image_of(ann)
        where = f"images[id={image.get('id')}]"
        capture = str(_get(image, "capture", self.files["data"], where))
        frame = str(_get(image, "frame_idx", self.files["data"], where))
        return self.frame_row(capture, frame), self.joint_valid(ann)


def build_index(root: Path, split: str) -> BlurHandIndex:
    """Parse ``split``'s four JSONs into a :class:`BlurHandIndex` (no cache)."""
    files = annotation_files(root, split)
    builder = _Builder(files)
    data_path = files["data"]
    rows: dict[str, list] = {k: [] for k in ("image", "cam", "frames", "valid", "is_left", "hand_type", "group", "aid")}
    for aid, ann in builder.anns.items():
        where = f"annotations[id={aid}]"
        if not _get(ann, "is_middle", data_path, where):
            continue
        image = builder.image_of(ann)
        image_where = f"images[id={image.get('id')}]"
        capture = str(_get(image, "capture", data_path, image_where))
        cam = builder.cam_row(capture, str(_get(image, "camera", data_path, image_where)))
        aid_list = _get(ann, "aid_list", data_path, where)
        if not isinstance(aid_list, list) or not aid_list:
            raise DatasetError(f"{data_path}: {where}['aid_list'] must be a non-empty list, got {aid_list!r}")
        past = builder.frame_of(builder.annotation(aid_list[0], f"{where}['aid_list'][0] -> annotations"))
        current = builder.frame_of(ann)
        future = builder.frame_of(builder.annotation(aid_list[-1], f"{where}['aid_list'][-1] -> annotations"))
        hand_type = _get(ann, "hand_type", data_path, where)
        if hand_type not in HAND_TYPES:
            raise DatasetError(f"{data_path}: {where}['hand_type'] is {hand_type!r}, expected one of {HAND_TYPES}")
        group = f"{capture}/{image.get('seq_name', '')}"
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
    return _finish(builder, rows)


def _finish(builder: _Builder, rows: dict[str, list]) -> BlurHandIndex:
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
    has_joint = valid[:, 1].any(axis=1)
    bbox, ok = square_bbox(joints_bbox(pixels, valid[:, 1]), image_size[image, 0], image_size[image, 1])
    keep = has_joint & ok
    skip_reasons = np.array([SKIP_NO_VALID_JOINT, SKIP_INVALID_BBOX])
    skip_counts = np.array([int((~has_joint).sum()), int((has_joint & ~ok).sum())], dtype=np.int64)
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
    )
