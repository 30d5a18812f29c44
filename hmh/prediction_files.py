"""What ``hmh predict`` writes for a :class:`hmh.predict.Prediction`: per image a folder of files
(:func:`write_prediction`), and over all images one ``predictions.parquet`` (:func:`update_table`).

Per image (folder :func:`hmh.predict.prediction_name`):

- ``prediction.json`` (:func:`prediction_json`): every hypothesis' joints, the selection, the final sequence and
  how far to trust it (``confidence``: the hypotheses' spread, the rewards' spread, the checkpoint's training
  data);
- ``final_{past,current,future}.obj``: the final meshes (metres, wrist-relative);
- ``hypotheses.png``: 2D joints over the crop (:func:`hmh.visualize.draw_panels`);
- with ``pictures`` (:mod:`hmh.overlay`, needs EGL): ``overlay.png`` (the final meshes over the full photo),
  ``hypotheses_mesh.png`` (every hypothesis' mesh over the crop, with reward and rank), ``sequence.gif`` (past ->
  current -> future over the crop) and ``turntable.gif`` (the final current mesh turning).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from hmh import atomic, overlay
from hmh.config import DataConfig
from hmh.data.transforms import invert_affine
from hmh.obj import write_obj
from hmh.predict import FRAMES, MM, HandCrop, Prediction
from hmh.results import read_table, write_table
from hmh.visualize import draw_panels

__all__ = ["PICTURES", "TABLE", "TABLE_SCHEMA", "prediction_json", "prediction_rows", "training_data",
           "update_table", "write_prediction"]

PICTURES = ("overlay.png", "hypotheses_mesh.png", "sequence.gif", "turntable.gif")
TABLE = "predictions.parquet"
TABLE_SCHEMA = pa.schema([
    ("folder", pa.string()), ("image", pa.string()), ("hand", pa.string()), ("checkpoint", pa.string()),
    ("hypothesis", pa.int32()), ("reward", pa.float64()), ("rank", pa.int32()), ("selected_rank", pa.int32()),
    ("final_source", pa.string()), ("spread_mm", pa.float64()), ("reward_spread", pa.float64()),
    ("joints_3d_mm", pa.list_(pa.float32())), ("joints_2d_px", pa.list_(pa.float32())),
])
COLUMNS_HELP = ("one row per image and hypothesis: hypothesis index, reward, rank (1 = highest reward), "
                "selected_rank (0 = top-1 of the final, null = not selected), the image's spread_mm (current frame) "
                "and reward_spread; joints flattened (T=3 frames x 21 joints x 3 mm, or x 2 px)")


def training_data(data: DataConfig) -> tuple[str, bool]:
    """What a checkpoint was trained on, from its ``data`` config: a description and whether it is synthetic."""
    from hmh.data.synthetic import is_synthetic_root

    if is_synthetic_root(data.root):
        return "hmh's synthetic BlurHand-format data" + (f" ({data.root})" if data.root else ""), True
    return f"the BlurHand root {data.root}", False


def _mm(x: np.ndarray) -> list:
    return np.round(x * MM, 3).tolist()


def _px(x: np.ndarray) -> list:
    return np.round(x, 2).tolist()


def _reward_spread(pred: Prediction) -> float | None:
    """The standard deviation of one image's K rewards (None without a selector)."""
    return None if pred.reward is None else float(np.std(pred.reward))


def prediction_json(pred: Prediction, crop: HandCrop, image: str, checkpoint: str, trained_on: str) -> dict:
    """The JSON document of ``pred``: 3D in mm (wrist-relative, camera frame), 2D in image pixels, MANO-21 joint
    order (wrist, thumb 1-4, index, middle, ring, pinky), frames past/current/future; ``trained_on`` from
    :func:`training_data`."""
    hypotheses = [{"index": k, "reward": None if pred.reward is None else round(float(pred.reward[k]), 6),
                   "joints_3d_mm": _mm(pred.joints[k]), "joints_2d_px": _px(pred.joints_2d[k])}
                  for k in range(len(pred.joints))]
    spread = _reward_spread(pred)
    confidence = {
        "hypothesis_spread_mm": dict(zip(FRAMES, np.round(pred.spread_mm(), 3).tolist(), strict=True)),
        "reward_spread": None if spread is None else round(spread, 6),
        "reward_range": None if pred.reward is None else np.round([pred.reward.min(), pred.reward.max()], 6).tolist(),
        "training_data": trained_on,
    }
    return {
        "image": image, "checkpoint": checkpoint, "hand": "left" if crop.is_left else "right",
        "crop_box_px": _px(crop.box), "frames": list(FRAMES), "joint_order": "MANO-21",
        "num_hypotheses": len(pred.joints), "final_source": pred.final_source,
        "selected": pred.selected.tolist(), "swapped": pred.swapped.astype(bool).tolist(),
        "confidence": confidence,
        "final": {"joints_3d_mm": _mm(pred.final_joints), "joints_2d_px": _px(pred.final_joints_2d)},
        "hypotheses": hypotheses,
    }


def _pictures(folder: Path, pred: Prediction, crop: HandCrop, faces: np.ndarray, photo: Image.Image) -> list[Path]:
    """The mesh pictures of :data:`PICTURES` (module docstring), each written atomically."""
    image, current = crop.image.numpy(), FRAMES.index("current")
    final_scene = pred.final_vertices + pred.camera[:, None]  # (T, V, 3)
    selected = pred.selected.tolist() if pred.reward is not None else []
    drawn = {
        "overlay.png": overlay.overlay_image(photo, faces, final_scene, pred.crop_intrinsics,
                                             invert_affine(crop.affine), crop.box, crop.is_left),
        "hypotheses_mesh.png": overlay.contact_sheet(image, faces, pred.vertices[:, current] + pred.camera[current],
                                                     pred.crop_intrinsics, crop.is_left, pred.reward, selected),
        "sequence.gif": overlay.sequence_frames(image, faces, final_scene, pred.crop_intrinsics, crop.is_left),
        "turntable.gif": overlay.turntable_frames(faces, pred.final_vertices[current]),
    }
    paths = []
    for name, picture in drawn.items():
        paths.append(folder / name)
        with atomic.atomic_path(paths[-1]) as tmp:
            if isinstance(picture, list):
                overlay.save_gif(tmp, picture)
            else:
                picture.save(tmp, format="PNG")
    return paths


def write_prediction(folder: Path, pred: Prediction, crop: HandCrop, faces: np.ndarray, image: str,
                     checkpoint: str, trained_on: str, photo: Image.Image | None = None) -> list[Path]:
    """Write one image's files into ``folder`` (module docstring), each atomically; the mesh pictures only with
    ``photo`` (the original image). Returns their paths. Raises
    :class:`hmh.data.render.RendererUnavailableError` (after the other files) when a picture cannot be rendered."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "prediction.json"]
    doc = prediction_json(pred, crop, image, checkpoint, trained_on)
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
    if photo is not None:
        paths += _pictures(folder, pred, crop, faces, photo)
    return paths


def prediction_rows(folder: str, pred: Prediction, crop: HandCrop, image: str, checkpoint: str) -> list[dict]:
    """The :data:`TABLE_SCHEMA` rows of one image: one per hypothesis."""
    k = len(pred.joints)
    rank = np.zeros(k, dtype=np.int64)
    if pred.reward is not None:
        rank[np.argsort(-pred.reward, kind="stable")] = np.arange(1, k + 1)
    chosen = pred.selected.tolist() if pred.reward is not None else []
    common = {"folder": folder, "image": image, "hand": "left" if crop.is_left else "right", "checkpoint": checkpoint,
              "final_source": pred.final_source, "spread_mm": float(pred.spread_mm()[FRAMES.index("current")]),
              "reward_spread": _reward_spread(pred)}
    return [{**common, "hypothesis": i, "reward": None if pred.reward is None else float(pred.reward[i]),
             "rank": int(rank[i]) if pred.reward is not None else None,
             "selected_rank": chosen.index(i) if i in chosen else None,
             "joints_3d_mm": (pred.joints[i] * MM).reshape(-1).tolist(),
             "joints_2d_px": pred.joints_2d[i].reshape(-1).tolist()} for i in range(k)]


def update_table(out: Path, rows: list[dict]) -> Path:
    """``out/predictions.parquet`` with ``rows`` in place of any earlier rows of the same folders (the rows of
    other images, from earlier calls, are kept)."""
    path = out / TABLE
    folders = {row["folder"] for row in rows}
    kept = [r for r in read_table(path, TABLE_SCHEMA)[0].to_pylist() if r["folder"] not in folders] \
        if path.is_file() else []
    return write_table(path, kept + rows, TABLE_SCHEMA, {"columns": COLUMNS_HELP})
