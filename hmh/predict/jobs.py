"""Which images ``hmh predict`` runs on, with which box and hand, into which folder (:func:`plan_jobs`).

Images are given as files, folders (their image files, sorted, not recursive) or glob patterns (``'img/*.jpg'``,
expanded here when the shell did not), and/or as the rows of a boxes file (``--boxes``):

- CSV with a header row ``image,x,y,w,h[,hand]`` (in any order, spaces around names ignored), or JSON: a list of
  objects with those keys; UTF-8, with or without a byte-order mark; another column or key, a column named twice,
  a key given twice in one object, or a file without rows is refused as a whole;
- ``image`` relative to the boxes file's folder (or absolute); ``x y w h`` the hand's box in the pixels of the
  upright image (its EXIF orientation applied);
  ``hand`` ``right``/``left`` (default: ``--hand``). An image may have one row per hand.

A bad row (a missing, extra or non-numeric value, an empty box, an unknown hand, a missing image, a repeated image
and hand) is reported as ``FILE line N`` (CSV; line 1 is the header) or ``FILE entry N`` (JSON, from 1) and
skipped; the other rows still run. An image given as a file and in the
boxes file runs once, with its row's box. Folders: :func:`hmh.predict.run.prediction_name`, with ``-left``/``-right``
appended for an image that has rows for both hands.
"""

from __future__ import annotations

import csv
import glob
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hmh.errors import HmhError
from hmh.predict.run import path_text, prediction_name, real_path

__all__ = ["IMAGE_SUFFIXES", "BoxesError", "Job", "expand_images", "plan_jobs", "read_boxes"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
HANDS = ("right", "left")
BOX_KEYS = ("x", "y", "w", "h")
KEYS = ("image", *BOX_KEYS, "hand")


class BoxesError(HmhError):
    """A boxes file, or a row of it, ``hmh predict`` cannot use; the message names the file and the row."""


@dataclass(frozen=True)
class Job:
    """One prediction: ``image``, its ``bbox (x, y, w, h)`` or None (the image is a crop), the hand, the folder,
    and where the box came from (``--bbox`` or ``FILE line N``)."""

    image: Path
    bbox: tuple[float, float, float, float] | None
    is_left: bool
    folder: Path
    box_source: str = "--bbox"


def expand_images(items: list[Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted), glob patterns as their matches (sorted); raises
    :class:`HmhError` naming a folder or pattern that yields no image. Missing files are kept (reported later)."""
    images: list[Path] = []
    for item in items:
        is_dir, exists = _probe(item)
        if is_dir:
            try:
                found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            except OSError as err:
                raise HmhError(f"{path_text(item)}: cannot list the folder ({err.strerror or err})") from None
            if not found:
                raise HmhError(f"{item}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
            images += found
        elif not exists and glob.has_magic(str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item)) if Path(p).is_file())
            if not found:
                raise HmhError(f"{item}: no file matches this pattern")
            images += found
        else:
            images.append(item)
    return images


def _probe(path: Path) -> tuple[bool, bool]:
    """Whether ``path`` is a folder and whether it exists; both False where it cannot be told (a parent that
    cannot be read: reading the path as an image then names it)."""
    try:
        return path.is_dir(), path.exists()
    except OSError:
        return False, False


def _row_box(row: dict, where: str) -> tuple[float, float, float, float]:
    try:
        if any(isinstance(row[key], bool) for key in BOX_KEYS):  # JSON true would read as 1
            raise TypeError
        box = tuple(float(row[key]) for key in BOX_KEYS)
    except KeyError as err:
        raise BoxesError(f"{where}: missing {err.args[0]!r} (expected keys image, x, y, w, h[, hand])") from None
    except (TypeError, ValueError, OverflowError):
        raise BoxesError(f"{where}: x, y, w, h must be numbers, got "
                         f"{[row.get(key) for key in BOX_KEYS]}") from None
    if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise BoxesError(f"{where}: the box must be finite with w, h > 0, got {list(box)}")
    return box  # type: ignore[return-value]


def _unique_keys(path: Path) -> Callable[[list[tuple[str, object]]], dict]:
    """A ``json.loads`` ``object_pairs_hook`` refusing an object that gives a key twice (JSON keeps the last)."""
    def hook(pairs: list[tuple[str, object]]) -> dict:
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise BoxesError(f"{path}: key {key!r} given twice in one object")
        return dict(pairs)
    return hook


def _json_rows(path: Path, text: str) -> list[tuple[str, dict | str]]:
    try:
        rows = json.loads(text, object_pairs_hook=_unique_keys(path))
    except json.JSONDecodeError as err:
        raise BoxesError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise BoxesError(f"{path}: JSON nested too deeply for a list of boxes") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BoxesError(f"{path}: expected a JSON list of objects with keys image, x, y, w, h[, hand]")
    return [(f"{path} entry {number}", row) for number, row in enumerate(rows, start=1)]


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict | str]]:
    """As :func:`_load_rows`; a row with more or fewer fields than the header is the message saying so."""
    reader, rows = csv.DictReader(text.splitlines()), []
    try:  # csv.Error: e.g. a field over csv.field_size_limit() (128 KiB); no box is that long
        header = reader.fieldnames
        if not header or "image" not in [name.strip() for name in header]:
            raise BoxesError(f"{path}: the first line must be the header image,x,y,w,h[,hand]")
        reader.fieldnames = [name.strip() for name in header]
        twice = sorted({name for name in reader.fieldnames if reader.fieldnames.count(name) > 1})
        if twice:
            raise BoxesError(f"{path}: the header names column(s) {', '.join(map(repr, twice))} twice")
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row or None in row.values():  # more or fewer fields than the header
                fields = len(reader.fieldnames) + len(row.get(None, [])) - list(row.values()).count(None)
                rows.append((where, f"{where}: {fields} field(s), the header has {len(reader.fieldnames)}"))
            else:
                rows.append((where, row))
    except csv.Error as err:
        raise BoxesError(f"{path} line {reader.line_num + 1}: not a boxes row ({err})") from None  # not yet counted
    return rows


def _load_rows(path: Path) -> list[tuple[str, dict | str]]:
    """``(where, row)`` per row of a boxes file (``where``: ``FILE line N`` or ``FILE entry N``; ``row`` a dict,
    or the message of a CSV row that cannot be one); raises
    :class:`BoxesError` for an unreadable or malformed file, unknown columns or keys, or a file without rows."""
    if path.exists() and not path.is_file():  # a named pipe would block the read
        raise BoxesError(f"{path}: not a regular file")
    if path.suffix.lower() not in (".csv", ".json"):
        raise BoxesError(f"{path}: a boxes file must be .csv or .json")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no part of the first key
    except (OSError, UnicodeDecodeError) as err:
        raise BoxesError(f"{path}: cannot read the boxes file ({err})") from None
    rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
    unknown = sorted({str(key) for _, row in rows if isinstance(row, dict) for key in row if key not in KEYS})
    if unknown:
        raise BoxesError(f"{path}: unknown column(s) or key(s) {', '.join(map(repr, unknown))}; expected image, "
                         "x, y, w, h[, hand]")
    if not rows:
        raise BoxesError(f"{path}: holds no rows")
    return rows


def _row_image(row: dict, where: str, folder: Path) -> Path:
    """The image file of a boxes row (relative to ``folder``), or raise :class:`BoxesError` naming ``where``."""
    if not row.get("image"):
        raise BoxesError(f"{where}: missing 'image'")
    if not isinstance(row["image"], str):
        raise BoxesError(f"{where}: image must be a file name, got {row['image']!r}")
    image = Path(row["image"])
    image = image if image.is_absolute() else folder / image
    try:
        if not image.is_file():
            raise BoxesError(f"{where}: image {path_text(image)} " + (
                "is not a regular file" if image.exists() else "not found"))
    except OSError as err:
        raise BoxesError(f"{where}: image {path_text(image)}: {err.strerror or err}") from None
    return image


def read_boxes(path: Path, default_left: bool) -> tuple[list[tuple[Path, tuple, bool, str]], list[str]]:
    """``(image, bbox, is_left, where)`` per good row of the boxes file ``path`` (``where``: ``FILE line N`` or
    ``FILE entry N``), and one message per bad row (module docstring). Raises :class:`BoxesError` when the file
    as a whole is unusable."""
    good, bad = [], []
    for where, row in _load_rows(path):
        try:
            if isinstance(row, str):
                raise BoxesError(row)
            image = _row_image(row, where, path.parent)
            hand = row.get("hand")
            if hand is not None and not isinstance(hand, str):
                raise BoxesError(f"{where}: hand must be right or left, got {hand!r}")
            hand = (hand or HANDS[int(default_left)]).strip().lower()
            if hand not in HANDS:
                raise BoxesError(f"{where}: hand must be right or left, got {row.get('hand')!r}")
            good.append((image, _row_box(row, where), hand == "left", where))
        except BoxesError as err:
            bad.append(str(err))
    return good, bad


def plan_jobs(images: list[Path], boxes: Path | None, out: Path, bbox: tuple | None, default_left: bool
              ) -> tuple[list[Job], list[str]]:
    """The jobs of one ``hmh predict`` call (module docstring) and the messages of the boxes file's bad rows."""
    rows, bad = read_boxes(boxes, default_left) if boxes is not None else ([], [])
    planned: dict[tuple[Path, bool], tuple[Path, tuple | None, str]] = {}
    for image, box, is_left, where in rows:
        key = (real_path(image), is_left)
        if key in planned:
            bad.append(f"{where}: {path_text(image)} ({HANDS[int(is_left)]} hand) has an earlier row; the first is "
                       "used")
            continue
        planned[key] = (image, box, where)
    in_boxes = {path for path, _ in planned}
    for image in images:
        key = (real_path(image), default_left)
        if key[0] not in in_boxes and key not in planned:
            planned[key] = (image, bbox, "--bbox")
    hands: dict[Path, int] = {}
    for path, _ in planned:
        hands[path] = hands.get(path, 0) + 1
    jobs = [Job(image, box, is_left, out / (prediction_name(image) + (f"-{HANDS[int(is_left)]}" if hands[path] > 1
                                                                       else "")), where)
            for (path, is_left), (image, box, where) in planned.items()]
    return jobs, bad
