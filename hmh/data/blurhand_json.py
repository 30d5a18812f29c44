"""Reading BlurHand's annotation JSONs: each value fetched with its file and JSON location for errors, and the
walk that gathers de-duplicated camera, frame (joints + MANO) and image tables for :mod:`hmh.data.blurhand_index`.

Every number read is checked for NaN, infinity and null (and values beyond float32, the tables' type): such an
entry is zeroed, recorded as one message (file, JSON location, value), and flagged on its camera, frame hand or
annotation hand, so the index can skip and count the samples that use it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from hmh.errors import HmhError

log = logging.getLogger(__name__)

NUM_JOINTS = 21  # per hand; the files hold 42 (right 0-20, then left 21-41)
WRIST = 20  # InterHand order
HAND_TYPES = ("right", "left", "interacting")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the tables are float32: larger values count as non-finite
SKIP_NON_FINITE_CAMERA = "non_finite_camera"  # camrot, campos, focal or princpt of the sample's camera
SKIP_NON_FINITE_JOINTS = "non_finite_joints"  # world_coord of the sample's hand at one of its frames
SKIP_NON_FINITE_JOINT_VALID = "non_finite_joint_valid"  # joint_valid of one of its frames' annotations
SKIP_NON_FINITE_MANO = "non_finite_mano"  # pose, shape or trans of the sample's hand at one of its frames


class DatasetError(HmhError):
    """A BlurHand root, annotation file or image is missing or malformed; the message names file and key."""


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


def lookup(obj: Any, key: Any, path: Path, where: str) -> Any:
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


def coco_records(data: Any, key: str, path: Path) -> list[dict]:
    """``data[key]`` of a COCO ``_data.json``: a list of objects, or a :class:`DatasetError` naming file and key."""
    records = lookup(data, key, path, "")
    if not isinstance(records, list):
        raise DatasetError(f"{path}: [{key!r}] is {_json_type(records)}, expected a list of objects")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: [{key!r}][{i}] is {_json_type(record)}, expected an object")
    return records


def _json_type(value: Any) -> str:
    """How JSON names the type of a parsed ``value``: null, a boolean, a number, a string, a list, an object."""
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _pixels(value: Any, path: Path, where: str) -> int:
    """``value`` as a whole number of pixels, or a :class:`DatasetError` (NaN, inf, fractions, text are not)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer():
        raise DatasetError(f"{path}: {where} is {value!r}, expected a finite whole number of pixels")
    return int(number)


def _finite(value: Any, shape: tuple[int, ...], path: Path, where: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``value`` at JSON location ``where`` of ``path`` as a float array of ``shape`` with its non-finite entries
    (NaN, inf, null, or beyond float32) zeroed, their mask ``shape``, and a message naming the first one (``""`` when
    all are finite); a malformed value raises :class:`DatasetError`."""
    array = _array(value, shape, path, where)
    bad = ~(np.abs(array) <= FLOAT32_MAX)
    if not bad.any():
        return array, bad, ""
    first = int(np.flatnonzero(bad)[0])
    at = "".join(f"[{int(i)}]" for i in np.unravel_index(first, np.shape(value)))
    number = f"{array.flat[first]}" + (" (beyond float32)" if np.isfinite(array.flat[first]) else "")
    message = (f"{path}: non-finite value {number} at {where}{at} "
               f"(non-finite: {int(bad.sum())} of {array.size} values)")  # fmt: skip
    return np.where(bad, 0.0, array), bad, message


CAMERA_PARAMS = {"camrot": (3, 3), "campos": (3,), "focal": (2,), "princpt": (2,)}


def camera_problems(path: Path) -> list[str]:
    """Every camera of a ``_camera.json``, whether a sample uses it or not: one message per missing, malformed or
    non-finite parameter (the same message the index gives for a camera it uses)."""
    cameras = _load_json(path)
    if not isinstance(cameras, dict):
        return [f"{path}: the file holds {_json_type(cameras)}, expected an object of captures"]
    problems = []
    for capture, params in cameras.items():
        where = f"[{capture!r}]"
        if not isinstance(params, dict) or not all(isinstance(params.get(n), dict) for n in CAMERA_PARAMS):
            problems.append(f"{path}: {where} must be an object with objects {', '.join(map(repr, CAMERA_PARAMS))}")
            continue
        for camera in sorted(set().union(*(params[name] for name in CAMERA_PARAMS))):
            for name, shape in CAMERA_PARAMS.items():
                try:
                    value = lookup(params[name], camera, path, f"{where}[{name!r}]")
                    message = _finite(value, shape, path, f"{where}[{name!r}][{camera!r}]")[2]
                except DatasetError as err:
                    message = str(err)
                if message:
                    problems.append(message)
    return problems


class AnnotationTables:
    """Accumulates de-duplicated tables while walking the middle annotations."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        data = _load_json(files["data"])
        self.cameras = _load_json(files["camera"])
        self.joints = _load_json(files["joint_3d"])
        self.mano = _load_json(files["mano"])
        path = files["data"]
        self.images = {lookup(im, "id", path, "images[...]"): im for im in coco_records(data, "images", path)}
        self.anns = {lookup(an, "id", path, "annotations[...]"): an for an in coco_records(data, "annotations", path)}
        self.image_rows: dict[Any, int] = {}
        self.image_files: list[str] = []
        self.image_size: list[tuple[int, int]] = []
        self.cam_rows: dict[tuple[str, str], int] = {}
        self.cam_params: list[tuple[np.ndarray, ...]] = []
        self.frame_rows: dict[tuple[str, str], int] = {}
        self.frame_world: list[np.ndarray] = []
        self.frame_mano: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.group_rows: dict[str, int] = {}
        self.non_finite: list[str] = []  # one message per non-finite JSON entry
        self.cam_bad: list[bool] = []  # per camera row: a parameter held a non-finite value
        self.frame_bad: list[np.ndarray] = []  # per frame row (2, 2) bool: (joints, MANO) x (right, left)

    def numbers(self, name: str, value: Any, shape: tuple[int, ...], where: str) -> tuple[np.ndarray, np.ndarray]:
        """``value`` from annotation file ``name`` as a float array of ``shape`` with its non-finite entries (NaN,
        inf, null, or beyond float32) zeroed, and their mask ``shape``; a message naming the file, the JSON
        location of the first such entry and its value is added to :attr:`non_finite`."""
        array, bad, message = _finite(value, shape, self.files[name], where)
        if message:
            self.non_finite.append(message)
        return array, bad

    def annotation(self, aid: Any, where: str) -> dict:
        return lookup(self.anns, aid, self.files["data"], where)

    def image_of(self, ann: dict) -> dict:
        path = self.files["data"]
        image_id = lookup(ann, "image_id", path, f"annotations[id={ann.get('id')}]")
        return lookup(self.images, image_id, path, "images[id=...]")

    def image_row(self, image: dict) -> int:
        key = image["id"]
        if key not in self.image_rows:
            path, where = self.files["data"], f"images[id={key}]"
            self.image_rows[key] = len(self.image_files)
            self.image_files.append(str(lookup(image, "file_name", path, where)))
            self.image_size.append(tuple(_pixels(lookup(image, name, path, where), path, f"{where}[{name!r}]")
                                         for name in ("width", "height")))  # fmt: skip
        return self.image_rows[key]

    def cam_row(self, capture: str, camera: str) -> int:
        key = (capture, camera)
        if key not in self.cam_rows:
            path = self.files["camera"]
            cams = lookup(self.cameras, capture, path, "")
            where = f"[{capture!r}]"

            def param(name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
                value = lookup(lookup(cams, name, path, where), camera, path, f"{where}[{name!r}]")
                return self.numbers("camera", value, shape, f"{where}[{name!r}][{camera!r}]")

            params = [param(name, shape) for name, shape in CAMERA_PARAMS.items()]
            self.cam_rows[key] = len(self.cam_params)
            self.cam_params.append(tuple(array for array, _ in params))
            self.cam_bad.append(any(bad.any() for _, bad in params))
        return self.cam_rows[key]

    def frame_row(self, capture: str, frame: str) -> int:
        key = (capture, frame)
        if key not in self.frame_rows:
            path = self.files["joint_3d"]
            entry = lookup(lookup(self.joints, capture, path, ""), frame, path, f"[{capture!r}]")
            where = f"[{capture!r}][{frame!r}]['world_coord']"
            value = lookup(entry, "world_coord", path, f"[{capture!r}][{frame!r}]")
            world, bad = self.numbers("joint_3d", value, (42, 3), where)
            *mano, mano_bad = self._mano_params(capture, frame)
            self.frame_rows[key] = len(self.frame_world)
            self.frame_world.append(world.astype(np.float32))
            self.frame_mano.append(tuple(mano))
            self.frame_bad.append(np.stack([bad.reshape(2, -1).any(axis=1), mano_bad]))
        return self.frame_rows[key]

    def _mano_params(self, capture: str, frame: str) -> tuple[np.ndarray, ...]:
        """MANO ``pose (2, 48)``, ``shape (2, 10)``, ``valid (2,)`` and non-finite ``bad (2,)`` of both hands of a
        frame; a missing capture/frame/hand or null entry is invalid (as in BlurHandNet), a malformed one an
        error."""
        pose, shape, valid = np.zeros((2, 48), np.float32), np.zeros((2, 10), np.float32), np.zeros(2, np.uint8)
        bad = np.zeros(2, dtype=bool)
        path = self.files["mano"]
        frames = self.mano.get(capture) if isinstance(self.mano, dict) else None
        entry = frames.get(frame) if isinstance(frames, dict) else None
        for side, hand in enumerate(("right", "left")):
            params = entry.get(hand) if isinstance(entry, dict) else None
            if params is None:
                continue
            where = f"[{capture!r}][{frame!r}][{hand!r}]"
            has_trans = isinstance(params, dict) and "trans" in params  # unused, but checked when present
            sizes = {"pose": (48,), "shape": (10,)} | ({"trans": (3,)} if has_trans else {})
            read = {k: self.numbers("mano", lookup(params, k, path, where), size, f"{where}[{k!r}]")
                    for k, size in sizes.items()}  # fmt: skip
            pose[side], shape[side] = read["pose"][0], read["shape"][0]
            bad[side] = any(mask.any() for _, mask in read.values())
            valid[side] = 1
        return pose, shape, valid, bad

    def joint_valid(self, ann: dict) -> tuple[np.ndarray, np.ndarray]:
        """``(2, 21)`` validity of one frame's annotation, each hand multiplied by its wrist's validity, and
        ``(2,)`` True where a hand's entries held a non-finite value."""
        where, path = f"annotations[id={ann.get('id')}]", self.files["data"]
        value = lookup(ann, "joint_valid", path, where)
        valid, bad = self.numbers("data", value, (2, NUM_JOINTS), f"{where}['joint_valid']")
        return (valid * valid[:, WRIST : WRIST + 1] > 0).astype(np.uint8), bad.any(axis=1)

    def frame_of(self, ann: dict) -> tuple[int, np.ndarray, np.ndarray]:
        """Frame-table row, joint validity ``(2, 21)`` and its non-finite flags ``(2,)`` of an annotation."""
        image = self.image_of(ann)
        where = f"images[id={image.get('id')}]"
        capture = str(lookup(image, "capture", self.files["data"], where))
        frame = str(lookup(image, "frame_idx", self.files["data"], where))
        return (self.frame_row(capture, frame), *self.joint_valid(ann))

    def non_finite_cause(self, cam: int, frames: tuple[tuple[int, np.ndarray, np.ndarray], ...], side: int) -> str:
        """The skip reason of hand ``side`` of a sample with camera row ``cam`` and ``frames`` (past, current,
        future :meth:`frame_of`) when a number it uses was non-finite, else ``""``."""
        causes = [
            (SKIP_NON_FINITE_CAMERA, self.cam_bad[cam]),
            (SKIP_NON_FINITE_JOINTS, any(self.frame_bad[row][0, side] for row, _, _ in frames)),
            (SKIP_NON_FINITE_JOINT_VALID, any(bad[side] for _, _, bad in frames)),
            (SKIP_NON_FINITE_MANO, any(self.frame_bad[row][1, side] for row, _, _ in frames)),
        ]
        return next((cause for cause, found in causes if found), "")
