"""Run a trained checkpoint on blurred images: the K hypotheses, their rewards, the selected top-n and the final
hand sequence (past, current, future), as :class:`Prediction` (written to files by :mod:`hmh.predict.files`).

The crop is BlurHandNet's: a hand box ``(x, y, w, h)`` in image pixels is clipped to the image, made square about
its centre and enlarged x1.25 (:func:`hmh.data.transforms.square_bbox`, as the BlurHand reader does with its
boxes); without a box the image is taken as a hand crop already (the square of side ``max(W, H)`` about its
centre, not enlarged). Boxes are in the pixels of the upright image: :func:`load_photo` applies the EXIF
orientation first. Left hands are mirrored into the right-hand model, as in training, and un-mirrored in every
output (3D x negated, 2D back in the original image). A crop that covers less than :data:`MIN_HAND_PIXELS` pixels
of its image (in width or height) is refused: too few pixels to hold a hand; so is a box of which less than
:data:`MIN_BOX_INSIDE` lies inside its image (a box in other units, or another image's).

Outputs are wrist-relative 3D joints and vertices in the camera frame, and 2D joints in original image pixels
(the hypotheses' MANO joints projected with the shared per-frame camera). The final sequence is the method's:
the top-n hypotheses by reward, past/future aligned to the top-1, averaged. A generation-stage checkpoint has no
selector; its final sequence is then the mean of all K (``final_source`` says which). When the averaged
hypotheses are more than :data:`AVERAGE_SPREAD_LIMIT_MM` apart (:meth:`Prediction.average_unreliable`), their
average need not look like a hand.

Each image's files go to the folder :func:`prediction_name` names, derived from the image's resolved path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from hmh import geometry
from hmh.data.transforms import (
    Augmentation,
    apply_affine,
    crop_affine,
    invert_affine,
    mirror_points,
    square_bbox,
    warp_image,
)
from hmh.errors import HmhError
from hmh.eval.metrics import aggregate, mean_of_k
from hmh.models.checkpoint import LoadedModels
from hmh.train.loop import infer

__all__ = ["AVERAGE_SPREAD_LIMIT_MM", "FRAMES", "MIN_HAND_PIXELS", "HandCrop", "PredictError", "Prediction",
           "MIN_BOX_INSIDE", "check_bbox", "crop_hand", "load_photo", "path_text", "predict", "prediction_name",
           "real_path"]

log = logging.getLogger(__name__)

FRAMES = ("past", "current", "future")
MM = 1000.0
MIN_HAND_PIXELS = 32  # the smallest model input side (model.image_size >= 32), one cell of the backbone's stride 32
MIN_BOX_INSIDE = 0.5  # a box more than half outside its image is a wrong box (other units, another image's box)
# Averaged hypotheses whose joints lie on average more than this from their mean (in some frame) average into a
# hand with shortened, bent-in fingers: half a finger segment (~20 mm) apart is already two different poses.
AVERAGE_SPREAD_LIMIT_MM = 20.0


class PredictError(HmhError):
    """An input ``hmh predict`` cannot use (a box outside its image, ...); the message names the file."""


@dataclass
class HandCrop:
    """The model's input for one image: ``image (3, S, S)`` in [0, 1]; ``affine (2, 3)`` original image pixels ->
    crop pixels (mirrored for a left hand); ``box (4,)`` the square crop box ``(x, y, w, h)`` in image pixels."""

    image: torch.Tensor
    affine: np.ndarray
    box: np.ndarray
    is_left: bool


def real_path(path: str | os.PathLike) -> Path:
    """``path`` absolute, with every symbolic link resolved as far as it resolves (a link loop or a missing target
    is kept as it is: reading the file then names it)."""
    return Path(os.path.realpath(path))


def path_text(path: str | os.PathLike) -> str:
    """``path`` as UTF-8 text for messages and output files: a file-name byte that is not UTF-8 is written as
    ``\\xNN`` (e.g. ``caf\\xe9.png`` for a Latin-1 name)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def prediction_name(image: str | os.PathLike) -> str:
    """The name of ``image``'s folder under ``hmh predict --out``: ``<stem>-<hash>``, the file name without its
    extension (characters other than letters, digits, ``.``, ``_`` and ``-`` as ``_``, leading dots dropped, at
    most 64) and the first 12 hex digits of the SHA-256 of its resolved absolute path. Different files never share
    a folder; the same file, however it is named (relative path, symlink), always gets the same one, so a rerun
    replaces its own results only. E.g. ``img/a/hand.jpg`` -> ``hand-<12 hex>``, ``img/b/hand.jpg`` -> ``hand-<12
    other hex>``."""
    path = Path(image)
    digest = hashlib.sha256(os.fsencode(real_path(path))).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip(".")[:64]
    return f"{stem or 'image'}-{digest}"


def check_bbox(bbox: Sequence[float]) -> None:
    """Raise :class:`PredictError` unless ``bbox`` is ``X Y W H``, finite, with ``W, H > 0``."""
    if len(bbox) != 4 or not np.all(np.isfinite(bbox)) or bbox[2] <= 0 or bbox[3] <= 0:
        raise PredictError(f"--bbox must be X Y W H, finite, with W, H > 0, got {list(bbox)}")


def _to_rgb8(image: Image.Image, source: str) -> Image.Image:
    """``image`` as 8-bit RGB: 16-bit values scaled by 255/65535, 32-bit float ones in [0, 1] by 255; a 32-bit
    integer image, or a float one outside [0, 1], raises :class:`PredictError` (its white level is unknown)."""
    if image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)  # (H, W)
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)  # (H, W)
        if not (np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0):
            raise PredictError(f"{source}: a 32-bit float image with values outside [0, 1] (from {pixels.min():g} "
                               f"to {pixels.max():g}); hmh predict reads 8- and 16-bit images and floats in [0, 1]")
        pixels = pixels * 255.0
    elif image.mode == "I":
        raise PredictError(f"{source}: a 32-bit integer image, whose white level is unknown; hmh predict reads 8- "
                           "and 16-bit images and floats in [0, 1] (convert it)")
    else:
        return image.convert("RGB")
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).convert("RGB")  # I;16S: >= 0


def load_photo(path: str | os.PathLike) -> Image.Image:
    """The image file ``path`` upright (its EXIF orientation applied) as 8-bit RGB (:func:`_to_rgb8`); of an
    animated or multi-page file its first frame, said in a warning, as is a size over PIL's
    ``Image.MAX_IMAGE_PIXELS`` (sizes over twice that are refused as decompression bombs). Raises
    :class:`PredictError` naming ``path`` for a missing file, a path that is not a regular file (a folder, a
    named pipe, a device: never opened, so nothing blocks) or an undecodable image."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise PredictError(f"{path_text(path)}: " + ("image file not found" if isinstance(err, FileNotFoundError)
                                          else f"cannot read the image ({err.strerror or err})")) from None
    if not stat.S_ISREG(mode):
        raise PredictError(f"{path_text(path)}: not a regular file (a folder, named pipe or device); hmh predict "
                           "reads image files only")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                frames = getattr(image, "n_frames", 1)
                photo = _to_rgb8(ImageOps.exif_transpose(image), path_text(path))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise PredictError(f"{path_text(path)}: unreadable or corrupt image ({err})") from None
    if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
        log.warning("%s: %dx%d pixels, over PIL's limit of %d for images of unknown origin; read anyway",
                    path_text(path), *photo.size, Image.MAX_IMAGE_PIXELS)
    if frames > 1:
        log.warning("%s: %d frames (animated or multi-page); only the first is predicted", path_text(path), frames)
    return photo


def _inside(start: float, length: float, size: int) -> float:
    """The share of the interval ``[start, start + length]`` inside ``[0, size]``."""
    if start >= 0.0 and start + length <= size:
        return 1.0  # also for a length below float resolution at start
    return max(0.0, min(start + length, size) - max(start, 0.0)) / length


def _check_inside(bbox: Sequence[float], width: int, height: int, where: str) -> None:
    """Raise :class:`PredictError` naming ``where`` unless at least :data:`MIN_BOX_INSIDE` of the area of
    ``bbox (x, y, w, h)`` (finite, ``w, h > 0``) lies inside the ``width x height`` image."""
    x, y, w, h = (float(v) for v in bbox)
    if x >= width or y >= height or x + w <= 0.0 or y + h <= 0.0:
        raise PredictError(f"{where} lies outside the {width}x{height} image")
    share = _inside(x, w, width) * _inside(y, h, height)  # never w * h: a huge box would overflow
    if share < MIN_BOX_INSIDE:
        raise PredictError(f"{where} lies mostly outside the {width}x{height} image (only {100 * share:.2g}% of it "
                           "inside): a box in other units or of another image?")


def crop_hand(image: Image.Image, size: int, bbox: Sequence[float] | None = None, is_left: bool = False,
              source: str = "image", box_name: str = "--bbox") -> HandCrop:
    """Crop ``image`` for a model of input side ``size`` (module docstring). ``bbox (x, y, w, h)`` or None;
    raises :class:`PredictError` naming ``source`` and ``box_name`` (where the box came from) when the box is
    invalid, lies more than half outside the image, or the crop covers less than :data:`MIN_HAND_PIXELS` pixels
    of the image in width or height."""
    width, height = image.size
    if bbox is None:
        side = float(max(width, height))
        box = np.array([(width - side) / 2.0, (height - side) / 2.0, side, side])
    else:
        check_bbox(bbox)
        where = f"{source}: {box_name} {list(bbox)}"
        _check_inside(bbox, width, height, where)
        box, ok = square_bbox(np.asarray(bbox, dtype=np.float64), width, height)
        if not ok:
            raise PredictError(f"{where} is less than one pixel wide or high inside the {width}x{height} image")
    x, y, side = box[0], box[1], box[2]
    covered_w, covered_h = min(x + side, width) - max(x, 0.0), min(y + side, height) - max(y, 0.0)
    if min(covered_w, covered_h) < MIN_HAND_PIXELS:
        raise PredictError(f"{source}: too small to hold a hand crop: the crop covers {covered_w:.0f}x"
                           f"{covered_h:.0f} pixels of the {width}x{height} image; hmh predict needs at least "
                           f"{MIN_HAND_PIXELS}x{MIN_HAND_PIXELS}"
                           + (f" (a larger {box_name}?)" if bbox is not None else ""))
    affine = crop_affine(box, size, Augmentation(flip=is_left), width)
    return HandCrop(warp_image(image, affine, size), affine, box, is_left)


@dataclass
class Prediction:
    """One image's prediction, un-mirrored. 3D in metres, wrist-relative, camera frame; 2D in image pixels.

    - ``joints (K, T, J, 3)``, ``vertices (K, T, V, 3)``, ``joints_2d (K, T, J, 2)``: every hypothesis;
    - ``reward (K,)`` or None (a generation-stage checkpoint); ``selected (n,)`` the averaged hypotheses, best
      first; ``swapped (n,)`` whose past/future were exchanged to match the top-1;
    - ``final_joints (T, J, 3)``, ``final_vertices (T, V, 3)``, ``final_joints_2d (T, J, 2)``; ``final_source``:
      ``"selected top-n"`` or ``"mean of K"``;
    - ``crop_joints_2d (K, T, J, 2)``: the hypotheses in crop pixels (as the model sees the crop, mirrored for a
      left hand);
    - ``camera (T, 3)``: the wrist's translation per frame (metres, camera frame, un-mirrored): ``vertices +
      camera`` is the scene; ``crop_intrinsics (4,)``: fx, fy, cx, cy of the model's virtual camera, crop pixels;
    - ``pose (K, T, 48)``, ``betas (T, 10)``: the right-hand MANO parameters the model predicted for the crop it
      saw (mirrored for a left hand): axis-angle in radians relative to MANO's mean pose (``flat_hand_mean=False``),
      global orientation first; MANO of ``pose[k, t]`` and ``betas[t]``, made wrist-relative and, for a left hand,
      with x negated, gives ``joints[k, t]`` and ``vertices[k, t]``;
    - ``is_left``: whether the hand is a left one.
    """

    joints: np.ndarray
    vertices: np.ndarray
    joints_2d: np.ndarray
    reward: np.ndarray | None
    selected: np.ndarray
    swapped: np.ndarray
    final_joints: np.ndarray
    final_vertices: np.ndarray
    final_joints_2d: np.ndarray
    final_source: str
    crop_joints_2d: np.ndarray
    camera: np.ndarray
    crop_intrinsics: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    is_left: bool

    def spread_mm(self) -> np.ndarray:
        """``(T,)`` how far apart the K hypotheses are: the mean per-joint distance to their mean, mm, per frame
        (0 for K = 1)."""
        return _spread_mm(self.joints)

    def averaged_joints(self) -> np.ndarray:
        """``(n, T, J, 3)`` the hypotheses the final sequence averages (``selected``), past and future exchanged
        where ``swapped``: their mean is ``final_joints``."""
        chosen = self.joints[self.selected]  # (n, T, J, 3)
        return np.where(self.swapped[:, None, None, None].astype(bool), chosen[:, ::-1], chosen)

    def averaged_spread_mm(self) -> np.ndarray:
        """``(T,)`` how far apart the averaged hypotheses are (as :meth:`spread_mm`; 0 for n = 1)."""
        return _spread_mm(self.averaged_joints())

    def average_unreliable(self) -> bool:
        """Whether the averaged hypotheses are more than :data:`AVERAGE_SPREAD_LIMIT_MM` apart in some frame."""
        return bool(self.averaged_spread_mm().max() > AVERAGE_SPREAD_LIMIT_MM)


def _spread_mm(joints: np.ndarray) -> np.ndarray:
    """``joints (N, T, J, 3)`` metres -> ``(T,)`` their mean per-joint distance to their mean, mm."""
    return np.linalg.norm(joints - joints.mean(axis=0), axis=-1).mean(axis=(0, 2)) * MM


def _unmirror(points: torch.Tensor, is_left: torch.Tensor) -> torch.Tensor:
    """``points (B, ..., 3)`` with x negated where ``is_left (B,)`` (:func:`mirror_points` is its own inverse)."""
    return torch.where(is_left.reshape(-1, *([1] * (points.dim() - 1))), mirror_points(points), points)


@torch.no_grad()
def predict(models: LoadedModels, crops: Sequence[HandCrop], device: torch.device | str = "cpu"
            ) -> list[Prediction]:
    """The :class:`Prediction` of each crop, in one batch through the generator (and the selector, when the
    checkpoint has one). ``models`` from :func:`hmh.models.checkpoint.models_from_checkpoint` on ``device``."""
    if not crops:
        return []
    generator, selector = models.generator.eval(), None if models.selector is None else models.selector.eval()
    images = torch.stack([c.image for c in crops]).to(device)  # (B, 3, S, S)
    # the one inference path (hmh.train.loop.infer): train.precision and memory format, as the search's cost times it
    out, reward = infer(generator, selector, {"image": images}, models.config, torch.device(device))
    joints, vertices = out.joints.float(), out.vertices.float()  # (B, K, T, J, 3), (B, K, T, V, 3)
    reward = None if reward is None else reward.float()  # (B, K)
    if reward is not None:
        final, source = aggregate(joints, reward, models.config.selection.top_n, vertices), "selected top-n"
    else:  # the evaluation's selection-free stand-in
        final, source = mean_of_k(joints, vertices), "mean of K"
    # final: joints (B, T, J, 3), verts (B, T, V, 3)
    focal, princpt = generator.focal.float(), generator.princpt.float()
    final_2d = geometry.project(final.joints + out.camera.float()[:, :, None], focal, princpt)  # (B, T, J, 2)
    is_left = torch.tensor([c.is_left for c in crops], device=images.device)
    rows = {name: value.detach().cpu().double().numpy() for name, value in {
        "joints": _unmirror(joints, is_left), "vertices": _unmirror(vertices, is_left),
        "crop_2d": out.joints_2d.float(), "final_joints": _unmirror(final.joints, is_left),
        "final_vertices": _unmirror(final.verts, is_left), "final_2d": final_2d,
        "camera": _unmirror(out.camera.float(), is_left), "pose": out.pose.float(), "betas": out.shape.float()}.items()}
    intrinsics = torch.cat([focal, princpt]).cpu().double().numpy()  # (4,)
    predictions = []
    for i, crop in enumerate(crops):
        to_image = invert_affine(crop.affine)  # crop -> image pixels
        predictions.append(Prediction(
            joints=rows["joints"][i], vertices=rows["vertices"][i],
            joints_2d=apply_affine(rows["crop_2d"][i], to_image),
            reward=None if reward is None else reward[i].cpu().double().numpy(),
            selected=final.indices[i].cpu().numpy(), swapped=final.swapped[i].cpu().numpy(),
            final_joints=rows["final_joints"][i], final_vertices=rows["final_vertices"][i],
            final_joints_2d=apply_affine(rows["final_2d"][i], to_image), final_source=source,
            crop_joints_2d=rows["crop_2d"][i], camera=rows["camera"][i], crop_intrinsics=intrinsics,
            pose=rows["pose"][i], betas=rows["betas"][i], is_left=crop.is_left,
        ))
    return predictions
