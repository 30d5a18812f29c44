"""``hmh predict``: files and their contents, the crop and the 2D mapping, left hands, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from hmh.cli import main
from hmh.config import load_config
from hmh.data.transforms import apply_affine
from hmh.eval.metrics import align_past_future
from hmh.models.build import build_models
from hmh.models.checkpoint import models_from_checkpoint, save_checkpoint
from hmh.predict.files import PICTURES
from hmh.predict.run import MIN_HAND_PIXELS, crop_hand, predict, prediction_name

TINY = [
    "model.backbone=resnet18", "model.image_size=64", "model.embed_dim=32", "model.num_hypotheses=3",
    "model.mht_blocks=1", "model.num_heads=2", "selection.top_n=2", "selection.decoder_blocks=1",
]
BOX = [30.0, 20.0, 50.0, 40.0]  # x, y, w, h inside a 120 x 90 image


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A selection-stage and a generation-stage checkpoint of freshly initialised tiny models (fixed seed)."""
    folder = tmp_path_factory.mktemp("ckpt")
    cfg = load_config("cpu", TINY)
    torch.manual_seed(0)
    generator, selector = build_models(cfg)
    return {
        "selection": save_checkpoint(folder / "selection.pt", generator=generator, selector=selector, config=cfg,
                                     stage="selection", epoch=1),
        "generation": save_checkpoint(folder / "generation.pt", generator=generator, config=cfg,
                                      stage="generation", epoch=1),
    }


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "hand.png"
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(path)
    return path


def _run(*args, pictures: bool = False) -> int:
    return main(["predict", *map(str, args), *([] if pictures else ["--no-pictures"])])


def _folders(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir())


def test_cli_writes_prediction_meshes_and_picture(checkpoints, photo, tmp_path, capsys):
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--bbox", *BOX, "--out", tmp_path, pictures=True) == 0
    folder = tmp_path / prediction_name(photo)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["final_current.obj", "final_future.obj",
                                                               "final_past.obj", "hypotheses.png", "prediction.json",
                                                               *PICTURES])
    printed = capsys.readouterr().out
    assert str(folder) in printed and "mm apart" in printed
    assert printed.count("trained on hmh's synthetic BlurHand-format data only") == 1
    doc = json.loads((folder / "prediction.json").read_text())
    assert doc["num_hypotheses"] == 3 and doc["final_source"] == "selected top-n" and doc["hand"] == "right"
    rewards = np.array([h["reward"] for h in doc["hypotheses"]])
    assert doc["selected"] == np.argsort(-rewards, kind="stable")[:2].tolist()
    joints = np.array([h["joints_3d_mm"] for h in doc["hypotheses"]])  # (K, T, J, 3)
    assert joints.shape == (3, 3, 21, 3) and np.abs(joints[:, :, 0]).max() == 0.0  # wrist-relative
    assert np.array([h["joints_2d_px"] for h in doc["hypotheses"]]).shape == (3, 3, 21, 2)
    chosen = joints[doc["selected"]]
    aligned, swapped = align_past_future(chosen[None], chosen[:1])
    assert swapped[0].tolist() == doc["swapped"]
    np.testing.assert_allclose(doc["final"]["joints_3d_mm"], aligned[0].mean(0), atol=2e-3)
    lines = (folder / "final_current.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == 778 and sum(line.startswith("f ") for line in lines) == 1538
    with Image.open(folder / "hypotheses.png") as picture:
        assert picture.size == (3 * 2 * 64, 2 * 64)
    with Image.open(photo) as original, Image.open(folder / "overlay.png") as drawn:
        assert drawn.size == original.size
    with Image.open(folder / "hypotheses_mesh.png") as sheet:
        assert sheet.size == (3 * 2 * 64, 2 * 64)  # K = 3 tiles in a row
    with Image.open(folder / "sequence.gif") as gif:
        assert gif.n_frames == 24
    confidence = doc["confidence"]
    spread = np.linalg.norm(joints - joints.mean(0), axis=-1).mean(axis=(0, 2))  # (T,) mm
    np.testing.assert_allclose([confidence["hypothesis_spread_mm"][f] for f in ("past", "current", "future")],
                               spread, atol=2e-3)
    np.testing.assert_allclose(confidence["reward_spread"], rewards.std(), atol=1e-5)
    assert confidence["training_data"] == "hmh's synthetic BlurHand-format data"
    table = pq.read_table(tmp_path / "predictions.parquet").to_pylist()
    assert [r["hypothesis"] for r in table] == [0, 1, 2, None] and {r["folder"] for r in table} == {folder.name}
    assert [r["row"] for r in table] == ["hypothesis"] * 3 + ["final"]
    assert [r["selected_rank"] for r in table if r["selected_rank"] is not None] == [0, 1]
    np.testing.assert_allclose(np.array(table[1]["joints_3d_mm"]), joints[1], atol=2e-3)
    np.testing.assert_allclose(np.array(table[3]["joints_3d_mm"]), doc["final"]["joints_3d_mm"], atol=2e-3)


def test_outputs_are_the_models_outputs_in_image_pixels(checkpoints, photo):
    models = models_from_checkpoint(checkpoints["selection"])
    with Image.open(photo) as image:
        crop = crop_hand(image.convert("RGB"), 64, BOX)
    (pred,) = predict(models, [crop])
    with torch.no_grad():
        out = models.generator(crop.image[None])
        reward = models.selector(crop.image[None], out).reward
    np.testing.assert_allclose(pred.joints, out.joints[0].double().numpy(), atol=1e-6)
    np.testing.assert_allclose(pred.reward, reward[0].double().numpy(), atol=1e-6)
    np.testing.assert_allclose(apply_affine(pred.joints_2d, crop.affine), out.joints_2d[0].double().numpy(),
                               atol=1e-3)
    # the crop is BlurHandNet's: the box (clipped to pixels 30-79 x 20-59, centre 54.5, 39.5) made square and x1.25
    side = 49 * 1.25
    np.testing.assert_allclose(crop.box, [54.5 - side / 2, 39.5 - side / 2, side, side], atol=1e-9)


def test_predict_runs_the_one_inference_path_in_the_checkpoints_precision(checkpoints, photo, monkeypatch):
    """hmh predict goes through hmh.train.loop.infer (train.precision, memory format), what the search's cost times."""
    import dataclasses

    import hmh.predict.run

    models = models_from_checkpoint(checkpoints["selection"])
    models = dataclasses.replace(models, config=dataclasses.replace(
        models.config, train=dataclasses.replace(models.config.train, precision="bf16", channels_last=True)))
    seen = []
    real = hmh.predict.run.infer

    def spy(generator, selector, batch, cfg, device):
        seen.append(cfg.train.precision)
        return real(generator, selector, batch, cfg, device)

    def hook(module, args):
        seen.append((torch.is_autocast_enabled("cpu"), args[0].is_contiguous(memory_format=torch.channels_last)))

    monkeypatch.setattr(hmh.predict.run, "infer", spy)
    handle = models.generator.register_forward_pre_hook(hook)
    with Image.open(photo) as image:
        crop = crop_hand(image.convert("RGB"), 64, BOX)
    try:
        (pred,) = predict(models, [crop])
    finally:
        handle.remove()
    assert seen == ["bf16", (True, True)]  # autocast on, channels_last images, as hmh.eval.cost times
    assert np.isfinite(pred.joints).all()


def test_left_hand_is_the_mirror_of_the_right(checkpoints, photo):
    models = models_from_checkpoint(checkpoints["selection"])
    with Image.open(photo) as image:
        image = image.convert("RGB")
    width = image.width
    mirrored_box = [width - BOX[0] - BOX[2], *BOX[1:]]
    right = crop_hand(image, 64, BOX)
    left = crop_hand(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 64, mirrored_box, is_left=True)
    torch.testing.assert_close(left.image, right.image, atol=1e-6, rtol=0)  # the model sees the same crop
    pred_r, pred_l = predict(models, [right, left])
    np.testing.assert_allclose(pred_l.joints, pred_r.joints * [-1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(pred_l.final_vertices, pred_r.final_vertices * [-1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(pred_l.joints_2d[..., 0], width - 1.0 - pred_r.joints_2d[..., 0], atol=1e-3)
    np.testing.assert_allclose(pred_l.joints_2d[..., 1], pred_r.joints_2d[..., 1], atol=1e-3)
    assert pred_l.selected.tolist() == pred_r.selected.tolist()


def test_generation_checkpoint_averages_all_hypotheses(checkpoints, photo, tmp_path):
    assert _run(photo, "--checkpoint", checkpoints["generation"], "--out", tmp_path) == 0
    doc = json.loads((tmp_path / prediction_name(photo) / "prediction.json").read_text())
    assert doc["final_source"] == "mean of K" and doc["selected"] == [0, 1, 2]
    assert all(h["reward"] is None for h in doc["hypotheses"])


def test_unreadable_image_is_reported_and_the_others_are_written(checkpoints, photo, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    copy = tmp_path / "copy" / photo.name
    copy.parent.mkdir()
    copy.write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    assert _run(broken, photo, copy, photo, "--checkpoint", checkpoints["selection"], "--out", out) == 2
    printed = capsys.readouterr()
    err = printed.err
    assert f"{broken}: unreadable or corrupt image" in err and "1 of 3 images" in err and "Traceback" not in err
    # the same picture in two files: the same rewards and set, which the selection line calls a constant rule
    assert "selection over 2 images: reward spread 0.0000" in printed.out and "for 100% of them" in printed.out
    assert "constant rule" in printed.out
    assert _folders(out) == sorted([prediction_name(photo), prediction_name(copy)])


@pytest.mark.parametrize("box, message", [
    (["500", "500", "10", "10"], "lies outside the 120x90 image"),  # named with the image
    (["10", "10", "0", "10"], "W, H > 0"),  # refused before the model is loaded
    (["10", "10", "nan", "10"], "finite"),
])
def test_bad_bbox_names_the_image_and_the_box(checkpoints, photo, tmp_path, capsys, box, message):
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--bbox", *box, "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "--bbox" in err and message in err and "Traceback" not in err
    assert str(photo) in err or "W, H > 0" in err
    assert not any(tmp_path.iterdir())


def test_missing_checkpoint_is_one_line_error(photo, tmp_path, capsys):
    assert _run(photo, "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "none.pt: checkpoint file not found" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _lines(err: str) -> list[str]:
    lines = err.strip().splitlines()
    assert lines and "Traceback" not in err and all(line.startswith("hmh predict: ") for line in lines), err
    return lines


def test_images_with_one_name_in_two_folders_never_share_an_output_folder(checkpoints, photo, tmp_path, snapshot):
    """img/a/hand.png and img/b/hand.png get two folders; a later call for b alone leaves a's untouched; a rerun
    of the same image (by another relative path too) replaces its own folder."""
    a, b = tmp_path / "img" / "a" / "hand.png", tmp_path / "img" / "b" / "hand.png"
    for i, path in enumerate((a, b)):
        path.parent.mkdir(parents=True)
        Image.fromarray(np.full((90, 120, 3), 60 * i, dtype=np.uint8)).save(path)
    out = tmp_path / "out"
    assert _run(a, b, "--checkpoint", checkpoints["selection"], "--out", out) == 0
    folders = {path: out / prediction_name(path) for path in (a, b)}
    assert _folders(out) == sorted(f.name for f in folders.values())
    assert all(f.name.startswith("hand-") for f in folders.values())
    for path, folder in folders.items():
        assert json.loads((folder / "prediction.json").read_text())["image"] == str(path)
    before = snapshot(folders[a])
    assert _run(b, "--checkpoint", checkpoints["selection"], "--out", out) == 0
    assert snapshot(folders[a]) == before
    assert prediction_name(tmp_path / "img" / "x" / ".." / "b" / "hand.png") == folders[b].name
    assert len(_folders(out)) == 2
    assert {r["image"] for r in pq.read_table(out / "predictions.parquet").to_pylist()} == {str(a), str(b)}


def test_a_tiny_image_is_refused_with_the_size_it_needs(checkpoints, photo, tmp_path, capsys):
    tiny, thin = tmp_path / "tiny.png", tmp_path / "thin.png"
    Image.new("RGB", (1, 1)).save(tiny)
    Image.new("RGB", (400, 10)).save(thin)  # as wide as a hand, far too low
    out = tmp_path / "out"
    assert _run(tiny, thin, photo, "--checkpoint", checkpoints["selection"], "--out", out) == 2
    lines = _lines(capsys.readouterr().err)
    need = f"needs at least {MIN_HAND_PIXELS}x{MIN_HAND_PIXELS}"
    assert f"{tiny}: too small to hold a hand crop: the crop covers 1x1 pixels" in lines[0] and need in lines[0]
    assert f"{thin}: too small" in lines[1] and "400x10 pixels" in lines[1]
    assert "2 of 3 images were skipped" in lines[2]
    assert _folders(out) == [prediction_name(photo)]


@pytest.mark.parametrize("device, message", [("gpu0", "--device='gpu0' is invalid: expected auto, cpu, cuda or cuda:N"),
                                             ("cuda:x", "--device='cuda:x' is invalid")])
def test_a_bad_device_is_one_line_error(checkpoints, photo, tmp_path, one_line_error, device, message):
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--device", device, "--out", tmp_path / "o") == 2
    assert message in one_line_error()
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_refused_before_the_model_runs(checkpoints, photo, tmp_path, one_line_error):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--out", taken) == 2
    assert f"--out {taken}: exists and is not a folder" in one_line_error()
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--out", taken / "sub") == 2
    assert f"{taken} is a file, not a folder" in one_line_error()
    assert taken.read_text() == "mine"


def test_a_malicious_checkpoint_is_refused_without_unsafe_advice(photo, tmp_path, one_line_error):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "hmh-checkpoint", "payload": Evil()}, evil)
    assert _run(photo, "--checkpoint", evil, "--out", tmp_path / "o") == 2
    err = one_line_error()
    assert f"{evil}: refused, not an hmh checkpoint: it asks to import the Python object print" in err
    assert "weights_only" not in err and "hmh reads only its own checkpoints" in err
    assert not (tmp_path / "o").exists()


def test_a_folder_and_a_glob_are_expanded_to_their_images(checkpoints, photo, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("a.png", "b.jpg", "notes.txt"):
        (folder / name).write_bytes(photo.read_bytes() if name != "notes.txt" else b"not an image")
    out = tmp_path / "out"
    assert _run(folder, "--checkpoint", checkpoints["selection"], "--out", out) == 0
    assert _folders(out) == sorted(prediction_name(folder / n) for n in ("a.png", "b.jpg"))
    assert _run(str(folder / "*.png"), "--checkpoint", checkpoints["selection"], "--out", tmp_path / "glob") == 0
    assert _folders(tmp_path / "glob") == [prediction_name(folder / "a.png")]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_boxes_file_with_a_bad_row_names_the_row_and_writes_the_others(checkpoints, photo, tmp_path, capsys,
                                                                         suffix):
    rows = [{"image": str(photo), "x": 30, "y": 20, "w": 50, "h": 40, "hand": "left"},
            {"image": str(photo), "x": 30, "y": 20, "w": "wide", "h": 40, "hand": "right"},  # bad: w
            {"image": str(photo), "x": 10, "y": 10, "w": 60, "h": 60, "hand": "right"},
            {"image": "missing.png", "x": 1, "y": 1, "w": 5, "h": 5}]
    boxes = tmp_path / f"boxes{suffix}"
    if suffix == ".json":
        boxes.write_text(json.dumps(rows))
    else:
        boxes.write_text("image,x,y,w,h,hand\n" + "".join(
            f"{r['image']},{r['x']},{r['y']},{r['w']},{r['h']},{r.get('hand', '')}\n" for r in rows))
    out = tmp_path / "out"
    assert _run("--boxes", boxes, "--checkpoint", checkpoints["selection"], "--out", out) == 2
    err = capsys.readouterr().err
    first, last = ("entry 2", "entry 4") if suffix == ".json" else ("line 3", "line 5")
    assert f"{boxes} {first}: x, y, w, h must be numbers" in err and f"{boxes} {last}: image" in err
    assert "2 row(s)" in err and "Traceback" not in err
    name = prediction_name(photo)
    assert _folders(out) == [f"{name}-left", f"{name}-right"]  # two hands of one image
    left = json.loads((out / f"{name}-left" / "prediction.json").read_text())
    with Image.open(photo) as image:
        box = crop_hand(image.convert("RGB"), 64, [30, 20, 50, 40], True).box
    assert left["hand"] == "left" and left["crop_box_px"] == np.round(box, 2).tolist()
    assert len(pq.read_table(out / "predictions.parquet")) == 2 * (3 + 1)  # K hypotheses and the final, per hand


def test_a_truncated_boxes_file_is_one_line_error(checkpoints, tmp_path, one_line_error):
    boxes = tmp_path / "boxes.json"
    boxes.write_text('[{"image": "a.png", "x": 1')
    assert _run("--boxes", boxes, "--checkpoint", checkpoints["selection"], "--out", tmp_path / "o") == 2
    assert f"{boxes}: not valid JSON" in one_line_error()
    assert not (tmp_path / "o").exists()
