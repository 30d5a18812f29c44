"""Reading BlurHand's annotation JSONs: each value fetched with its file and JSON location for errors, and the
walk that gathers de-duplicated camera, frame (joints + MANO) and image tables for :mod:`hmh.data.blurhand_index`.

Every number read is checked for NaN, infinity and null (and values beyond float32, the tables' type; an integer
too long for a float64 reads as infinite): such an entry is zeroed, recorded as one message (file, JSON location,
value), and flagged on its camera, frame hand or annotation hand, so the index can skip and count the samples that
use it. Anything else malformed (an unreadable file, a wrong JSON type, an id, size or validity out of its range)
is a :class:`DatasetError` naming the file and JSON location.
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
MAX_INT_DIGITS = 308  # a JSON integer of more digits is beyond float64: read as infinite
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1  # image sizes are int32, ids int64 in the index
SKIP_NON_FINITE_CAMERA = "non_finite_camera"  # camrot, campos, focal or princpt of the sample's camera
SKIP_NON_FINITE_JOINTS = "non_finite_joints"  # world_coord of the sample's hand at one of its frames
SKIP_NON_FINITE_JOINT_VALID = "non_finite_joint_valid"  # joint_valid of one of its frames' annotations
SKIP_NON_FINITE_MANO = "non_finite_mano"  # pose, shape or trans of the sample's hand at one of its frames


class DatasetError(HmhError):
    """A BlurHand root, annotation file or image is missing or malformed; the message names file and key."""


def require_file(path: Path) -> None:
    """A :class:`DatasetError` unless ``path`` is a file: one naming it as missing, a folder or a dangling link."""
    if path.is_file():
        return
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, expected a BlurHand annotation file")
    if path.is_symlink():
        raise DatasetError(f"{path}: BlurHand annotation file is a symbolic link to no file (a missing target or "
                           "a loop)")
    raise DatasetError(f"{path}: BlurHand annotation file not found")


def _parse_int(text: str) -> int | float:
    """A JSON integer; one too large for a float64 (or Python's 4300-digit limit) becomes ``±inf``, so it counts
    as non-finite instead of stopping the parse."""
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else float(text)


def load_json(path: Path) -> Any:
    """Parse one annotation file (UTF-8 JSON); anything unreadable is a :class:`DatasetError` naming the file."""
    log.info("parsing %s", path)
    require_file(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle, parse_int=_parse_int)
    except json.JSONDecodeError as err:
        if err.doc.startswith("\ufeff"):
            raise DatasetError(f"{path}: starts with a byte order mark (BOM), which JSON does not allow; "
                               "save it as UTF-8 without one") from None
        hint = "; is the file truncated?" if err.pos >= len(err.doc.rstrip()) else ""
        raise DatasetError(f"{path}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg}){hint}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"
                           ) from None
    except RecursionError:
        raise DatasetError(f"{path}: JSON nested too deeply to be a BlurHand annotation file") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror or err})") from None


def lookup(obj: Any, key: Any, path: Path, where: str) -> Any:
    """``obj[key]``, or a :class:`DatasetError` naming the file and the JSON location (``where``, ``""`` for the top
    level): a missing key, or a container of the wrong JSON type."""
    try:
        return obj[key]
    except (KeyError, IndexError):
        raise DatasetError(f"{path}: missing key {where}[{key!r}]") from None
    except TypeError:
        if isinstance(obj, dict):  # an unhashable key (a list or object where an id belongs)
            raise DatasetError(f"{path}: missing key {where}[{key!r}]") from None
        raise DatasetError(f"{path}: {where or 'the file'} is {_json_type(obj)}, expected an object with key "
                           f"{key!r}") from None


def json_object(value: Any, path: Path, where: str, allow_null: bool = False) -> dict:
    """``value`` when it is a JSON object (or, with ``allow_null``, null: then ``{}``), else a
    :class:`DatasetError` naming the file and the JSON location (``""`` for the whole file)."""
    if allow_null and value is None:
        return {}
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: {where or 'the file'} is {_json_type(value)}, expected an object")
    return value


def _array(value: Any, shape: tuple[int, ...], path: Path, where: str) -> np.ndarray:
    """``value`` (numbers, booleans or nulls, nested in any way) as a float array of ``shape`` (size must match),
    nulls as NaN; text, objects or ragged lists are a :class:`DatasetError`."""
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError):  # ragged nesting
        raise DatasetError(f"{path}: {where} is not an array of numbers") from None
    if raw.dtype.kind == "O":  # nulls among the numbers, integers beyond int64, or something else
        items = raw.ravel().tolist()
        if not all(x is None or isinstance(x, int | float) for x in items):
            raise DatasetError(f"{path}: {where} is not an array of numbers")
        raw = np.array([math.nan if x is None else float(x) for x in items]).reshape(raw.shape)
    elif raw.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: {where} is not an array of numbers")
    if raw.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: {where} has {raw.size} values, expected {int(np.prod(shape))} {shape}")
    return raw.astype(np.float64).reshape(shape)


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


def whole_number(value: Any, low: int, high: int, path: Path, where: str, what: str) -> int:
    """``value`` as an int in ``[low, high]``, or a :class:`DatasetError` naming the file, JSON location and
    value (text, booleans, NaN, infinity and fractions are not whole numbers)."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not low <= value <= high:
        raise DatasetError(f"{path}: {where} is {value!r}, expected {what}: a whole number from {low} to {high}")
    return int(value)


def flag(value: Any, path: Path, where: str) -> bool:
    """``value`` as a boolean: JSON true/false (or 1/0), else a :class:`DatasetError` naming file and location."""
    if value not in (True, False) or not isinstance(value, bool | int):
        raise DatasetError(f"{path}: {where} is {value!r}, expected true or false")
    return bool(value)


def records_by_id(records: list[dict], key: str, path: Path) -> dict[int, dict]:
    """COCO ``records`` (``data[key]``) by their ``'id'``: int64 whole numbers, each used once."""
    table: dict[int, dict] = {}
    for i, record in enumerate(records):
        where = f"[{key!r}][{i}]"
        rid = whole_number(lookup(record, "id", path, where), -INT64_MAX - 1, INT64_MAX, path, f"{where}['id']",
                           "an id")
        if rid in table:
            raise DatasetError(f"{path}: {where}['id'] is {rid}, the id of an earlier entry too; ids must be unique")
        table[rid] = record
    return table


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


def camera_param(name: str, value: Any, path: Path, where: str) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`_finite` for camera parameter ``name`` (shape from :data:`CAMERA_PARAMS`) at ``where``; a focal
    length that is zero or negative is a :class:`DatasetError`."""
    array, bad, message = _finite(value, CAMERA_PARAMS[name], path, where)
    if name == "focal" and (array[~bad] <= 0).any():
        raise DatasetError(f"{path}: {where} is {value!r}, expected positive focal lengths in pixels")
    return array, bad, message


def camera_problems(path: Path) -> list[str]:
    """Every camera of a ``_camera.json``, whether a sample uses it or not: one message per missing, malformed or
    non-finite parameter (the same message the index gives for a camera it uses)."""
    cameras = load_json(path)
    if not isinstance(cameras, dict):
        return [f"{path}: the file is {_json_type(cameras)}, expected an object of captures"]
    problems = []
    for capture, params in cameras.items():
        where = f"[{capture!r}]"
        if not isinstance(params, dict) or not all(isinstance(params.get(n), dict) for n in CAMERA_PARAMS):
            problems.append(f"{path}: {where} must be an object with objects {', '.join(map(repr, CAMERA_PARAMS))}")
            continue
        for camera in sorted(set().union(*(params[name] for name in CAMERA_PARAMS))):
            for name in CAMERA_PARAMS:
                try:
                    value = lookup(params[name], camera, path, f"{where}[{name!r}]")
                    message = camera_param(name, value, path, f"{where}[{name!r}][{camera!r}]")[2]
                except DatasetError as err:
                    message = str(err)
                if message:
                    problems.append(message)
    return problems


class AnnotationTables:
    """Accumulates de-duplicated tables while walking the middle annotations."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        data = load_json(files["data"])
        self.cameras, self.joints, self.mano = (json_object(load_json(files[name]), files[name], "")
                                                for name in ("camera", "joint_3d", "mano"))  # fmt: skip
        path = files["data"]
        self.images = records_by_id(coco_records(data, "images", path), "images", path)
        self.anns = records_by_id(coco_records(data, "annotations", path), "annotations", path)
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

    def image_field(self, image: dict, name: str) -> str:
        """``image[name]`` of ``_data.json`` (capture, camera, frame_idx, seq_name, file_name) as text: a string or
        an integer, else a :class:`DatasetError` naming the file and key."""
        path, where = self.files["data"], f"images[id={image.get('id')}]"
        value = lookup(image, name, path, where)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise DatasetError(f"{path}: {where}[{name!r}] is {value!r}, expected a string or an integer")
        return str(value)

    def image_row(self, image: dict) -> int:
        key = image["id"]
        if key not in self.image_rows:
            path, where = self.files["data"], f"images[id={key}]"
            self.image_rows[key] = len(self.image_files)
            self.image_files.append(self.image_field(image, "file_name"))
            self.image_size.append(tuple(whole_number(lookup(image, name, path, where), 1, INT32_MAX, path,
                                                      f"{where}[{name!r}]", "a size in pixels")
                                         for name in ("width", "height")))  # fmt: skip
        return self.image_rows[key]

    def cam_row(self, capture: str, camera: str) -> int:
        key = (capture, camera)
        if key not in self.cam_rows:
            path = self.files["camera"]
            cams = lookup(self.cameras, capture, path, "")
            where = f"[{capture!r}]"

            def param(name: str) -> tuple[np.ndarray, np.ndarray]:
                value = lookup(lookup(cams, name, path, where), camera, path, f"{where}[{name!r}]")
                array, bad, message = camera_param(name, value, path, f"{where}[{name!r}][{camera!r}]")
                self.non_finite += [message] if message else []
                return array, bad

            params = [param(name) for name in CAMERA_PARAMS]
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
        frames = json_object(self.mano.get(capture), path, f"[{capture!r}]", allow_null=True)
        entry = json_object(frames.get(frame), path, f"[{capture!r}][{frame!r}]", allow_null=True)
        for side, hand in enumerate(("right", "left")):
            params = entry.get(hand)
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
        if not np.isin(valid, (0.0, 1.0)).all():
            first = valid.flat[np.flatnonzero(~np.isin(valid, (0.0, 1.0)))[0]]
            raise DatasetError(f"{path}: {where}['joint_valid'] holds {first:g}, expected 0 or 1 per joint")
        return (valid * valid[:, WRIST : WRIST + 1] > 0).astype(np.uint8), bad.any(axis=1)

    def frame_of(self, ann: dict) -> tuple[int, np.ndarray, np.ndarray]:
        """Frame-table row, joint validity ``(2, 21)`` and its non-finite flags ``(2,)`` of an annotation."""
        image = self.image_of(ann)
        capture, frame = self.image_field(image, "capture"), self.image_field(image, "frame_idx")
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
