"""Run a trained checkpoint on blurred images: the K hypotheses, their rewards, the selected top-n and the final
hand sequence (past, current, future), as :class:`Prediction` and as files (:func:`write_prediction`).

The crop is BlurHandNet's: a hand box ``(x, y, w, h)`` in image pixels is clipped to the image, made square about
its centre and enlarged x1.25 (:func:`hmh.data.transforms.square_bbox`, as the BlurHand reader does with its
boxes); without a box the image is taken as a hand crop already (the square of side ``max(W, H)`` about its
centre, not enlarged). Left hands are mirrored into the right-hand model, as in training, and un-mirrored in
every output (3D x negated, 2D back in the original image).

Outputs are wrist-relative 3D joints and vertices in the camera frame, and 2D joints in original image pixels
(the hypotheses' MANO joints projected with the shared per-frame camera). The final sequence is the method's:
the top-n hypotheses by reward, past/future aligned to the top-1, averaged. A generation-stage checkpoint has no
selector; its final sequence is then the mean of all K (``final_source`` says which).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hmh import atomic, geometry
from hmh.checkpoint import LoadedModels
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
from hmh.metrics import aggregate, mean_of_k
from hmh.obj import write_obj
from hmh.visualize import draw_panels

__all__ = ["FRAMES", "HandCrop", "PredictError", "Prediction", "crop_hand", "predict", "write_prediction"]

FRAMES = ("past", "current", "future")
MM = 1000.0


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


def crop_hand(image: Image.Image, size: int, bbox: Sequence[float] | None = None, is_left: bool = False,
              source: str = "image") -> HandCrop:
    """Crop ``image`` for a model of input side ``size`` (module docstring). ``bbox (x, y, w, h)`` or None;
    raises :class:`PredictError` naming ``source`` when the box is empty or lies outside the image."""
    width, height = image.size
    if bbox is None:
        side = float(max(width, height))
        box = np.array([(width - side) / 2.0, (height - side) / 2.0, side, side])
    else:
        if len(bbox) != 4 or not np.all(np.isfinite(bbox)) or bbox[2] <= 0 or bbox[3] <= 0:
            raise PredictError(f"{source}: --bbox must be X Y W H with W, H > 0, got {list(bbox)}")
        box, ok = square_bbox(np.asarray(bbox, dtype=np.float64), width, height)
        if not ok:
            raise PredictError(f"{source}: --bbox {list(bbox)} lies outside the {width}x{height} image")
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
      left hand).
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


def _unmirror(points: torch.Tensor, is_left: torch.Tensor) -> torch.Tensor:
    """``points (B, ..., 3)`` with x negated where ``is_left (B,)`` (:func:`mirror_points` is its own inverse)."""
    return torch.where(is_left.reshape(-1, *([1] * (points.dim() - 1))), mirror_points(points), points)


@torch.no_grad()
def predict(models: LoadedModels, crops: Sequence[HandCrop], device: torch.device | str = "cpu"
            ) -> list[Prediction]:
    """The :class:`Prediction` of each crop, in one batch through the generator (and the selector, when the
    checkpoint has one). ``models`` from :func:`hmh.checkpoint.models_from_checkpoint` on ``device``."""
    if not crops:
        return []
    generator, selector = models.generator.eval(), models.selector
    images = torch.stack([c.image for c in crops]).to(device)  # (B, 3, S, S)
    out = generator(images)
    joints, vertices = out.joints.float(), out.vertices.float()  # (B, K, T, J, 3), (B, K, T, V, 3)
    reward = None if selector is None else selector.eval()(images, out).reward.float()  # (B, K)
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
        "final_vertices": _unmirror(final.verts, is_left), "final_2d": final_2d}.items()}
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
            crop_joints_2d=rows["crop_2d"][i],
        ))
    return predictions


def _mm(x: np.ndarray) -> list:
    return np.round(x * MM, 3).tolist()


def _px(x: np.ndarray) -> list:
    return np.round(x, 2).tolist()


def prediction_json(pred: Prediction, crop: HandCrop, image: str, checkpoint: str) -> dict:
    """The JSON document of ``pred``: 3D in mm (wrist-relative, camera frame), 2D in image pixels, MANO-21 joint
    order (wrist, thumb 1-4, index, middle, ring, pinky), frames past/current/future."""
    hypotheses = [{"index": k, "reward": None if pred.reward is None else round(float(pred.reward[k]), 6),
                   "joints_3d_mm": _mm(pred.joints[k]), "joints_2d_px": _px(pred.joints_2d[k])}
                  for k in range(len(pred.joints))]
    return {
        "image": image, "checkpoint": checkpoint, "hand": "left" if crop.is_left else "right",
        "crop_box_px": _px(crop.box), "frames": list(FRAMES), "joint_order": "MANO-21",
        "num_hypotheses": len(pred.joints), "final_source": pred.final_source,
        "selected": pred.selected.tolist(), "swapped": pred.swapped.astype(bool).tolist(),
        "final": {"joints_3d_mm": _mm(pred.final_joints), "joints_2d_px": _px(pred.final_joints_2d)},
        "hypotheses": hypotheses,
    }


def write_prediction(folder: Path, pred: Prediction, crop: HandCrop, faces: np.ndarray, image: str,
                     checkpoint: str) -> list[Path]:
    """Write one image's files into ``folder``, each atomically; returns their paths:
    ``prediction.json`` (:func:`prediction_json`), ``final_{past,current,future}.obj`` (the final meshes,
    metres, wrist-relative; faces wound outwards for either hand) and ``hypotheses.png`` (the crop; every
    hypothesis' current frame in grey, the selected ones in colour, the top-ranked one's past/current/future)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "prediction.json"]
    doc = prediction_json(pred, crop, image, checkpoint)
    atomic.write_text(paths[0], "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items())
                      + "\n}\n")  # one line per key
    wound = faces[:, ::-1] if crop.is_left else faces  # mirroring turns the right hand's faces inside out
    for t, frame in enumerate(FRAMES):
        paths.append(folder / f"final_{frame}.obj")
        write_obj(paths[-1], pred.final_vertices[t], wound, f"{image}: final {frame} ({pred.final_source})")
    selected = pred.selected.tolist() if pred.reward is not None else None
    panels = draw_panels(crop.image.numpy(), pred.crop_joints_2d, selected)
    paths.append(folder / "hypotheses.png")
    with atomic.atomic_path(paths[-1]) as tmp:
        Image.fromarray(panels).save(tmp, format="PNG")
    return paths
