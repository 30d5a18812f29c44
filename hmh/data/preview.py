"""A contact sheet of a BlurHand root (real or synthetic): blurred images with past/current/future joints drawn.

Draws from the annotation JSONs directly (not from the dataset reader's index), so it checks the files themselves:
joints come from ``joint_3d`` and are projected with the written cameras into the middle frame's image. A root the
reader refuses, or one holding a non-finite annotation value, is refused first with the reader's one-line error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from hmh.errors import HmhError

if TYPE_CHECKING:
    from PIL import Image

# InterHand order per hand: bones from the wrist (20) out along each finger
BONES = [(20, 3), (3, 2), (2, 1), (1, 0), (20, 7), (7, 6), (6, 5), (5, 4), (20, 11), (11, 10), (10, 9), (9, 8),
         (20, 15), (15, 14), (14, 13), (13, 12), (20, 19), (19, 18), (18, 17), (17, 16)]
COLOURS = {"past": (40, 120, 255), "current": (60, 220, 60), "future": (255, 60, 40)}
MAX_SAMPLES = 256
MIN_TILE, MAX_TILE = 16, 1024
MAX_SHEET_SIDE = 8192  # pixels: a sheet of at most 8192 x 8192 RGB (192 MiB in memory)
# numpy and PIL are imported where used: ``hmh data preview --help`` reads the bounds above without them


class PreviewError(HmhError):
    """A BlurHand root that cannot be previewed; the message names the file or key."""


def _path(root: Path, split: str, name: str) -> Path:
    return root / "annotations" / split / f"BlurHand_{split}_{name}.json"


def _validate(root: Path, split: str) -> None:
    """Raise the reader's one-line error for a root it refuses (a missing or malformed file, key or value; a split
    without a usable sample), or a :class:`PreviewError` for its first non-finite annotation value."""
    from hmh.data.blurhand import BlurHandDataset
    from hmh.data.blurhand_index import load_index

    if not root.is_dir():
        raise PreviewError(f"{root}: BlurHand root folder not found")
    found = load_index(root, split)[0].non_finite
    if len(found):
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise PreviewError(f"{found[0]}{more}; `hmh data check {root}` lists the non-finite values")
    BlurHandDataset(root, split, image_size=1, augment=False)  # the reader's error for a split it cannot use


def check_size(n: int, tile: int) -> None:
    """Raise :class:`PreviewError` unless ``1 <= n <= MAX_SAMPLES``, ``MIN_TILE <= tile <= MAX_TILE`` and the
    sheet of ``n`` cells (a square-ish grid) is at most ``MAX_SHEET_SIDE`` px a side."""
    if not 1 <= n <= MAX_SAMPLES:
        raise PreviewError(f"--n must be between 1 and {MAX_SAMPLES}, got {n}")
    if not MIN_TILE <= tile <= MAX_TILE:
        raise PreviewError(f"--tile must be between {MIN_TILE} and {MAX_TILE} pixels, got {tile}")
    side = math.ceil(math.sqrt(n)) * tile
    if side > MAX_SHEET_SIDE:
        raise PreviewError(f"--n {n} with --tile {tile} makes a {side} px wide sheet, more than {MAX_SHEET_SIDE}; "
                           "lower --n or --tile")


def contact_sheet(root: str | Path, split: str = "test", n: int = 16, tile: int = 256) -> Image.Image:
    """Up to ``n`` samples (evenly spread over the split) on a grid of ``tile`` px cells (bounds:
    :func:`check_size`).

    Joints: blue = past (``aid_list[0]``), green = current (middle), red = future (``aid_list[-1]``); only joints
    marked valid in each frame's annotation are drawn. A root the reader refuses raises its :class:`DatasetError`
    (file and key), a non-finite annotation value or an image that cannot be drawn a :class:`PreviewError`.
    """
    from hmh.data.blurhand_json import load_json  # numpy: not at import, so the CLI starts fast

    check_size(n, tile)
    root = Path(root)
    _validate(root, split)
    data, cameras, joints = (load_json(_path(root, split, name)) for name in ("data", "camera", "joint_3d"))
    try:
        return _draw_sheet(root, split, n, tile, data, cameras, joints)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise PreviewError(f"{root / 'annotations' / split}: malformed BlurHand annotations ({type(err).__name__}: "
                           f"{err}); `hmh data check {root}` names the file and key") from None


def _draw_sheet(root: Path, split: str, n: int, tile: int, data: dict, cameras: dict, joints: dict) -> Image.Image:
    """:func:`contact_sheet` from the parsed ``_data``, ``_camera`` and ``_joint_3d`` JSONs."""
    import numpy as np
    from PIL import Image, ImageDraw

    from hmh.data.blurhand import load_image

    images = {image["id"]: image for image in data["images"]}
    anns = {ann["id"]: ann for ann in data["annotations"]}
    samples = [ann for ann in data["annotations"] if ann["is_middle"]]
    if not samples:
        raise PreviewError(f"{root}: split {split!r} has no is_middle annotation")
    picks = [samples[i] for i in np.linspace(0, len(samples) - 1, min(n, len(samples))).round().astype(int)]
    cols = int(np.ceil(np.sqrt(len(picks))))
    sheet = Image.new("RGB", (cols * tile, int(np.ceil(len(picks) / cols)) * tile), (0, 0, 0))
    for i, ann in enumerate(picks):
        image = images[ann["image_id"]]
        path = root / "blur_images" / split / image["file_name"]
        picture = load_image(path)  # a BadImageError naming the file
        scale = tile / max(picture.size)
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.BICUBIC)
        cam = cameras[str(image["capture"])]
        name = str(image["camera"])
        rot, campos = np.array(cam["camrot"][name]), np.array(cam["campos"][name])
        focal, princpt = np.array(cam["focal"][name]), np.array(cam["princpt"][name])
        draw = ImageDraw.Draw(picture)
        for label, aid in (("past", ann["aid_list"][0]), ("current", ann["id"]), ("future", ann["aid_list"][-1])):
            frame = images[anns[aid]["image_id"]]
            world = np.array(joints[str(frame["capture"])][str(frame["frame_idx"])]["world_coord"])  # (42, 3) mm
            valid = np.array(anns[aid]["joint_valid"], dtype=bool)
            cam_pts = (world - campos) @ rot.T
            uv = (cam_pts[:, :2] / np.maximum(cam_pts[:, 2:], 1e-6) * focal + princpt + 0.5) * scale - 0.5  # (42, 2)
            for offset in (0, 21):
                for a, b in BONES:
                    if valid[offset + a] and valid[offset + b]:
                        draw.line([tuple(uv[offset + a]), tuple(uv[offset + b])], fill=COLOURS[label], width=2)
        sheet.paste(picture, ((i % cols) * tile, (i // cols) * tile))
    return sheet
