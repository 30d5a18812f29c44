"""One work unit of the synthetic generator: a fixed chunk of clips sampled, posed, placed, rendered and written.

A chunk's output depends only on (seed, split, clip indices, size, sub-frames): clip ``i`` draws everything from
``default_rng([seed, split_code, 1, i])``, capture ``c``'s camera rig from ``default_rng([seed, split_code, 0, c])``,
and a chunk always renders the same images in the same atlas slots, so any number of worker processes gives
identical files. MANO runs in float32 on the CPU with one torch thread, whoever calls :func:`render_chunk`: float32
reductions split over several threads can differ in the last bit (seen with AVX-512 kernels), and the files must
not depend on the caller's thread count.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hmh.data import motion
from hmh.data.appearance import background, finish_image, sample_albedo, sample_light
from hmh.data.render import MeshRenderer, orient_outward
from hmh.data.timing import NO_TIMER, PhaseTimer

SIDES = ("right", "left")
EDGE_MARGIN = 0.06  # keyframe joints kept this fraction of the image away from its border when choosing cameras
BBOX_EXTEND = 1.2
_R2 = 1.324717957244746  # plastic number: R2 low-discrepancy sequence for sub-pixel jitter


@dataclass(frozen=True)
class ChunkTask:
    """Clips ``first .. first + count - 1`` of ``split`` (``num_images`` images in the split)."""

    out: str  # the dataset folder being written
    split: str
    split_code: int
    first: int
    count: int
    num_images: int
    size: int
    subframes: int
    seed: int
    views_per_clip: int
    clips_per_capture: int
    cameras_per_capture: int
    profile: str = "full"  # hmh.data.motion.PROFILES


@dataclass
class ClipRecord:
    """What the annotation files need about one clip: keyframe arrays have K = 5 rows."""

    clip: int
    capture: int
    seq_name: str
    side: str
    regime: str
    world_mm: np.ndarray  # (K, 21, 3) world joints, InterHand order, mm
    pose: np.ndarray  # (K, 48) world global orient + hand pose relative to the mean
    shape: np.ndarray  # (10,)
    trans: np.ndarray  # (K, 3) metres, smplx transl
    cameras: list[str] = field(default_factory=list)  # one per view
    valid: list[np.ndarray] = field(default_factory=list)  # per view (K, 21) bool: inside the image
    bbox: list[np.ndarray] = field(default_factory=list)  # per view (K, 4) x, y, w, h px


def worker_init() -> None:
    """Pool initializer: one rasteriser thread and one torch thread per process (2 processes on 2 cores)."""
    os.environ["LP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


class _Models:
    """Per-process MANO layers, pose PCA and renderers (one per side: the face lists differ)."""

    def __init__(self, size: int, subframes: int):
        from hmh.mano.model import Mano, load_model_file, model_path

        self.key = (size, subframes)
        self.mano, self.components, self.mean, self.renderers = {}, {}, {}, {}
        for side in SIDES:
            model = load_model_file(model_path("", side))
            self.mano[side] = Mano(model, side=side)
            self.components[side] = np.asarray(model["hands_components"], dtype=np.float64)
            self.mean[side] = np.asarray(model["hands_mean"], dtype=np.float64)
            zero = torch.zeros(1, 3)
            template = self.mano[side](zero, torch.zeros(1, 45), torch.zeros(1, 10)).vertices[0].double().numpy()
            faces = orient_outward(self.mano[side].faces.numpy(), template)
            self.renderers[side] = MeshRenderer(
                faces, len(template), size, frames_per_image=subframes, images_per_draw=16,
                samples=4 if subframes < 4 else 0,
            )

    def close(self) -> None:
        for renderer in self.renderers.values():
            renderer.close()


_MODELS: _Models | None = None


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with one torch thread, then restore the caller's count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _models(size: int, subframes: int) -> _Models:
    global _MODELS
    if _MODELS is None or _MODELS.key != (size, subframes):
        if _MODELS is not None:
            _MODELS.close()
        _MODELS = _Models(size, subframes)
    return _MODELS


@functools.lru_cache(maxsize=64)
def sample_rig(seed: int, split_code: int, capture: int, cameras: int, size: int, profile: str) -> motion.Rig:
    """Capture ``capture``'s camera rig (the same in every process), placed as data profile ``profile`` says."""
    return motion.sample_rig(np.random.default_rng([seed, split_code, 0, capture]), cameras, size,
                             motion.profile(profile))


def project(points_world_mm: np.ndarray, rig: motion.Rig, cam: int) -> tuple[np.ndarray, np.ndarray]:
    """``(..., 3)`` world mm -> pixels ``(..., 2)`` and camera-frame depth ``(...)`` in mm."""
    cam_pts = (points_world_mm - rig.campos[cam]) @ rig.camrot[cam].T  # (..., 3)
    z = cam_pts[..., 2]
    uv = cam_pts[..., :2] / np.maximum(z, 1e-6)[..., None] * rig.focal[cam] + rig.princpt[cam]
    return uv, z


def _inside(uv: np.ndarray, z: np.ndarray, size: int, margin: float = 0.0) -> np.ndarray:
    lo, hi = margin, size - 1 - margin
    return (z > 0) & (uv >= lo).all(-1) & (uv <= hi).all(-1)


def _bbox(uv: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """Box [x, y, w, h] around the valid points (x1.2, clipped to the image); the whole image if none."""
    if not valid.any():
        return np.array([0.0, 0.0, size - 1.0, size - 1.0])
    lo, hi = uv[valid].min(0), uv[valid].max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * BBOX_EXTEND
    lo, hi = np.clip(centre - half, 0, size - 1), np.clip(centre + half, 0, size - 1)
    return np.concatenate([lo, hi - lo])


def _choose_views(rng: np.random.Generator, joints_mm: np.ndarray, rig: motion.Rig, size: int, views: int):
    """Camera ids: random among those seeing every keyframe joint well inside the image, then the best others."""
    scores = []
    for cam in range(len(rig.names)):
        uv, z = project(joints_mm, rig, cam)
        scores.append(_inside(uv, z, size, EDGE_MARGIN * size).mean())
    order = rng.permutation(len(rig.names))
    order = order[np.argsort(-np.array(scores)[order], kind="stable")]  # random among equals
    return [int(c) for c in order[:views]]


def _jitter(rng: np.random.Generator, count: int) -> np.ndarray:
    """``(count, 2)`` sub-pixel offsets in [-0.5, 0.5): a randomly shifted R2 sequence (zeros for one frame)."""
    if count == 1:
        return np.zeros((1, 2))
    steps = np.arange(count)[:, None] * np.array([1.0 / _R2, 1.0 / _R2**2])  # (count, 2)
    return (0.5 + steps + rng.uniform(size=2)) % 1.0 - 0.5


def _pose_side(models: _Models, side: str, clips: list[motion.Clip], times: np.ndarray, timer: PhaseTimer):
    """Pose every clip's K keyframes and F sub-frames of one side in one MANO call (sub-frames: posing; MANO:
    skinning, for ``timer``).

    Returns per clip (joints (K, 21, 3), wrist rest J0 (3,), sub-frame vertices (F, V, 3)), MANO frame metres with
    the wrist path of the clip *not* yet added (transl = 0).
    """
    mean = models.mean[side]
    k, f, c = motion.NUM_KEYFRAMES, len(times), len(clips)
    orient = np.stack([clip.orient for clip in clips], axis=1)  # (K, C, 3)
    pose = np.stack([clip.hand_pose for clip in clips], axis=1)  # (K, C, 45) relative to the mean
    rotations = np.concatenate([orient[:, :, None], (pose + mean).reshape(k, c, 15, 3)], axis=2)  # (K, C, 16, 3)
    sub = motion.interpolate(rotations, times, rotation=True)  # (F, C, 16, 3) slerped absolute rotations
    sub_pose = sub[:, :, 1:].reshape(f, c, 45) - mean  # (F, C, 45)
    orient = np.concatenate([orient, sub[:, :, 0]]).transpose(1, 0, 2)  # (C, K + F, 3)
    hand_pose = np.concatenate([pose, sub_pose]).transpose(1, 0, 2)  # (C, K + F, 45)
    betas = np.repeat(np.stack([clip.betas for clip in clips])[:, None], k + f, axis=1)  # (C, K + F, 10)
    to_t = lambda array: torch.from_numpy(array.reshape(c * (k + f), -1)).float()  # noqa: E731
    timer.lap("posing")
    with torch.no_grad():
        out = models.mano[side](to_t(orient), to_t(hand_pose), to_t(betas))
    joints = out.joints.double().numpy().reshape(len(clips), k + f, 21, 3)
    verts = out.vertices.double().numpy().reshape(len(clips), k + f, -1, 3)
    timer.lap("skinning")
    return [(joints[i, :k], joints[i, 0, 0], verts[i, k:]) for i in range(len(clips))]


def _sample_clips(task: ChunkTask, models: _Models) -> tuple[list[np.random.Generator], list[motion.Clip]]:
    """Each clip's generator (it draws everything else about the clip later) and its motion."""
    rngs, clips = [], []
    for index in range(task.first, task.first + task.count):
        rng = np.random.default_rng([task.seed, task.split_code, 1, index])
        side = SIDES[int(rng.uniform() < 0.5)]
        clips.append(motion.sample_clip(rng, side, models.components[side], motion.profile(task.profile)))
        rngs.append(rng)
    return rngs, clips


def _place(task: ChunkTask, index: int, clip: motion.Clip, posed, rng: np.random.Generator):
    """Centre clip ``index``'s motion on its capture's origin; returns its record (no views yet), the world
    sub-frame vertices ``(F, V, 3)`` metres, its rig and its capture-local clip number."""
    from hmh.mano.model import MANO21_TO_INTERHAND

    joints, rest_wrist, sub_verts = posed
    rel = joints - joints[:, :1] + clip.wrist[:, None]  # (K, 21, 3) wrist path around the placement
    offset = -(rel.reshape(-1, 3).min(0) + rel.reshape(-1, 3).max(0)) / 2 + rng.normal(0.0, 0.01, 3)
    wrist = clip.wrist + offset  # (K, 3) world wrist positions
    world = joints - joints[:, :1] + wrist[:, None]  # (K, 21, 3) metres, MANO-21
    sub_wrist = motion.interpolate(wrist, motion.subframe_times(task.subframes), rotation=False)  # (F, 3)
    capture, local = divmod(index, task.clips_per_capture)
    record = ClipRecord(
        clip=index, capture=capture, seq_name=f"{local:04d}_synthetic_{clip.side}", side=clip.side,
        regime=clip.regime, world_mm=world[:, MANO21_TO_INTERHAND] * 1000.0,
        pose=np.concatenate([clip.orient, clip.hand_pose], axis=1), shape=clip.betas, trans=wrist - rest_wrist,
    )
    rig = sample_rig(task.seed, task.split_code, capture, task.cameras_per_capture, task.size, task.profile)
    return record, sub_verts - rest_wrist + sub_wrist[:, None], rig, local


def render_chunk(task: ChunkTask, timer: PhaseTimer = NO_TIMER) -> list[ClipRecord]:
    """Generate clips ``task.first ..`` of the chunk, write their JPEGs under ``task.out``, return their records.

    ``timer``: laps each phase (posing, skinning, rendering, averaging, background, encoding, writing). Runs with
    one torch thread (:func:`one_torch_thread`), so the files do not depend on the caller's thread count.
    """
    with one_torch_thread():
        return _render_chunk(task, timer)


def _render_chunk(task: ChunkTask, timer: PhaseTimer) -> list[ClipRecord]:
    models = _models(task.size, task.subframes)
    timer.restart()
    times = motion.subframe_times(task.subframes)
    rngs, clips = _sample_clips(task, models)
    posed = [None] * len(clips)
    for side in SIDES:
        ids = [i for i, clip in enumerate(clips) if clip.side == side]
        if ids:
            for i, result in zip(ids, _pose_side(models, side, [clips[i] for i in ids], times, timer), strict=True):
                posed[i] = result

    records, jobs = [], {side: [] for side in SIDES}
    for i, (clip, rng) in enumerate(zip(clips, rngs, strict=True)):
        index = task.first + i
        record, sub_world, rig, local = _place(task, index, clip, posed[i], rng)
        albedo = np.tile(sample_albedo(rng), (task.subframes, 1))  # (F, 4)
        views = min(task.views_per_clip, task.num_images - index * task.views_per_clip)
        for cam in _choose_views(rng, record.world_mm, rig, task.size, views):
            uv, z = project(record.world_mm, rig, cam)  # (K, 21, 2), (K, 21)
            valid = _inside(uv, z, task.size)
            record.cameras.append(rig.names[cam])
            record.valid.append(valid)
            record.bbox.append(np.stack([_bbox(uv[k], valid[k], task.size) for k in range(len(uv))]))
            cam_verts = (sub_world * 1000.0 - rig.campos[cam]) @ rig.camrot[cam].T / 1000.0  # (F, V, 3) metres
            intr = np.tile(np.concatenate([rig.focal[cam], rig.princpt[cam]]), (task.subframes, 1))  # (F, 4)
            intr[:, 2:] += _jitter(rng, task.subframes)
            light = np.tile(sample_light(rng), (task.subframes, 1))  # (F, 4)
            frame = local * motion.NUM_KEYFRAMES + motion.MIDDLE  # the blurred image is named by its middle frame
            name = f"Capture{record.capture}/{record.seq_name}/cam{rig.names[cam]}/image{frame}.jpg"
            jobs[clip.side].append((rng, Path(task.out) / name, cam_verts, intr, albedo, light))
        records.append(record)
    timer.lap("posing")
    for side in SIDES:
        if jobs[side]:
            _write_images(models.renderers[side], jobs[side], task.size, motion.profile(task.profile).clutter, timer)
    return records


def _write_images(renderer: MeshRenderer, jobs: list[tuple], size: int, clutter: int, timer: PhaseTimer) -> None:
    """Render every job's F sub-frames in one call, then photograph and write each image (backgrounds with up to
    ``clutter`` shapes)."""
    verts, intr, albedo, light = (np.concatenate([job[j] for job in jobs]) for j in (2, 3, 4, 5))  # (B * F, ...)
    renders = renderer.render(verts, intr, albedo, light, timer)
    for b, (rng, path, *_) in enumerate(jobs):
        back = background(rng, size, clutter)
        timer.lap("background")
        jpeg = finish_image(rng, renders.rgb[b], renders.alpha[b], back)
        timer.lap("encoding")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg)
        timer.lap("writing")
