"""What ``hmh predict`` writes for a :class:`hmh.predict.run.Prediction`: per image a folder of files
(:func:`write_prediction`), and over all images one ``predictions.parquet`` (:func:`update_table`). Every field
is documented in ``docs/predict/outputs.md``.

Per image (folder :func:`hmh.predict.run.prediction_name`):

- ``prediction.json`` (:func:`prediction_json`): every hypothesis' joints and MANO parameters, the camera, the
  selection, the final sequence and how far to trust it (``confidence``: the hypotheses' spread, the averaged
  ones' spread and whether their average is unreliable, the rewards' spread, the checkpoint's training data);
- ``final_{past,current,future}.obj``: the final meshes (metres, wrist-relative);
- ``hypotheses.png``: 2D joints over the crop, un-mirrored (:func:`hmh.predict.pictures.draw_panels`);
- with ``pictures`` (:mod:`hmh.predict.overlay`, needs EGL): ``overlay.png`` (the final meshes over the full photo),
  ``hypotheses_mesh.png`` (every hypothesis' mesh over the crop, with reward and rank), ``sequence.gif`` (past ->
  current -> future over the crop) and ``turntable.gif`` (the final current mesh turning); when the average is
  unreliable (:meth:`hmh.predict.run.Prediction.average_unreliable`), ``overlay.png`` and ``turntable.gif`` show the
  top-1 hypothesis beside it.

Ranks and indices are 0-based everywhere (hypothesis 0, rank 0 = the highest reward, selected rank 0 = top-1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from hmh.config import DataConfig, ModelConfig
from hmh.data.transforms import apply_affine, invert_affine
from hmh.errors import HmhError
from hmh.eval.metrics import reward_ranks
from hmh.files import atomic
from hmh.mano.obj import write_obj
from hmh.predict import overlay
from hmh.predict.pictures import draw_panels
from hmh.predict.run import AVERAGE_SPREAD_LIMIT_MM, FRAMES, MM, HandCrop, Prediction
from hmh.results.tables import ResultsError, read_table

__all__ = ["PICTURES", "TABLE", "TABLE_SCHEMA", "existing_rows", "mano_model", "prediction_json", "prediction_rows",
           "training_data", "update_table", "write_prediction"]

PICTURES = ("overlay.png", "hypotheses_mesh.png", "sequence.gif", "turntable.gif")
TABLE = "predictions.parquet"
T, J = len(FRAMES), 21


def _fixed(item: pa.DataType, *shape: int) -> pa.DataType:
    """A nested fixed-size list of ``item`` with ``shape`` (outermost first)."""
    for size in reversed(shape):
        item = pa.list_(item, size)
    return item


COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("folder", pa.string(), "the image's folder under --out"),
    ("image", pa.string(), "the image file as given"),
    ("hand", pa.string(), "right or left"),
    ("checkpoint", pa.string(), "the checkpoint as given"),
    ("row", pa.string(), "hypothesis (one row per hypothesis) or final (one row: the final sequence)"),
    ("hypothesis", pa.int32(), "0-based hypothesis index; null on the final row"),
    ("reward", pa.float64(), "the selector's reward, higher is better; null without a selector and on the final row"),
    ("rank", pa.int32(), "0-based rank by reward (0 = highest); null without a selector and on the final row"),
    ("selected_rank", pa.int32(), "0-based place among the averaged hypotheses (0 = top-1); null for one not "
     "averaged and on the final row"),
    ("final_source", pa.string(), "selected top-n or mean of K: what the final sequence averages"),
    ("members", pa.list_(pa.int32()), "final row: the averaged hypotheses, top-1 first; null on hypothesis rows"),
    ("members_swapped", pa.list_(pa.bool_()), "final row: per member, whether its past and future were exchanged "
     "to match the top-1; null on hypothesis rows"),
    ("crop_box_px", _fixed(pa.float64(), 4), "(4,) x, y, w, h of the square crop the model saw, upright image px"),
    ("image_intrinsics_px", _fixed(pa.float64(), 4), "(4,) fx, fy, cx, cy in image px: joints_3d_mm + "
     "camera_translation_mm projected with them give joints_2d_px"),
    ("camera_translation_mm", _fixed(pa.float32(), T, 3), "(T=3, 3) the wrist's position per frame, camera frame "
     "(x right, y down, z forward), mm, shared by all hypotheses"),
    ("joints_3d_mm", _fixed(pa.float32(), T, J, 3), "(T=3, J=21, 3) MANO-21 joints per frame past, current, future, "
     "mm, wrist-relative, camera frame"),
    ("joints_2d_px", _fixed(pa.float32(), T, J, 2), "(T=3, J=21, 2) the joints in upright image pixels"),
    ("mano_global_orient", _fixed(pa.float32(), T, 3), "(T=3, 3) axis-angle, radians, right-hand MANO; null on the "
     "final row (rebuild it from its members)"),
    ("mano_hand_pose", _fixed(pa.float32(), T, 45), "(T=3, 45) axis-angle of MANO's 15 finger joints, radians, "
     "relative to MANO's mean pose (flat_hand_mean=False), right-hand MANO; null on the final row"),
    ("mano_betas", _fixed(pa.float32(), T, 10), "(T=3, 10) MANO shape coefficients; null on the final row"),
    ("spread_mm", _fixed(pa.float64(), T), "(T=3,) the image's K hypotheses' mean per-joint distance to their mean"),
    ("averaged_spread_mm", _fixed(pa.float64(), T), "(T=3,) the same for the hypotheses the final averages"),
    ("average_unreliable", pa.bool_(), f"averaged_spread_mm above {AVERAGE_SPREAD_LIMIT_MM:g} mm in some frame: "
     "the final sequence need not look like a hand"),
    ("reward_spread", pa.float64(), "standard deviation of the image's K rewards; null without a selector"),
)
TABLE_SCHEMA = pa.schema([(name, kind) for name, kind, _ in COLUMNS])


def training_data(data: DataConfig) -> tuple[str, bool]:
    """What a checkpoint was trained on, from its ``data`` config: a description and whether it is synthetic."""
    from hmh.data.synthetic import is_synthetic_root

    if is_synthetic_root(data.root):
        return "hmh's synthetic BlurHand-format data" + (f" ({data.root})" if data.root else ""), True
    return f"the BlurHand root {data.root}", False


def mano_model(model: ModelConfig) -> str:
    """The right-hand MANO model a checkpoint poses: its ``model.mano_path``, or hmh's synthetic hand."""
    return model.mano_path or "hmh's synthetic MANO hand (hmh.mano.model.Mano())"


def _mm(x: np.ndarray) -> list:
    return np.round(x * MM, 3).tolist()


def _px(x: np.ndarray) -> list:
    return np.round(x, 2).tolist()


def _value(x: np.ndarray) -> list:
    return np.round(x, 6).tolist()


def _reward_spread(pred: Prediction) -> float | None:
    """The standard deviation of one image's K rewards (None without a selector)."""
    return None if pred.reward is None else float(np.std(pred.reward))


def _ranks(pred: Prediction) -> list[int | None]:
    """Each hypothesis' 0-based rank by reward (0 = highest, ties in index order); None without a selector."""
    if pred.reward is None:
        return [None] * len(pred.joints)
    return reward_ranks(pred.reward).tolist()


def _mano(pose: np.ndarray, betas: np.ndarray) -> dict:
    """``pose (..., T, 48)`` and ``betas (..., T, 10)`` as the JSON's ``global_orient``, ``hand_pose``, ``betas``."""
    return {"global_orient": _value(pose[..., :3]), "hand_pose": _value(pose[..., 3:]), "betas": _value(betas)}


def image_intrinsics(pred: Prediction, crop: HandCrop) -> np.ndarray:
    """``(4,)`` fx, fy, cx, cy in image pixels that project the un-mirrored camera-frame scene (joints + camera)
    into the upright image."""
    return overlay.view_intrinsics(pred.crop_intrinsics, invert_affine(crop.affine), crop.is_left)


def _frames(values: np.ndarray, digits: int = 3) -> dict:
    return dict(zip(FRAMES, np.round(values, digits).tolist(), strict=True))


def prediction_json(pred: Prediction, crop: HandCrop, image: str, checkpoint: str, trained_on: str,
                    mano: str) -> dict:
    """The JSON document of ``pred`` (``docs/predict/outputs.md``): 3D in mm (wrist-relative, camera frame), 2D in
    image pixels, MANO-21 joint order (wrist, thumb 1-4, index, middle, ring, pinky), frames past/current/future;
    ``trained_on`` from :func:`training_data`, ``mano`` from :func:`mano_model`."""
    ranks = _ranks(pred)
    hypotheses = [{"index": k, "reward": None if pred.reward is None else round(float(pred.reward[k]), 6),
                   "rank": ranks[k], "mano": _mano(pred.pose[k], pred.betas),
                   "joints_3d_mm": _mm(pred.joints[k]), "joints_2d_px": _px(pred.joints_2d[k])}
                  for k in range(len(pred.joints))]
    spread = _reward_spread(pred)
    swapped = pred.swapped.astype(bool)
    members = np.where(swapped[:, None, None], pred.pose[pred.selected][:, ::-1], pred.pose[pred.selected])
    confidence = {
        "hypothesis_spread_mm": _frames(pred.spread_mm()),
        "averaged_spread_mm": _frames(pred.averaged_spread_mm()),
        "average_unreliable": pred.average_unreliable(),
        "average_unreliable_above_mm": AVERAGE_SPREAD_LIMIT_MM,
        "reward_spread": None if spread is None else round(spread, 6),
        "reward_range": None if pred.reward is None else np.round([pred.reward.min(), pred.reward.max()], 6).tolist(),
        "training_data": trained_on,
    }
    return {
        "image": image, "checkpoint": checkpoint, "hand": "left" if crop.is_left else "right",
        "crop_box_px": _px(crop.box), "frames": list(FRAMES), "joint_order": "MANO-21",
        "mano_model": {"file": mano, "side": "right", "flat_hand_mean": False, "x_negated": crop.is_left},
        "camera": {"translation_mm": _mm(pred.camera), "image_intrinsics_px": np.round(
            image_intrinsics(pred, crop), 4).tolist()},
        "num_hypotheses": len(pred.joints), "final_source": pred.final_source,
        "selected": pred.selected.tolist(), "swapped": swapped.tolist(),
        "confidence": confidence,
        "final": {"joints_3d_mm": _mm(pred.final_joints), "joints_2d_px": _px(pred.final_joints_2d),
                  "mano": _mano(members, np.where(swapped[:, None, None], pred.betas[::-1], pred.betas))},
        "hypotheses": hypotheses,
    }


def _beside_top1(pred: Prediction, average: list[Image.Image], top1: list[Image.Image]) -> list[Image.Image]:
    """Each picture of the average with the same picture of the top-1 hypothesis beside it, both labelled."""
    spread = pred.averaged_spread_mm().max()
    labels = (f"average of {len(pred.selected)}: {spread:.0f} mm apart",
              f"{'top-1' if pred.reward is not None else 'first'}: #{pred.selected[0]}")
    return [overlay.side_by_side([a, b], labels) for a, b in zip(average, top1, strict=True)]


def _pictures(folder: Path, pred: Prediction, crop: HandCrop, faces: np.ndarray, photo: Image.Image) -> list[Path]:
    """The mesh pictures of :data:`PICTURES` (module docstring), each written atomically."""
    image, current, top = crop.image.numpy(), FRAMES.index("current"), int(pred.selected[0])
    final_scene = pred.final_vertices + pred.camera[:, None]  # (T, V, 3)

    def on_photo(scene: np.ndarray) -> Image.Image:
        return overlay.overlay_image(photo, faces, scene, pred.crop_intrinsics, invert_affine(crop.affine), crop.box,
                                     crop.is_left)

    drawn = {
        "overlay.png": on_photo(final_scene),
        "hypotheses_mesh.png": overlay.contact_sheet(image, faces, pred.vertices[:, current] + pred.camera[current],
                                                     pred.crop_intrinsics, crop.is_left, pred.reward,
                                                     pred.selected.tolist() if pred.reward is not None else []),
        "sequence.gif": overlay.sequence_frames(image, faces, final_scene, pred.crop_intrinsics, crop.is_left),
        "turntable.gif": overlay.turntable_frames(faces, pred.final_vertices[current]),
    }
    if pred.average_unreliable():
        drawn["overlay.png"] = _beside_top1(pred, [drawn["overlay.png"]],
                                            [on_photo(pred.vertices[top] + pred.camera[:, None])])[0]
        drawn["turntable.gif"] = _beside_top1(pred, drawn["turntable.gif"],
                                              overlay.turntable_frames(faces, pred.vertices[top, current]))
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
                     checkpoint: str, trained_on: str, mano: str, photo: Image.Image | None = None) -> list[Path]:
    """Write one image's files into ``folder`` (module docstring), each atomically; the mesh pictures only with
    ``photo`` (the original image). Returns their paths. Raises
    :class:`hmh.data.render.RendererUnavailableError` (after the other files) when a picture cannot be rendered."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "prediction.json"]
    doc = prediction_json(pred, crop, image, checkpoint, trained_on, mano)
    atomic.write_text(paths[0], "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items())
                      + "\n}\n")  # one line per key
    wound = faces[:, ::-1] if crop.is_left else faces  # mirroring turns the right hand's faces inside out
    for t, frame in enumerate(FRAMES):
        paths.append(folder / f"final_{frame}.obj")
        write_obj(paths[-1], pred.final_vertices[t], wound, f"{image}: final {frame} ({pred.final_source})")
    selected = pred.selected.tolist() if pred.reward is not None else None
    size = crop.image.shape[-1]
    panels = draw_panels(overlay.unmirror_crop(crop.image.numpy(), crop.is_left),
                         apply_affine(pred.crop_joints_2d, overlay.crop_view_affine(size, 1, crop.is_left)), selected)
    paths.append(folder / "hypotheses.png")
    with atomic.atomic_path(paths[-1]) as tmp:
        Image.fromarray(panels).save(tmp, format="PNG")
    if photo is not None:
        paths += _pictures(folder, pred, crop, faces, photo)
    return paths


def prediction_rows(folder: str, pred: Prediction, crop: HandCrop, image: str, checkpoint: str) -> list[dict]:
    """The :data:`TABLE_SCHEMA` rows of one image: one per hypothesis, then the final sequence's."""
    ranks, chosen = _ranks(pred), pred.selected.tolist()
    common = {"folder": folder, "image": image, "hand": "left" if crop.is_left else "right", "checkpoint": checkpoint,
              "final_source": pred.final_source, "crop_box_px": crop.box.tolist(),
              "image_intrinsics_px": image_intrinsics(pred, crop).tolist(),
              "camera_translation_mm": (pred.camera * MM).tolist(), "spread_mm": pred.spread_mm().tolist(),
              "averaged_spread_mm": pred.averaged_spread_mm().tolist(),
              "average_unreliable": pred.average_unreliable(), "reward_spread": _reward_spread(pred)}
    rows = [{**common, "row": "hypothesis", "hypothesis": i,
             "reward": None if pred.reward is None else float(pred.reward[i]), "rank": ranks[i],
             "selected_rank": chosen.index(i) if i in chosen else None,
             "joints_3d_mm": (pred.joints[i] * MM).tolist(), "joints_2d_px": pred.joints_2d[i].tolist(),
             "mano_global_orient": pred.pose[i, :, :3].tolist(), "mano_hand_pose": pred.pose[i, :, 3:].tolist(),
             "mano_betas": pred.betas.tolist()} for i in range(len(pred.joints))]
    return rows + [{**common, "row": "final", "members": chosen, "members_swapped": pred.swapped.astype(bool).tolist(),
                    "joints_3d_mm": (pred.final_joints * MM).tolist(), "joints_2d_px": pred.final_joints_2d.tolist()}]


def existing_rows(out: Path) -> list[dict]:
    """The rows of ``out/predictions.parquet`` (none when it does not exist). Read before any work: raises
    :class:`HmhError` naming the file when it is not a regular file (a folder, a symbolic link) or not a table of
    exactly this schema (a column more would be lost), so nothing is computed in vain."""
    path = out / TABLE
    if not os.path.lexists(path):
        return []
    advice = "hmh predict would replace it: move it away or choose another --out"
    if path.is_symlink() or not path.is_file():
        raise HmhError(f"{path}: not a regular file (a folder or a symbolic link); {advice}")
    try:
        table = read_table(path, TABLE_SCHEMA)[0]
    except ResultsError as err:
        raise HmhError(f"{err}; {advice}") from None
    extra = [name for name in table.column_names if name not in TABLE_SCHEMA.names]
    if extra:
        raise HmhError(f"{path}: column(s) {', '.join(map(repr, extra))} are not hmh predict's; {advice}")
    return table.to_pylist()


def update_table(out: Path, earlier: list[dict], rows: list[dict]) -> Path:
    """Write ``out/predictions.parquet``: ``earlier`` (:func:`existing_rows`) less the rows of ``rows``' folders,
    then ``rows``; atomically. Integer columns read back into pandas as nullable ``Int32``, not float with NaN."""
    folders = {row["folder"] for row in rows}
    table = pa.Table.from_pylist([r for r in earlier if r["folder"] not in folders] + rows, schema=TABLE_SCHEMA)
    frame = table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
    table = pa.Table.from_pandas(frame, schema=TABLE_SCHEMA, preserve_index=False)  # records the pandas dtypes
    help_text = json.dumps({name: text for name, _, text in COLUMNS}).encode()
    table = table.replace_schema_metadata({**table.schema.metadata, b"hmh.columns": help_text})
    path = out / TABLE
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
