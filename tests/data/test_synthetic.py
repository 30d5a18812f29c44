"""The synthetic BlurHand-format generator: motion prior, schema, self-consistency, determinism, atomicity, CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hmh.mano.model
from hmh.cli import main
from hmh.config import DataConfig
from hmh.data import motion, synth_worker, synthetic
from hmh.data.synthetic import PARTIAL_MARKER, SyntheticDataError, build_dataset, synthetic_dataset_dir
from hmh.errors import HmhError
from hmh.files import folder_lock
from hmh.mano.model import INTERHAND_TO_MANO21, Mano

ARGS = dict(train=6, test=4, size=64, subframes=5, seed=0)
NAMES = ("data", "camera", "joint_3d", "MANO_NeuralAnnot")


def load(root: Path, split: str) -> dict:
    return {name: json.loads((root / "annotations" / split / f"BlurHand_{split}_{name}.json").read_text())
            for name in NAMES}


def samples(files: dict):
    """(middle annotation, its image, {annotation id: (annotation, image)}) per sample."""
    images = {image["id"]: image for image in files["data"]["images"]}
    anns = {ann["id"]: (ann, images[ann["image_id"]]) for ann in files["data"]["annotations"]}
    return [(ann, images[ann["image_id"]], anns) for ann in files["data"]["annotations"] if ann["is_middle"]]


def camera(files: dict, image: dict) -> tuple[np.ndarray, ...]:
    cam = files["camera"][str(image["capture"])]
    name = image["camera"]
    return tuple(np.array(cam[key][name], dtype=np.float64) for key in ("camrot", "campos", "focal", "princpt"))


def world_joints(files: dict, image: dict) -> np.ndarray:
    return np.array(files["joint_3d"][str(image["capture"])][str(image["frame_idx"])]["world_coord"])  # (42, 3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("synth") / "ds", **ARGS, progress=False, workers=1)


@pytest.fixture(scope="module")
def black_dataset(tmp_path_factory) -> Path:
    """The same dataset over black backgrounds, so the hand is what is bright."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synth_worker, "background", lambda rng, size, clutter: np.zeros((size, size, 3), np.float32))
        return build_dataset(tmp_path_factory.mktemp("black") / "ds", **ARGS, progress=False, workers=1)


def test_motion_regimes_give_still_and_fast_clips():
    rng = np.random.default_rng(0)
    travel = []
    for _ in range(300):
        clip = motion.sample_clip(rng, "right", np.eye(45))
        assert clip.orient.shape == (5, 3) and clip.hand_pose.shape == (5, 45) and clip.betas.shape == (10,)
        travel.append(np.linalg.norm(clip.wrist[-1] - clip.wrist[0]))
    travel = np.array(travel)
    assert (travel < 0.004).mean() > 0.15 and (travel > 0.05).mean() > 0.15  # sharp and strongly blurred


def test_bench_profile_keeps_hands_near_palm_and_back_views():
    bench = motion.profile("bench")
    rng = np.random.default_rng(0)
    for _ in range(200):
        middle = motion.sample_clip(rng, "right", np.eye(45), bench).orient[2]  # keyframe 2 = the labelled frame
        assert np.linalg.norm(middle) <= bench.orientation_spread + 1e-9
    rig = motion.sample_rig(rng, 40, 128, bench)
    axis = np.asarray(bench.camera_axis)
    for index, position in enumerate(rig.campos):
        cosine = (position @ axis) / np.linalg.norm(position) * (1 if index % 2 == 0 else -1)
        assert cosine >= np.cos(bench.camera_spread) - 1e-9  # within the cap, palm side and back side alternating
    full = [motion.sample_clip(rng, "right", np.eye(45)).orient[2] for _ in range(200)]
    assert max(np.linalg.norm(o) for o in full) > 2.5  # the full profile draws any orientation


def test_profiles_are_the_configs_choices_and_unknown_names_fail():
    from hmh.config import SYNTHETIC_PROFILES, ConfigError, load_config

    assert tuple(motion.PROFILES) == SYNTHETIC_PROFILES
    with pytest.raises(ValueError, match="unknown synthetic data profile 'easy'"):
        motion.profile("easy")
    with pytest.raises(ConfigError, match="data.synthetic_profile"):
        load_config("cpu", ["data.synthetic_profile=easy"])
    assert load_config("bench").data.synthetic_profile == "bench"


def test_subframes_span_the_keyframes_exactly():
    np.testing.assert_allclose(motion.subframe_times(9), np.arange(9) / 2)
    assert motion.subframe_times(1).tolist() == [2.0]
    with pytest.raises(ValueError, match="odd"):
        motion.subframe_times(4)
    keys = np.random.default_rng(1).normal(size=(5, 15, 3))
    times = motion.subframe_times(9)
    for rotation in (True, False):
        out = motion.interpolate(keys, times, rotation)
        np.testing.assert_array_equal(out[::2], keys)  # keyframes exactly, incl. first, middle, last
    half = motion.interpolate(keys[:, :1], np.array([0.5]), rotation=True)[0, 0]
    assert np.linalg.norm(half - (keys[0, 0] + keys[1, 0]) / 2) < np.linalg.norm(keys[0, 0] - keys[1, 0])


def test_layout_and_schema(dataset):
    meta = (dataset / "dataset.yaml").read_text()
    assert "generator_version: 1" in meta and "subframes: 5" in meta
    assert not dataset.with_name("ds.partial").exists()
    sides = set()
    for split, count in (("train", ARGS["train"]), ("test", ARGS["test"])):
        files = load(dataset, split)
        found = samples(files)
        assert len(found) == count
        ids = [ann["id"] for ann in files["data"]["annotations"]]
        assert len(ids) == len(set(ids)) == 5 * count
        for ann, image, anns in found:
            assert (dataset / "blur_images" / split / image["file_name"]).is_file()
            assert Image.open(dataset / "blur_images" / split / image["file_name"]).size == (64, 64)
            aids = ann["aid_list"]
            assert len(aids) == 5 and aids[2] == ann["id"] and all(a in anns for a in aids)
            frame = image["frame_idx"]
            assert [anns[a][1]["frame_idx"] for a in aids] == list(range(frame - 2, frame + 3))
            assert {anns[a][1]["camera"] for a in aids} == {image["camera"]}
            side = ann["hand_type"]
            sides.add(side)
            valid = np.array(ann["joint_valid"]).reshape(2, 21)
            assert valid[1 - ("right", "left").index(side)].sum() == 0 and valid.sum() > 0
            entry = files["MANO_NeuralAnnot"][str(image["capture"])][str(image["frame_idx"])]
            assert entry[side] is not None and entry[{"right": "left", "left": "right"}[side]] is None
            assert len(entry[side]["pose"]) == 48 and len(entry[side]["shape"]) == 10 and len(entry[side]["trans"]) == 3
            assert len(ann["bbox"]) == 4 and ann["bbox"][2] > 0 and ann["bbox"][3] > 0
    assert sides == {"right", "left"}


def test_mano_params_reproduce_joint_3d(dataset):
    models = {side: Mano("", side=side) for side in ("right", "left")}
    worst = 0.0
    for split in ("train", "test"):
        files = load(dataset, split)
        for capture, frames in files["MANO_NeuralAnnot"].items():
            for frame, entry in frames.items():
                side = "right" if entry["right"] else "left"
                p = {k: torch.tensor([entry[side][k]], dtype=torch.float32) for k in ("pose", "shape", "trans")}
                joints = models[side](p["pose"][:, :3], p["pose"][:, 3:], p["shape"], transl=p["trans"]).joints[0]
                coords = np.array(files["joint_3d"][capture][frame]["world_coord"]).reshape(2, 21, 3)
                target = coords[("right", "left").index(side)][INTERHAND_TO_MANO21]  # (21, 3) mm, MANO-21
                worst = max(worst, np.abs(joints.double().numpy() * 1000.0 - target).max())
    assert worst < 0.5  # mm, fingertips included: same model, same tip vertices


def test_aid_list_is_a_smooth_trajectory_through_the_sample(dataset):
    files = load(dataset, "train")
    for ann, image, anns in samples(files):
        side = ("right", "left").index(ann["hand_type"])
        wrists = np.array([world_joints(files, anns[a][1]).reshape(2, 21, 3)[side, 20] for a in ann["aid_list"]])
        np.testing.assert_array_equal(wrists[2], world_joints(files, image).reshape(2, 21, 3)[side, 20])
        step = np.linalg.norm(np.diff(wrists, axis=0), axis=1)  # (4,) mm per 1/30 s
        bend = np.linalg.norm(np.diff(wrists, 2, axis=0), axis=1)  # (3,)
        assert step.max() < 80.0 and bend.max() <= 0.5 * step.max() + 0.5


def test_projected_joints_land_on_the_rendered_hand(black_dataset):
    for split in ("train", "test"):
        files = load(black_dataset, split)
        for ann, image, _ in samples(files):
            pixels = np.asarray(Image.open(black_dataset / "blur_images" / split / image["file_name"]), float)
            smooth = sum(np.roll(np.roll(pixels.max(-1), dr, 0), dc, 1) for dr in (-1, 0, 1) for dc in (-1, 0, 1))
            hand = smooth / 9 > max(8.0, smooth.max() / 9 / 4)  # above the sensor noise of a black background
            assert 0.005 < hand.mean() < 0.6
            rot, campos, focal, princpt = camera(files, image)
            hand_slice = slice(0, 21) if ann["hand_type"] == "right" else slice(21, 42)
            cam = (world_joints(files, image)[hand_slice] - campos) @ rot.T  # (21, 3) mm
            uv = cam[:, :2] / cam[:, 2:] * focal + princpt
            valid = np.array(ann["joint_valid"], dtype=bool)[hand_slice]
            inside = (uv >= 0).all(1) & (uv <= 63).all(1) & (cam[:, 2] > 0)
            np.testing.assert_array_equal(valid[valid | inside], inside[valid | inside])
            cols, rows = np.clip(np.round(uv[valid]).astype(int), 0, 63).T
            near = np.zeros_like(hand)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    near |= np.roll(np.roll(hand, dr, 0), dc, 1)
            assert near[rows, cols].mean() >= 0.9  # joints sit on the hand (1 px slack for thin fingers)


def test_deterministic_bytes(dataset, tmp_path):
    again = build_dataset(tmp_path / "again", **ARGS, progress=False, workers=1)
    for split in ("train", "test"):
        for name in NAMES:
            rel = Path("annotations") / split / f"BlurHand_{split}_{name}.json"
            assert (again / rel).read_bytes() == (dataset / rel).read_bytes()
    jpegs = sorted(p.relative_to(dataset) for p in dataset.rglob("*.jpg"))
    assert jpegs == sorted(p.relative_to(again) for p in again.rglob("*.jpg"))
    for rel in jpegs:
        assert (again / rel).read_bytes() == (dataset / rel).read_bytes()
    other = build_dataset(tmp_path / "other", **{**ARGS, "seed": 4}, progress=False, workers=1)
    rel = Path("annotations/train/BlurHand_train_joint_3d.json")
    assert (other / rel).read_bytes() != (dataset / rel).read_bytes()


def test_annotations_written_per_split_during_the_build_equal_writing_them_at_the_end(dataset, tmp_path):
    """The straightforward way: every chunk's records first, then both splits' annotation files."""
    from hmh.data.synthetic import SPLITS, SynthArgs, _tasks, _write_annotations

    args = SynthArgs(**ARGS)
    records = {split: [] for split in SPLITS}
    for task in _tasks(tmp_path, args):
        records[task.split] += synth_worker.render_chunk(task)
    for split in SPLITS:
        _write_annotations(tmp_path, split, records[split], args)
        for name in NAMES:
            rel = Path("annotations") / split / f"BlurHand_{split}_{name}.json"
            assert (tmp_path / rel).read_bytes() == (dataset / rel).read_bytes()


def test_render_chunk_runs_mano_with_one_torch_thread_whatever_the_caller_set(tmp_path, monkeypatch):
    """Float32 reductions over several threads can change the last digit (AVX-512): every caller of render_chunk
    gets the one-thread bytes, and its own thread count back."""
    from hmh.data.synthetic import SynthArgs, _tasks

    seen = []
    pose_side = synth_worker._pose_side

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return pose_side(*args, **kwargs)

    monkeypatch.setattr(synth_worker, "_pose_side", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        synth_worker.render_chunk(_tasks(tmp_path, SynthArgs(**{**ARGS, "train": 4, "test": 0}))[0])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}


def test_phase_timer_changes_nothing_and_sees_every_phase(tmp_path):
    from hmh.data.synthetic import SynthArgs, _tasks
    from hmh.data.timing import PhaseTimer

    args = SynthArgs(**{**ARGS, "train": 8, "test": 0})
    plain, timed = (_tasks(tmp_path / name, args)[0] for name in ("plain", "timed"))
    timer = PhaseTimer()
    records = synth_worker.render_chunk(plain), synth_worker.render_chunk(timed, timer)
    assert [r.cameras for r in records[0]] == [r.cameras for r in records[1]]
    for a, b in zip(*records, strict=True):
        np.testing.assert_array_equal(a.world_mm, b.world_mm)
    jpegs = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*.jpg"))
    assert len(jpegs) == 8
    for rel in jpegs:
        assert (tmp_path / "plain" / rel).read_bytes() == (tmp_path / "timed" / rel).read_bytes()
    phases = ("posing", "skinning", "rendering", "averaging", "background", "encoding", "writing")
    assert set(timer.wall) == set(timer.cpu) == set(phases)
    assert all(timer.wall[p] > 0 for p in phases)


def test_interrupted_build_leaves_nothing_complete_and_reruns(dataset, tmp_path, monkeypatch):
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    real = synth_worker.finish_image
    monkeypatch.setattr(synth_worker, "finish_image", crash)
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_dataset(out, **ARGS, progress=False, workers=1)
    assert not out.exists() and not out.with_name("ds.partial").exists()
    killed = out.with_name("ds.partial") / "annotations"  # what a killed (not failed) build leaves behind
    killed.mkdir(parents=True)
    (killed / "junk.json").write_text("{")
    (killed.parent / PARTIAL_MARKER).write_text("")
    monkeypatch.setattr(synth_worker, "finish_image", real)
    build_dataset(out, **ARGS, progress=False, workers=1)
    assert not (out / "annotations" / "junk.json").exists()
    rel = Path("annotations/test/BlurHand_test_data.json")
    assert (out / rel).read_bytes() == (dataset / rel).read_bytes()
    assert not out.with_name("ds.partial").exists() and not (out / PARTIAL_MARKER).exists()


def test_a_partial_folder_the_build_did_not_make_is_refused_and_kept(tmp_path, snapshot, one_line_error):
    partial = tmp_path / "ds.partial"
    (partial / "notes").mkdir(parents=True)
    (partial / "notes" / "mine.txt").write_text("the user's own file")
    before = snapshot(partial)
    assert main(["data", "synth", "--out", str(tmp_path / "ds"), "--train", "2", "--test", "0", "--size", "32",
                 "--subframes", "1", "--no-progress"]) == 2
    assert str(partial) in one_line_error() and snapshot(partial) == before and not (tmp_path / "ds").exists()


def test_existing_output_is_kept_or_refused(dataset, tmp_path):
    stamp = (dataset / "dataset.yaml").stat().st_mtime_ns
    assert build_dataset(dataset, **ARGS, progress=False) == dataset  # complete, same arguments: kept
    assert (dataset / "dataset.yaml").stat().st_mtime_ns == stamp
    with pytest.raises(SyntheticDataError, match="exists"):
        build_dataset(dataset, **{**ARGS, "seed": 9}, progress=False)


def test_cached_dataset_is_built_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HMH_CACHE_DIR", str(tmp_path))
    cfg = DataConfig(synthetic_train=2, synthetic_test=2, synthetic_size=32, synthetic_subframes=3)
    root = synthetic_dataset_dir(cfg, progress=False)
    assert root.parent == tmp_path and root.name.startswith("blurhand-synth-")
    stamp = (root / "dataset.yaml").stat().st_mtime_ns
    assert synthetic_dataset_dir(cfg, progress=False) == root
    assert (root / "dataset.yaml").stat().st_mtime_ns == stamp


def test_a_second_build_into_the_same_folder_stops_with_one_line(tmp_path, one_line_error):
    out = tmp_path / "ds"
    with folder_lock.exclusive(out):  # a first `hmh data synth --out ds` still running
        assert main(["data", "synth", "--out", str(out), "--train", "2", "--test", "0", "--size", "32",
                     "--subframes", "1", "--no-progress"]) == 2
    assert f"{out} is being written by" in one_line_error()
    assert not out.exists() and not out.with_name("ds.partial").exists()


def test_the_cache_build_waits_for_the_builder_holding_the_lock(monkeypatch, tmp_path):
    monkeypatch.setenv("HMH_CACHE_DIR", str(tmp_path))
    cfg = DataConfig(synthetic_train=2, synthetic_test=2, synthetic_size=32, synthetic_subframes=3)
    built = []
    monkeypatch.setattr(synthetic, "_build_locked", lambda out, *args: built.append(out) or out)
    out = tmp_path / f"blurhand-synth-{synthetic.SynthArgs(2, 2, 32, 3, cfg.synthetic_seed).digest()}"
    with folder_lock.exclusive(out):
        waiter = threading.Thread(target=synthetic_dataset_dir, args=(cfg, False))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not built  # waiting for the lock, not failing
    waiter.join(10.0)
    assert not waiter.is_alive() and built == [out]


def test_cache_that_is_not_a_writable_folder_is_one_error_naming_it(monkeypatch, tmp_path):
    cfg = DataConfig(synthetic_train=2, synthetic_test=2, synthetic_size=32, synthetic_subframes=3)
    plain = tmp_path / "cache.txt"
    plain.write_text("not a folder")
    monkeypatch.setenv("HMH_CACHE_DIR", str(plain))
    with pytest.raises(HmhError, match=rf"^cache folder {plain} \(from \$HMH_CACHE_DIR\) is not a writable folder"):
        synthetic_dataset_dir(cfg, progress=False)
    assert plain.read_text() == "not a folder"
    monkeypatch.setenv("HMH_CACHE_DIR", str(tmp_path / "readonly"))
    monkeypatch.setattr(hmh.mano.model.os, "access", lambda path, mode: False)  # read-only, even when run as root
    with pytest.raises(HmhError, match=r"readonly \(from \$HMH_CACHE_DIR\) is not a writable folder"):
        synthetic_dataset_dir(cfg, progress=False)


@pytest.mark.parametrize(
    "flag, value, message",
    [("--subframes", "4", "--subframes"), ("--size", "8", "--size"), ("--train", "-1", "--train")],
)
def test_cli_rejects_bad_arguments(tmp_path, capsys, flag, value, message):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), flag, value, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(tmp_path / "x"), "--size", "big"])


def test_cli_synth_and_preview(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--train", "2", "--test", "3", "--size", "48",
                 "--subframes", "3", "--no-progress"]) == 0
    assert "images/s" in capsys.readouterr().out
    sheet = tmp_path / "sheet.png"
    assert main(["data", "preview", str(out), "--out", str(sheet), "--n", "4", "--tile", "64"]) == 0
    pixels = np.asarray(Image.open(sheet).convert("RGB")).reshape(-1, 3).astype(int)
    assert Image.open(sheet).size == (128, 128)
    assert (np.abs(pixels - [60, 220, 60]).sum(1) < 30).sum() > 10  # current-frame skeleton drawn
    assert main(["data", "preview", str(tmp_path / "nothing"), "--out", str(sheet)]) == 2


def test_worker_processes_do_not_change_the_files(tmp_path):
    small = dict(train=34, test=0, size=32, subframes=3, seed=5)  # 17 clips: 3 work units
    inline = build_dataset(tmp_path / "one", **small, progress=False, workers=1)
    pooled = build_dataset(tmp_path / "two", **small, progress=False, workers=2)
    files = sorted(p.relative_to(inline) for p in inline.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(pooled) for p in pooled.rglob("*") if p.is_file())
    for rel in files:
        assert (inline / rel).read_bytes() == (pooled / rel).read_bytes(), rel


def test_joints_outside_the_image_are_invalid():
    uv = np.array([[0.0, 0.0], [63.0, 63.0], [-0.1, 10.0], [10.0, 63.2], [30.0, 30.0]])
    z = np.array([500.0, 500.0, 500.0, 500.0, -500.0])  # the last is behind the camera
    valid = synth_worker._inside(uv, z, 64)
    assert valid.tolist() == [True, True, False, False, False]
    box = synth_worker._bbox(uv, valid, 64)
    np.testing.assert_allclose(box, [0.0, 0.0, 63.0, 63.0])  # x1.2 around the two valid corners, clipped
    assert synth_worker._bbox(uv, np.zeros(5, bool), 64).tolist() == [0.0, 0.0, 63.0, 63.0]


def test_the_clean_up_of_a_failed_build_removes_its_marker_last(tmp_path, monkeypatch):
    """The marker goes last: a second signal (or SIGKILL) during the clean-up leaves a leftover that the next build
    recognises as its own, instead of an unmarked folder it must refuse."""
    partial = tmp_path / "ds.partial"
    (partial / "blur_images" / "train").mkdir(parents=True)
    (partial / "annotations").mkdir()
    (partial / "annotations" / "a.json").write_text("{")
    (partial / PARTIAL_MARKER).write_text("")
    real = synthetic.shutil.rmtree
    left_when_the_folder_went: list[list[str]] = []

    def recording(path, *args, **kwargs):
        if Path(path) == partial:
            left_when_the_folder_went.append(sorted(p.name for p in partial.iterdir()))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(synthetic.shutil, "rmtree", recording)
    synthetic._remove_partial(partial)
    assert left_when_the_folder_went == [[PARTIAL_MARKER]] and not partial.exists()
