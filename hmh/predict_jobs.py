"""Which images ``hmh predict`` runs on, with which box and hand, into which folder (:func:`plan_jobs`).

Images are given as files, folders (their image files, sorted, not recursive) or glob patterns (``'img/*.jpg'``,
expanded here when the shell did not), and/or as the rows of a boxes file (``--boxes``):

- CSV with a header row ``image,x,y,w,h[,hand]``, or JSON: a list of objects with those keys; UTF-8, with or
  without a byte-order mark;
- ``image`` relative to the boxes file's folder (or absolute); ``x y w h`` the hand's box in the pixels of the
  upright image (its EXIF orientation applied);
  ``hand`` ``right``/``left`` (default: ``--hand``). An image may have one row per hand.

A bad row (a missing or non-numeric value, an empty box, an unknown hand, a missing image, a repeated image and
hand) is reported as ``FILE line N`` (CSV; line 1 is the header) or ``FILE entry N`` (JSON, from 1) and skipped;
the other rows still run. An image given as a file and in the
boxes file runs once, with its row's box. Folders: :func:`hmh.predict.prediction_name`, with ``-left``/``-right``
appended for an image that has rows for both hands.
"""

from __future__ import annotations

import csv
import glob
import json
import math
from dataclasses import dataclass
from pathlib import Path

from hmh.errors import HmhError
from hmh.predict import prediction_name

__all__ = ["IMAGE_SUFFIXES", "BoxesError", "Job", "expand_images", "plan_jobs", "read_boxes"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
HANDS = ("right", "left")
BOX_KEYS = ("x", "y", "w", "h")


class BoxesError(HmhError):
    """A boxes file, or a row of it, ``hmh predict`` cannot use; the message names the file and the row."""


@dataclass(frozen=True)
class Job:
    """One prediction: ``image``, its ``bbox (x, y, w, h)`` or None (the image is a crop), the hand, the folder."""

    image: Path
    bbox: tuple[float, float, float, float] | None
    is_left: bool
    folder: Path


def expand_images(items: list[Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted), glob patterns as their matches (sorted); raises
    :class:`HmhError` naming a folder or pattern that yields no image. Missing files are kept (reported later)."""
    images: list[Path] = []
    for item in items:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise HmhError(f"{item}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
            images += found
        elif not item.exists() and glob.has_magic(str(item)):
            found = sorted(Path(p) for p in glob.glob(str(item)) if Path(p).is_file())
            if not found:
                raise HmhError(f"{item}: no file matches this pattern")
            images += found
        else:
            images.append(item)
    return images


def _row_box(row: dict, where: str) -> tuple[float, float, float, float]:
    try:
        box = tuple(float(row[key]) for key in BOX_KEYS)
    except KeyError as err:
        raise BoxesError(f"{where}: missing {err.args[0]!r} (expected keys image, x, y, w, h[, hand])") from None
    except (TypeError, ValueError):
        raise BoxesError(f"{where}: x, y, w, h must be numbers, got "
                         f"{[row.get(key) for key in BOX_KEYS]}") from None
    if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise BoxesError(f"{where}: the box must be finite with w, h > 0, got {list(box)}")
    return box  # type: ignore[return-value]


def _load_rows(path: Path) -> list[dict]:
    """The rows of a boxes file as dicts; raises :class:`BoxesError` for an unreadable or malformed file."""
    if path.exists() and not path.is_file():  # a named pipe would block the read
        raise BoxesError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is no part of the first key
    except (OSError, UnicodeDecodeError) as err:
        raise BoxesError(f"{path}: cannot read the boxes file ({err})") from None
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise BoxesError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise BoxesError(f"{path}: expected a JSON list of objects with keys image, x, y, w, h[, hand]")
        return rows
    if path.suffix.lower() != ".csv":
        raise BoxesError(f"{path}: a boxes file must be .csv or .json")
    reader, rows = csv.DictReader(text.splitlines()), []
    try:  # csv.Error: e.g. a field over csv.field_size_limit() (128 KiB); no box is that long
        header = reader.fieldnames
        if not header or "image" not in header:
            raise BoxesError(f"{path}: the first line must be the header image,x,y,w,h[,hand]")
        for row in reader:
            rows.append(row)
    except csv.Error as err:
        line = 1 if reader.line_num == 0 else len(rows) + 2  # the header read or not
        raise BoxesError(f"{path} line {line}: not a boxes row ({err})") from None
    return rows


def read_boxes(path: Path, default_left: bool) -> tuple[list[tuple[Path, tuple, bool]], list[str]]:
    """``(image, bbox, is_left)`` per good row of the boxes file ``path``, and one message per bad row (module
    docstring). Raises :class:`BoxesError` when the file as a whole is unusable."""
    good, bad = [], []
    is_json = path.suffix.lower() == ".json"
    for number, row in enumerate(_load_rows(path)):
        where = f"{path} entry {number + 1}" if is_json else f"{path} line {number + 2}"  # CSV line 1: the header
        try:
            if not row.get("image"):
                raise BoxesError(f"{where}: missing 'image'")
            image = Path(str(row["image"]))
            image = image if image.is_absolute() else path.parent / image
            if not image.is_file():
                raise BoxesError(f"{where}: image {image} " + ("is not a regular file" if image.exists()
                                                                 else "not found"))
            hand = str(row.get("hand") or HANDS[int(default_left)]).strip().lower()
            if hand not in HANDS:
                raise BoxesError(f"{where}: hand must be right or left, got {row.get('hand')!r}")
            good.append((image, _row_box(row, where), hand == "left"))
        except BoxesError as err:
            bad.append(str(err))
    return good, bad


def plan_jobs(images: list[Path], boxes: Path | None, out: Path, bbox: tuple | None, default_left: bool
              ) -> tuple[list[Job], list[str]]:
    """The jobs of one ``hmh predict`` call (module docstring) and the messages of the boxes file's bad rows."""
    rows, bad = read_boxes(boxes, default_left) if boxes is not None else ([], [])
    planned: dict[tuple[Path, bool], tuple[Path, tuple | None]] = {}
    for image, box, is_left in rows:
        key = (image.resolve(), is_left)
        if key in planned:
            bad.append(f"{boxes}: {image} ({HANDS[int(is_left)]} hand) has more than one row; the first is used")
            continue
        planned[key] = (image, box)
    in_boxes = {path for path, _ in planned}
    for image in images:
        key = (image.resolve(), default_left)
        if image.resolve() not in in_boxes and key not in planned:
            planned[key] = (image, bbox)
    hands: dict[Path, int] = {}
    for path, _ in planned:
        hands[path] = hands.get(path, 0) + 1
    jobs = [Job(image, box, is_left, out / (prediction_name(image) + (f"-{HANDS[int(is_left)]}" if hands[path] > 1
                                                                       else "")))
            for (path, is_left), (image, box) in planned.items()]
    return jobs, bad
