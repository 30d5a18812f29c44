"""The one BlurHand reader: real BlurHand roots and the synthetic dataset written in the same format.

Each sample is one hand of one blurred image, with ground truth for T = 3 frames (past = ``aid_list[0]``,
current = the middle annotation, future = ``aid_list[-1]``), all in the middle image's camera. Targets match
BlurHandNet's preprocessing: joints from ``joint_3d.json`` (not MANO), root(wrist)-relative, metres, MANO-21
order; MANO global orientation pre-multiplied by the camera rotation; the BlurHandNet crop and augmentation.

Left hands are mirrored (image, 2D/3D joints, pose, mesh), so every target is a right hand: predict with the
right MANO. Errors are mirror-invariant, so metrics can compare predictions with these targets directly; to
report a left hand in the original camera, negate x of joints and vertices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hmh.data.blurhand_index import BlurHandIndex, annotation_files, image_folder, load_index
from hmh.data.blurhand_json import HAND_TYPES, WRIST, DatasetError, camera_problems
from hmh.data.transforms import (
    Augmentation,
    apply_affine,
    crop_affine,
    crop_intrinsics,
    mirror_points,
    mirror_pose,
    rotate_global_orient,
    rotation_z,
    sample_augmentation,
    warp_image,
)
from hmh.geometry import project, world_to_camera
from hmh.mano.model import INTERHAND_TO_MANO21, Mano, load_model_file, model_path

__all__ = [
    "BadImageError",
    "BlurHandDataset",
    "DatasetError",
    "SplitCheck",
    "check_root",
    "load_image",
    "load_mano_arrays",
    "split_groups",
]

log = logging.getLogger(__name__)

SUBSETS = ("all", "train", "val")
MAX_SHAPE = 3.0  # BlurHandNet resets betas with any |value| > 3 to the mean shape
MAX_SKIPS = 100  # consecutive unreadable images before giving up with skip_bad_images


class BadImageError(DatasetError):
    """A sample's image is missing, truncated or not decodable."""


def split_groups(groups: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Hold out whole groups (capture/sequence) for validation, deterministically by ``seed``.

    ``groups (N,)`` group id per sample -> ``(N,)`` bool, True for validation samples. Groups are taken in a
    seeded random order until at least ``val_fraction`` of the samples are held out; with a single group the
    samples themselves are split instead (logged).
    """
    if val_fraction <= 0.0 or len(groups) == 0:
        return np.zeros(len(groups), dtype=bool)
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    if len(unique) < 2:
        log.warning("only one capture/sequence: holding out individual samples for validation")
        order = rng.permutation(len(groups))
        is_val = np.zeros(len(groups), dtype=bool)
        is_val[order[: max(1, round(val_fraction * len(groups)))]] = True
        return is_val
    order = rng.permutation(unique)
    sizes = np.array([(groups == g).sum() for g in order])
    taken = np.searchsorted(np.cumsum(sizes), val_fraction * len(groups)) + 1
    return np.isin(groups, order[: min(taken, len(unique) - 1)])


class BlurHandDataset(Dataset):
    """A BlurHand split as a torch Dataset of sample dicts (see :meth:`__getitem__`).

    Args:
        root: BlurHand root (``blur_images/`` and ``annotations/``).
        split: ``"train"`` or ``"test"`` (a folder name under both).
        image_size: crop side ``S`` in pixels.
        augment: BlurHandNet's training augmentation (scale, rotation, colour); left hands are always mirrored.
        mano_path: MANO model folder/file (``""`` = the synthetic hand) for the GT mesh.
        max_samples: keep a seeded random subset of this many samples (0 = all).
        skip_bad_images: an unreadable image is logged, recorded in :attr:`bad_images` and replaced by the next
            readable sample, instead of raising :class:`BadImageError`. Records are per process: each
            DataLoader worker keeps its own.
        skip_bad_annotations: samples using a NaN/inf annotation value (the index drops and counts them per
            cause; see :mod:`hmh.data.blurhand_index`) are left out with a warning, instead of a
            :class:`DatasetError` naming the first such value's file, JSON location and value.
        val_fraction, subset, seed: hold out whole capture/sequence groups (:func:`split_groups`); ``subset``
            picks ``"all"`` samples, the ``"train"`` remainder or the ``"val"`` part.

    Attributes: ``index`` (:class:`BlurHandIndex`), ``index_from_cache`` (True when the parsed index came from
    the cache), ``skipped`` (hands skipped while indexing, per reason), ``bad_images`` (sample -> error).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: int,
        augment: bool,
        mano_path: str = "",
        max_samples: int = 0,
        skip_bad_images: bool = False,
        skip_bad_annotations: bool = False,
        val_fraction: float = 0.0,
        subset: str = "all",
        seed: int = 0,
    ):
        if subset not in SUBSETS:
            raise DatasetError(f"subset must be one of {SUBSETS}, got {subset!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if subset == "val" and val_fraction == 0.0:
            raise DatasetError("subset='val' needs val_fraction > 0")
        if image_size <= 0 or max_samples < 0:
            raise DatasetError(f"image_size must be > 0 and max_samples >= 0, got {image_size}, {max_samples}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: BlurHand root folder not found")
        self.split = split
        self.image_size = int(image_size)
        self.augment = bool(augment)
        self.mano_path = mano_path
        self.skip_bad_images = bool(skip_bad_images)
        self.index: BlurHandIndex
        self.index, self.index_from_cache = load_index(self.root, split)
        self.skipped = self.index.skipped
        self._check_non_finite(skip_bad_annotations)
        rows = np.arange(len(self.index))
        if subset != "all":
            is_val = split_groups(self.index.group, val_fraction, seed)
            rows = rows[is_val] if subset == "val" else rows[~is_val]
        if 0 < max_samples < len(rows):
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_samples, replace=False))
        if len(rows) == 0:
            raise DatasetError(self._no_samples(subset))
        self.rows = rows
        self.bad_images: dict[int, str] = {}
        self._mano: dict[str, torch.nn.Module] = {}
        log.info(
            "BlurHand %s (%s): %d samples (%d indexed; skipped %s)",
            split, subset, len(rows), len(self.index), {k: v for k, v in self.skipped.items() if v} or "none",
        )  # fmt: skip

    def _no_samples(self, subset: str) -> str:
        """Why no sample is left: an empty index (with its skips), or a hold-out that took them all."""
        files = annotation_files(self.root, self.split)["data"]
        if len(self.index):
            return (f"{files}: no {subset!r} sample left of the {len(self.index)} in the {self.split} split; "
                    "lower data.val_fraction")  # fmt: skip
        skipped = ", ".join(f"{k} {v}" for k, v in self.skipped.items() if v)
        if not skipped:
            return f"{files}: the {self.split} split has no sample (no annotation with is_middle=true)"
        return f"{files}: the {self.split} split has no usable sample: every hand was skipped ({skipped})"

    def _check_non_finite(self, skip: bool) -> None:
        """Raise on the index's non-finite annotation values, or (``skip``) warn that their samples are left out."""
        found = [str(m) for m in self.index.non_finite]
        if not found:
            return
        more = f" (and {len(found) - 1} more; `hmh data check {self.root}` lists them)" if len(found) > 1 else ""
        if not skip:
            raise DatasetError(f"{found[0]}{more}; set data.skip_bad_annotations=true to skip the samples using them")
        skipped = {k: v for k, v in self.skipped.items() if k.startswith("non_finite") and v}
        log.warning("BlurHand %s: %d non-finite annotation value(s), samples skipped %s; first: %s",
                    self.split, len(found), skipped or "none", found[0])  # fmt: skip

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """One sample (float32 unless noted; S crop side, T=3 frames, J=21 MANO-21 joints):

        ``image (3, S, S)`` in [0, 1]; ``joints_3d (T, J, 3)`` camera frame, wrist-relative, metres;
        ``joints_2d (T, J, 2)`` crop pixels; ``joint_valid (T, J)``; ``mano_pose (T, 48)`` (camera frame,
        relative to the mean pose); ``mano_shape (T, 10)``; ``mano_valid (T,)``; ``mesh (778, 3)`` current frame
        minus the MANO wrist; ``mesh_valid ()``; ``cam_focal (2,)``, ``cam_princpt (2,)`` crop intrinsics;
        ``is_left ()``; ``index ()`` int64 (the dataset position actually returned); ``annot_id ()`` int64 (its
        middle annotation's id in ``_data.json``).
        Invalid joints and missing MANO frames are zeros.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        if not self.skip_bad_images:
            return self.sample(i)
        error: BadImageError | None = None
        for step in range(min(len(self), MAX_SKIPS)):
            j = (i + step) % len(self)
            if j in self.bad_images:
                continue
            try:
                return self.sample(j)
            except BadImageError as err:
                self.bad_images[j] = str(err)
                log.warning("skipping sample %d (%d unreadable so far): %s", j, len(self.bad_images), err)
                error = err
        raise DatasetError(f"{self.root}: no readable image among {MAX_SKIPS} samples from {i}; last: {error}")

    @property
    def image_paths(self) -> list[Path]:
        """Image path of each sample."""
        folder = image_folder(self.root, self.split)
        return [folder / str(self.index.image_files[self.index.image[r]]) for r in self.rows]

    def sample(self, i: int) -> dict[str, torch.Tensor]:
        """Build sample ``i`` (no skipping); raises :class:`BadImageError` for an unreadable image."""
        ix, row = self.index, int(self.rows[i])
        is_left = bool(ix.is_left[row])
        path = image_folder(self.root, self.split) / str(ix.image_files[ix.image[row]])
        image = load_image(path)
        aug = sample_augmentation(flip=is_left) if self.augment else Augmentation(flip=is_left)
        affine = crop_affine(ix.bbox[row], self.image_size, aug, image.width)

        cam = int(ix.cam[row])
        rot = torch.from_numpy(ix.cam_rot[cam])  # (3, 3) float64
        focal, princpt = torch.from_numpy(ix.cam_focal[cam]), torch.from_numpy(ix.cam_princpt[cam])
        frames = ix.frames[row]  # (T,)
        points = self._camera_points(np.array([row]))[0]  # (T, J, 3) mm, InterHand order
        pixels = apply_affine(project(points, focal, princpt), affine)  # (T, J, 2) crop px
        rot_aug = rotation_z(aug.rotation)
        rel = _targets_3d(points[None], np.array([is_left]))[0] @ rot_aug.T  # (T, J, 3) m, MANO-21 order

        order = torch.from_numpy(INTERHAND_TO_MANO21)
        valid = torch.from_numpy(ix.joint_valid[row]).bool()[:, order]  # (T, J)
        joints_3d = torch.where(valid[..., None], rel, 0.0)
        joints_2d = torch.where(valid[..., None], pixels[:, order], 0.0)

        side = 1 if is_left else 0
        mano_valid = torch.from_numpy(ix.mano_valid[frames, side]).bool()  # (T,)
        pose_cam = rotate_global_orient(torch.from_numpy(ix.mano_pose[frames, side]).double(), rot)  # (T, 48)
        pose = mirror_pose(pose_cam) if is_left else pose_cam
        if aug.rotation != 0.0:
            pose = rotate_global_orient(pose, rot_aug)
        shape = torch.from_numpy(ix.mano_shape[frames, side]).double()  # (T, 10)
        shape = torch.where((shape.abs() > MAX_SHAPE).any(-1, keepdim=True), 0.0, shape)
        pose = torch.where(mano_valid[:, None], pose, 0.0)
        shape = torch.where(mano_valid[:, None], shape, 0.0)
        mesh = self._mesh(pose_cam[1], shape[1], is_left, rot_aug) if mano_valid[1] else torch.zeros(778, 3)

        cam_focal, cam_princpt = crop_intrinsics(ix.cam_focal[cam], ix.cam_princpt[cam], affine)
        return {
            "image": warp_image(image, affine, self.image_size, aug.color),
            "joints_3d": joints_3d.float(),
            "joints_2d": joints_2d.float(),
            "joint_valid": valid.float(),
            "mano_pose": pose.float(),
            "mano_shape": shape.float(),
            "mano_valid": mano_valid.float(),
            "mesh": mesh.float(),
            "mesh_valid": torch.tensor(float(mano_valid[1])),
            "cam_focal": torch.from_numpy(cam_focal).float(),
            "cam_princpt": torch.from_numpy(cam_princpt).float(),
            "is_left": torch.tensor(float(is_left)),
            "index": torch.tensor(i, dtype=torch.int64),
            "annot_id": torch.tensor(int(ix.annot_id[row]), dtype=torch.int64),
        }

    def _camera_points(self, rows: np.ndarray) -> torch.Tensor:
        """``(n, T, J, 3)`` float64 mm: each row's hand joints at its T frames in its camera (InterHand order)."""
        ix = self.index
        world = ix.frame_world[ix.frames[rows]]  # (n, T, 42, 3)
        left = ix.is_left[rows].astype(bool)[:, None, None, None]
        world = torch.from_numpy(np.where(left, world[:, :, 21:], world[:, :, :21])).double()
        cams = ix.cam[rows]
        return world_to_camera(world, torch.from_numpy(ix.cam_rot[cams])[:, None],
                               torch.from_numpy(ix.cam_pos[cams])[:, None])

    def targets_3d(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sample's ``joints_3d (N, T, J, 3)`` and ``joint_valid (N, T, J)`` as :meth:`__getitem__` gives
        them without augmentation, computed from the index alone (no image is read)."""
        points = self._camera_points(self.rows)
        rel = _targets_3d(points, self.index.is_left[self.rows].astype(bool))
        valid = torch.from_numpy(self.index.joint_valid[self.rows][:, :, INTERHAND_TO_MANO21]).bool()
        return torch.where(valid[..., None], rel, 0.0).float(), valid.float()

    def _mesh(self, pose: torch.Tensor, shape: torch.Tensor, is_left: bool, rot_aug: torch.Tensor) -> torch.Tensor:
        """GT mesh ``(778, 3)`` minus the MANO wrist, as BlurHandNet evaluates it: the hand's own MANO model
        with the camera-frame pose ``(48,)``; then mirrored for left hands and rotated like the joints."""
        side = "left" if is_left else "right"
        if side not in self._mano:
            self._mano[side] = Mano(load_mano_arrays(self.mano_path, side), side=side)
        with torch.no_grad():
            out = self._mano[side](pose[None, :3].float(), pose[None, 3:].float(), shape[None].float())
        mesh = (out.vertices[0] - out.joints[0, :1]).double()  # (V, 3)
        if is_left:
            mesh = mirror_points(mesh)
        return mesh @ rot_aug.T

    def hand_counts(self) -> dict[str, int]:
        """Samples per hand side and per source annotation type (right/left/interacting)."""
        left = self.index.is_left[self.rows].astype(bool)
        counts = {"right_hands": int((~left).sum()), "left_hands": int(left.sum())}
        types = self.index.hand_type[self.rows]
        counts.update({f"from_{name}": int((types == k).sum()) for k, name in enumerate(HAND_TYPES)})
        return counts


def _targets_3d(points: torch.Tensor, is_left: np.ndarray) -> torch.Tensor:
    """Camera-frame joints ``points (n, T, J, 3)`` mm, InterHand order -> the 3D targets ``(n, T, J, 3)``:
    wrist-relative, metres, left hands (``is_left (n,)``) mirrored, MANO-21 order."""
    rel = (points - points[:, :, WRIST : WRIST + 1]) / 1000.0
    rel = torch.where(torch.from_numpy(is_left)[:, None, None, None], mirror_points(rel), rel)
    return rel[:, :, torch.from_numpy(INTERHAND_TO_MANO21)]


def load_mano_arrays(mano_path: str, side: str) -> dict[str, np.ndarray]:
    """MANO arrays of ``side``; the left model gets BlurHandNet's fix for the official ``MANO_LEFT.pkl``, whose
    shapedirs x component has the right hand's sign (detected as in BlurHandNet: nearly equal to the right's)."""
    arrays = load_model_file(model_path(mano_path, side))
    if side == "left":
        right = load_model_file(model_path(mano_path, "right"))
        if np.abs(arrays["shapedirs"][:, 0] - right["shapedirs"][:, 0]).sum() < 1.0:
            log.info("fixing the sign of the left MANO model's x shapedirs (official MANO_LEFT bug)")
            arrays = {**arrays, "shapedirs": arrays["shapedirs"] * np.array([-1.0, 1.0, 1.0])[None, :, None]}
    return arrays


def load_image(path: Path) -> Image.Image:
    """Decode an image as RGB; a missing or corrupt file raises :class:`BadImageError` naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise BadImageError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(f"{path}: unreadable or corrupt image ({err})") from None


@dataclass
class SplitCheck:
    """What ``hmh data check`` found for one split."""

    split: str
    samples: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    images_checked: int = 0
    images_total: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: samples per hand side and source hand type, skips, images checked."""
        counts = f" ({', '.join(f'{k} {v}' for k, v in self.counts.items())})" if self.counts else ""
        skipped = ", ".join(f"{k} {v}" for k, v in self.skipped.items() if v) or "none"
        status = f"{len(self.problems)} problem(s)" if self.problems else "ok"
        return (f"{self.split}: {self.samples} samples{counts}; skipped: {skipped}; "
                f"images checked {self.images_checked}/{self.images_total}: {status}")  # fmt: skip


def _check_annotations(report: SplitCheck, root: Path) -> BlurHandDataset | None:
    """Parse the split's JSONs into ``report`` (its non-finite values, skips, and every camera of ``_camera.json``,
    used by a sample or not); the split's dataset, or None when it has no usable sample or cannot be read."""
    dataset = None
    try:
        index, _ = load_index(root, report.split)
        report.problems.extend(str(m) for m in index.non_finite)
        report.skipped = index.skipped
        dataset = BlurHandDataset(root, report.split, image_size=1, augment=False, skip_bad_annotations=True)
    except DatasetError as err:
        report.problems.append(str(err))
    try:
        cameras = camera_problems(annotation_files(root, report.split)["camera"])
    except DatasetError as err:
        cameras = [str(err)]
    report.problems.extend(p for p in cameras if p not in report.problems)
    return dataset


def check_root(root: str | Path, full: bool = False, max_images: int = 200, seed: int = 0) -> list[SplitCheck]:
    """Validate a BlurHand root: layout, the four JSONs of each split (parsed into the index), and images.

    Every non-finite annotation value is a problem (file, JSON location, value), in every camera of the camera file
    whether a sample uses it or not; so is a split without a usable sample. Images are decoded and their size
    compared with ``_data.json``: all of them with ``full``, else a seeded sample of ``max_images``. Returns one
    :class:`SplitCheck` per split found; raises :class:`DatasetError` when ``root`` holds no split at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: BlurHand root folder not found")
    splits = [s for s in ("train", "test") if (root / "annotations" / s).is_dir() or image_folder(root, s).is_dir()]
    if not splits:
        raise DatasetError(f"{root}: no BlurHand split: expected annotations/{{train,test}}/ and blur_images/...")
    reports = []
    for split in splits:
        report = SplitCheck(split)
        reports.append(report)
        if not image_folder(root, split).is_dir():
            report.problems.append(f"{image_folder(root, split)}: image folder not found")
        dataset = _check_annotations(report, root)
        if dataset is None:
            continue
        report.samples, report.counts = len(dataset), dataset.hand_counts()
        index = dataset.index
        used = np.unique(index.image)
        report.images_total = len(used)
        if not full and len(used) > max_images:
            used = np.sort(np.random.default_rng(seed).choice(used, size=max_images, replace=False))
        for row in used:
            path = image_folder(root, split) / str(index.image_files[row])
            try:
                size = load_image(path).size
            except BadImageError as err:
                report.problems.append(str(err))
                continue
            if size != tuple(int(v) for v in index.image_size[row]):
                report.problems.append(f"{path}: image is {size[0]}x{size[1]}, _data.json says "
                                       f"{index.image_size[row][0]}x{index.image_size[row][1]}")  # fmt: skip
        report.images_checked = len(used)
    return reports
