"""A synthetic motion-blurred hand dataset written in BlurHand's exact on-disk format (read by ``hmh.data.blurhand``).

Layout: ``<root>/blur_images/{split}/Capture<c>/<seq>/cam<id>/image<frame>.jpg`` (one JPEG per sample, named by
its middle frame) and ``<root>/annotations/{split}/BlurHand_{split}_{data,camera,joint_3d,MANO_NeuralAnnot}.json``,
plus ``<root>/dataset.yaml`` (generator version and arguments). Each clip (one hand, 5 keyframes at 30 fps, see
:mod:`hmh.data.motion`) is seen by ``VIEWS_PER_CLIP`` cameras of its capture's rig; a view is one blurred image,
the mean of F sub-frames spanning keyframe 0 to keyframe 4 in linear light, over a procedural background.

Conventions the reader relies on (identical to BlurHand/InterHand2.6M):

- Every keyframe of every view is a COCO ``images`` entry and an ``annotations`` entry (annotation id = image id).
  Only the middle keyframe's annotation has ``is_middle=True``; only its image file exists on disk (it is the
  blurred one). All five annotations of a view share ``aid_list`` = their ids in time order, so past =
  ``aid_list[0]`` (sub-frame 0), current = the ``is_middle`` annotation = ``aid_list[2]`` (the middle
  sub-frame), future = ``aid_list[-1]`` (the last sub-frame), all seen by the same camera.
- ``frame_idx`` is unique within a capture (clip ``i`` of a capture owns frames ``5 i .. 5 i + 4``);
  ``joint_3d`` and ``MANO_NeuralAnnot`` are keyed ``[str(capture)][str(frame_idx)]``.
- Cameras: ``X_cam = camrot @ (X_world - campos)`` in millimetres; pixel ``(fx x / z + cx, fy y / z + cy)`` with
  integer coordinates at pixel centres (OpenCV); images are ``size x size``.
- ``joint_3d``: ``world_coord`` (42, 3) mm, InterHand order per hand (right 0-20, left 21-41; wrist = 20 / 41),
  the absent hand all zeros; ``joint_valid`` (42,) 1 for the present hand. Fingertips are MANO vertices
  745, 317, 445, 556, 673 (``hmh.mano.model.FINGERTIP_VERTEX_IDS``), so MANO joints reproduce ``world_coord`` exactly.
- COCO ``joint_valid`` (42,): 1 where the joint of that keyframe projects inside the image (and in front of the
  camera); ``bbox`` [x, y, w, h] px around those joints (x1.2); ``hand_type`` 'right' | 'left' (no interacting).
- ``MANO_NeuralAnnot``: ``pose`` (48,) = world-frame global orient (3) + hand pose (45) relative to the MANO mean
  pose (``flat_hand_mean=False``), ``shape`` (10,), ``trans`` (3,) metres with smplx's ``transl`` meaning: added to
  the posed model after the global rotation about the rest wrist, i.e.
  ``1000 * Mano(side)(pose[:3], pose[3:], shape, transl=trans).joints == world_coord`` (MANO-21 order, mm).
  The absent hand is ``null``. To bring it into a camera, left-multiply the global orient by ``camrot`` and map
  the joints as points (BlurHandNet's ``process_human_model_output``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

import hmh
from hmh.config import ConfigError, DataConfig
from hmh.data import motion
from hmh.data.render import MAX_SIDE
from hmh.data.synth_worker import ChunkTask, ClipRecord, render_chunk, sample_rig, worker_init
from hmh.errors import HmhError
from hmh.files import folder_lock
from hmh.mano.model import cache_folder

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
GENERATOR = "hmh.data.synthetic"  # the manifest's "generator"
CACHE_PREFIX = "blurhand-synth-"  # the cached datasets' folder names
SPLITS = ("train", "test")
CAMERAS_PER_CAPTURE = 8
VIEWS_PER_CLIP = 2
CLIPS_PER_CAPTURE = 50
CHUNK_CLIPS = 8  # clips per work unit; fixed, so the files never depend on the number of workers
MAX_SIZE = 1024
MAX_IMAGES = 10_000_000
PARTIAL_MARKER = ".hmh-synth-partial"  # written first into the ``out.partial`` a build creates: only those are removed


class SyntheticDataError(HmhError):
    """Invalid generator arguments, or an output folder that holds something else."""


@dataclass(frozen=True)
class SynthArgs:
    """Everything the generated files depend on."""

    train: int
    test: int
    size: int
    subframes: int
    seed: int
    profile: str = "full"  # the distribution hands, cameras and backgrounds are drawn from (hmh.data.motion)

    def validate(self) -> None:
        for name in ("train", "test"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_IMAGES:
                raise SyntheticDataError(f"--{name} must be between 0 and {MAX_IMAGES} images, got {value}")
        if self.train + self.test == 0:
            raise SyntheticDataError("nothing to generate: --train and --test are both 0")
        if not 32 <= self.size <= MAX_SIZE:
            raise SyntheticDataError(f"--size must be between 32 and {MAX_SIZE} pixels, got {self.size}")
        if self.subframes < 1 or self.subframes % 2 == 0 or self.subframes * self.size > MAX_SIDE:
            raise SyntheticDataError(
                f"--subframes must be odd (the middle sub-frame is the current frame), >= 1 and at most "
                f"{MAX_SIDE} / size; got {self.subframes} at size {self.size}"
            )
        if not 0 <= self.seed < 2**63:
            raise SyntheticDataError(f"--seed must be between 0 and {2**63 - 1}, got {self.seed}")
        if self.profile not in motion.PROFILES:
            raise SyntheticDataError(f"--profile must be one of {', '.join(motion.PROFILES)}, got {self.profile!r}")

    def digest(self) -> str:
        """Short hash naming the cached dataset built from these arguments."""
        distribution = asdict(motion.PROFILES[self.profile])  # the profile's ranges, so editing one rebuilds
        text = json.dumps({"version": GENERATOR_VERSION, **asdict(self), "distribution": distribution}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def synthetic_dataset_dir(cfg: DataConfig, progress: bool = True) -> Path:
    """The synthetic dataset for ``cfg.synthetic_*``, built once into the cache (safe across processes)."""
    args = SynthArgs(cfg.synthetic_train, cfg.synthetic_test, cfg.synthetic_size, cfg.synthetic_subframes,
                     cfg.synthetic_seed, cfg.synthetic_profile)
    args.validate()
    out = cache_folder() / f"{CACHE_PREFIX}{args.digest()}"
    return build_dataset(out, **asdict(args), progress=progress, wait=True)  # the others wait, find it complete


def _manifest(args: SynthArgs, counts: dict) -> str:
    return yaml.safe_dump(
        {
            "format": "BlurHand",
            "generator": GENERATOR,
            "generator_version": GENERATOR_VERSION,
            "hmh_version": hmh.__version__,
            "arguments": asdict(args),
            "counts": counts,
        },
        sort_keys=False,
    )


def is_synthetic_root(root: str | os.PathLike) -> bool:
    """Whether a ``data.root`` names this generator's data: ``""`` (the cached synthetic dataset), a folder whose
    ``dataset.yaml`` says so, or (when that folder is not on this machine) a cached dataset's folder name."""
    if not str(root):
        return True
    try:
        meta = yaml.safe_load((Path(root) / "dataset.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return not Path(root).is_dir() and Path(root).name.startswith(CACHE_PREFIX)
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def check_hand_model(root: str | os.PathLike, mano_path: str | os.PathLike) -> None:
    """Refuse hmh's synthetic hand (``model.mano_path`` empty) on data this generator did not write (a ``data.root``
    without its ``dataset.yaml``, such as the real BlurHand): those MANO annotations are parameters of the real MANO
    model, which the synthetic hand would pose into wrong meshes and joints. A :class:`ConfigError` naming both keys;
    called before any data is read by ``hmh train``, ``hmh evaluate`` and the Ray drivers."""
    if not str(mano_path) and not is_synthetic_root(root):
        raise ConfigError(
            f"model.mano_path is empty (hmh's synthetic hand), but data.root={str(root)!r} is not hmh's synthetic "
            "data (no dataset.yaml of hmh data synth): its MANO annotations need the real MANO model; set "
            "model.mano_path to the folder holding MANO_RIGHT.pkl and MANO_LEFT.pkl (from mano.is.tue.mpg.de)")


def is_complete(out: Path, args: SynthArgs) -> bool:
    """Whether ``out`` is a finished dataset built with ``args`` by this generator version."""
    try:
        meta = yaml.safe_load((Path(out) / "dataset.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("arguments") == asdict(args)
    )


def build_dataset(
    out: str | os.PathLike,
    train: int,
    test: int,
    size: int,
    subframes: int,
    seed: int,
    profile: str = "full",
    progress: bool = True,
    workers: int | None = None,
    wait: bool = False,
) -> Path:
    """Write the dataset to ``out`` (via ``out.partial``, renamed when complete) and return ``out``.

    An existing complete dataset with the same arguments is kept as is; any other existing ``out`` is an error.
    The build holds ``out``'s folder lock (:mod:`hmh.files.folder_lock`): another build into ``out`` is an
    error, or with
    ``wait`` waits for it (and then finds its dataset). It writes into ``out.partial``, marked as its own
    (``PARTIAL_MARKER``), and renames it when complete; a failed build removes it, and a marked leftover (a killed
    build) is removed first, while an unmarked ``out.partial`` is an error. ``workers``: processes, 1 to twice the
    CPUs and never more than the work units (default: up to 2, inline for small builds); the files do not depend
    on it.
    """
    args = SynthArgs(train, test, size, subframes, seed, profile)
    args.validate()
    cpus = os.cpu_count() or 1
    if workers is not None and not 1 <= workers <= 2 * cpus:
        raise SyntheticDataError(f"--workers must be between 1 and {2 * cpus} (twice this machine's {cpus} CPUs), "
                                 f"got {workers}")
    out = Path(out)
    with folder_lock.exclusive(out, wait=wait):
        return _build_locked(out, args, progress, workers)


def _build_locked(out: Path, args: SynthArgs, progress: bool, workers: int | None) -> Path:
    """:func:`build_dataset` under ``out``'s lock."""
    if out.exists() or out.is_symlink():
        if is_complete(out, args):
            log.info("synthetic dataset already built: %s", out)
            return out
        raise SyntheticDataError(
            f"{out} exists (or is a symbolic link) and is not a synthetic dataset built with these arguments; "
            "remove it or choose another --out"
        )
    partial = _fresh_partial(out)
    try:
        counts = _generate(partial, args, progress, workers)
        (partial / "dataset.yaml").write_text(_manifest(args, counts))
        (partial / PARTIAL_MARKER).unlink()
        os.replace(partial, out)
    except BaseException:
        _remove_partial(partial)  # never leave a half dataset behind
        raise
    log.info("synthetic dataset written: %s (%s)", out, counts)
    return out


def _remove_partial(partial: Path) -> None:
    """Remove a build's ``out.partial``, its marker last: a removal cut short (a second signal, SIGKILL) leaves a
    folder that the next build still recognises as its own leftover."""
    with contextlib.suppress(FileNotFoundError):
        for child in partial.iterdir():
            if child.name == PARTIAL_MARKER:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    shutil.rmtree(partial, ignore_errors=True)


def _fresh_partial(out: Path) -> Path:
    """Create ``out.partial`` with its marker, removing a marked leftover of a killed build first; an unmarked one
    (not made by a build) is an error and left as it is."""
    partial = out.with_name(out.name + ".partial")
    if partial.is_dir() and not partial.is_symlink() and (partial / PARTIAL_MARKER).is_file():
        log.info("removing the leftover of an interrupted build: %s", partial)
        _remove_partial(partial)
    elif partial.exists() or partial.is_symlink():
        raise SyntheticDataError(
            f"{partial} exists and was not made by a synthetic data build; move or remove it, or choose another --out"
        )
    try:
        partial.mkdir(parents=True)
        (partial / PARTIAL_MARKER).write_text("an unfinished synthetic dataset build; removed by the next one\n")
    except OSError as err:
        with contextlib.suppress(OSError):
            partial.rmdir()  # only when empty: the one this build just made
        raise SyntheticDataError(f"cannot create {partial}: {err.strerror or err}") from None
    return partial


def _tasks(partial: Path, args: SynthArgs) -> list[ChunkTask]:
    """Work units of both splits, in order: chunks of ``CHUNK_CLIPS`` clips."""
    tasks = []
    for split_code, split in enumerate(SPLITS):
        num = getattr(args, split)
        clips = math.ceil(num / VIEWS_PER_CLIP)
        tasks += [
            ChunkTask(
                out=str(partial / "blur_images" / split), split=split, split_code=split_code, first=first,
                count=min(CHUNK_CLIPS, clips - first), num_images=num, size=args.size, subframes=args.subframes,
                seed=args.seed, views_per_clip=VIEWS_PER_CLIP, clips_per_capture=CLIPS_PER_CAPTURE,
                cameras_per_capture=CAMERAS_PER_CAPTURE, profile=args.profile,
            )
            for first in range(0, clips, CHUNK_CLIPS)
        ]
    return tasks


def _run(tasks: list[ChunkTask], workers: int | None) -> Iterator[list[ClipRecord]]:
    """Each task's records, in task order: inline, or on a pool of ``workers`` spawned processes."""
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(tasks) >= 8 else 1
    workers = min(workers, len(tasks))  # an idle process costs a MANO model and a renderer
    if workers <= 1:
        yield from map(render_chunk, tasks)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=worker_init) as pool:
        yield from pool.imap(render_chunk, tasks)


def _generate(partial: Path, args: SynthArgs, progress: bool, workers: int | None) -> dict[str, dict]:
    """Render every image and write each split's annotation files as soon as its last chunk is in (so the train
    split's are written while the workers render the test split); returns each split's counts."""
    from tqdm import tqdm

    tasks = _tasks(partial, args)
    last = {task.split: i for i, task in enumerate(tasks)}  # the index of each split's last task
    records = {split: [] for split in SPLITS}
    counts = {}
    with tqdm(total=args.train + args.test, desc="synth", unit="img", disable=not progress) as bar:
        for i, (task, chunk) in enumerate(zip(tasks, _run(tasks, workers), strict=True)):
            records[task.split] += chunk
            bar.update(sum(len(r.cameras) for r in chunk))
            if i == last[task.split]:
                counts[task.split] = _write_annotations(partial, task.split, records.pop(task.split), args)
    for split in SPLITS:
        if split not in counts:  # no images in it: empty annotation files
            counts[split] = _write_annotations(partial, split, [], args)
    return {split: counts[split] for split in SPLITS}


def _mano_entry(record: ClipRecord, k: int) -> dict:
    return {
        "pose": np.round(record.pose[k], 7).tolist(),
        "shape": np.round(record.shape, 7).tolist(),
        "trans": np.round(record.trans[k], 8).tolist(),
    }


def _write_annotations(partial: Path, split: str, records: list[ClipRecord], args: SynthArgs) -> dict:
    """Write the four annotation JSONs of ``split``; returns counts for ``dataset.yaml``."""
    images, annotations, joints, mano = [], [], {}, {}
    cameras = {}
    for capture in sorted({r.capture for r in records}):
        rig = sample_rig(args.seed, SPLITS.index(split), capture, CAMERAS_PER_CAPTURE, args.size, args.profile)
        cameras[str(capture)] = {
            "campos": {name: rig.campos[c].tolist() for c, name in enumerate(rig.names)},
            "camrot": {name: rig.camrot[c].tolist() for c, name in enumerate(rig.names)},
            "focal": {name: rig.focal[c].tolist() for c, name in enumerate(rig.names)},
            "princpt": {name: rig.princpt[c].tolist() for c, name in enumerate(rig.names)},
        }
    next_id = 0
    for r in records:
        capture = str(r.capture)
        offset = 0 if r.side == "right" else 21  # right hand joints 0-20, left 21-41
        frames = [(r.clip % CLIPS_PER_CAPTURE) * motion.NUM_KEYFRAMES + k for k in range(motion.NUM_KEYFRAMES)]
        for k, frame in enumerate(frames):
            coords = np.zeros((42, 3))
            coords[offset : offset + 21] = r.world_mm[k]
            present = np.zeros(42, dtype=int)
            present[offset : offset + 21] = 1
            joints.setdefault(capture, {})[str(frame)] = {
                "world_coord": np.round(coords, 4).tolist(),
                "joint_valid": present.tolist(),
                "hand_type": r.side,
                "seq": r.seq_name,
            }
            entry = _mano_entry(r, k)
            mano.setdefault(capture, {})[str(frame)] = {
                "right": entry if r.side == "right" else None,
                "left": entry if r.side == "left" else None,
            }
        for view, camera in enumerate(r.cameras):
            ids = list(range(next_id, next_id + len(frames)))
            next_id += len(frames)
            for k, frame in enumerate(frames):
                images.append({
                    "id": ids[k], "file_name": f"Capture{capture}/{r.seq_name}/cam{camera}/image{frame}.jpg",
                    "width": args.size, "height": args.size, "capture": r.capture, "subject": r.capture,
                    "seq_name": r.seq_name, "camera": camera, "frame_idx": frame,
                })
                valid = np.zeros(42, dtype=int)
                valid[offset : offset + 21] = r.valid[view][k]
                annotations.append({
                    "id": ids[k], "image_id": ids[k], "bbox": np.round(r.bbox[view][k], 2).tolist(),
                    "joint_valid": valid.tolist(), "hand_type": r.side, "hand_type_valid": 1, "aid_list": ids,
                    "is_middle": k == motion.MIDDLE,
                })
    folder = partial / "annotations" / split
    folder.mkdir(parents=True, exist_ok=True)
    files = {"data": {"images": images, "annotations": annotations}, "camera": cameras, "joint_3d": joints,
             "MANO_NeuralAnnot": mano}
    for name, content in files.items():
        (folder / f"BlurHand_{split}_{name}.json").write_text(json.dumps(content, separators=(",", ":")))
    (partial / "blur_images" / split).mkdir(parents=True, exist_ok=True)
    regimes = [r.regime for r in records for _ in r.cameras]
    return {
        "images": sum(len(r.cameras) for r in records),
        "annotations": len(annotations),
        "clips": len(records),
        "captures": len(cameras),
        "left": sum(len(r.cameras) for r in records if r.side == "left"),
        "regimes": {name: regimes.count(name) for name in motion.REGIMES},
    }
