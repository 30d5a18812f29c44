"""``hmh predict``'s inputs: image decoding (bit depth, EXIF orientation, non-files), boxes files, and the output
folder (checked before the work, one writer at a time)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_predict
from PIL import Image
from test_predict import BOX, _folders, _run

from hmh.files import folder_lock
from hmh.predict.run import PredictError, load_photo, prediction_name

checkpoints, photo = test_predict.checkpoints, test_predict.photo  # the shared fixtures


@pytest.fixture
def alarm():
    """Fail a test that blocks for 20 s instead of hanging the suite."""
    def timeout(*_):
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_16_bit_and_float_images_are_scaled_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.float32) / 65535.0).save(tmp_path / "f32.tif")
    for name in ("g16.png", "f32.tif"):
        pixels = np.asarray(load_photo(tmp_path / name))
        assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
        np.testing.assert_allclose(pixels[..., 0], ramp / 257.0, atol=0.51)  # the ramp, not white


@pytest.mark.parametrize("pixels, message", [
    (np.full((64, 64), 70000, dtype=np.int32), "a 32-bit integer image, whose white level is unknown"),
    (np.full((64, 64), 3.5, dtype=np.float32), "a 32-bit float image with values outside [0, 1] (from 3.5 to 3.5)"),
])
def test_32_bit_images_of_unknown_range_are_refused_with_one_line(checkpoints, photo, tmp_path, capsys, pixels,
                                                                  message):
    odd = tmp_path / "odd.tif"
    Image.fromarray(pixels).save(odd)
    assert _run(odd, photo, "--checkpoint", checkpoints["selection"], "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"hmh predict: skipped: {odd}: {message}" in err and "Traceback" not in err
    assert _folders(tmp_path / "out") == [prediction_name(photo)]


def test_the_exif_orientation_is_applied_before_the_box(checkpoints, tmp_path):
    """A photo stored sideways with EXIF orientation 6 (shown turned 90 degrees clockwise) predicts exactly as the
    same photo stored upright, with the same box in the upright pixels."""
    stored = Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    upright = stored.transpose(Image.Transpose.ROTATE_270)  # 90 wide, 120 high
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "sideways.png", exif=exif)
    upright.save(tmp_path / "upright.png")
    assert load_photo(tmp_path / "sideways.png").tobytes() == upright.tobytes()
    box = ["20", "30", "50", "60"]  # upright pixels: inside 90 x 120, partly outside the stored 120 x 90 rows
    docs = {}
    for name in ("sideways.png", "upright.png"):
        assert _run(tmp_path / name, "--checkpoint", checkpoints["selection"], "--bbox", *box, "--out",
                    tmp_path / "out") == 0
        docs[name] = json.loads((tmp_path / "out" / prediction_name(tmp_path / name) / "prediction.json").read_text())
    for key in ("crop_box_px", "final"):
        assert docs["sideways.png"][key] == docs["upright.png"][key], key


def test_a_named_pipe_is_refused_without_blocking(checkpoints, photo, tmp_path, capsys, alarm):
    pipe = tmp_path / "x.jpg"
    os.mkfifo(pipe)
    with pytest.raises(PredictError, match="not a regular file"):
        load_photo(pipe)
    assert _run(pipe, photo, "--checkpoint", checkpoints["selection"], "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"hmh predict: skipped: {pipe}: not a regular file" in err and "1 of 2 images" in err
    assert _folders(tmp_path / "out") == [prediction_name(photo)]


def test_an_image_without_a_box_is_said_to_be_taken_whole(checkpoints, photo, tmp_path, capsys):
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--out", tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert out.count("note: 1 image(s) without --bbox or a --boxes row: each whole image is taken as a hand crop") == 1
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--bbox", *BOX, "--out", tmp_path / "b") == 0
    assert "without --bbox" not in capsys.readouterr().out


def test_a_dangling_symlink_out_is_refused_before_the_work(checkpoints, photo, tmp_path, capsys):
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "nowhere")
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--out", out) == 2
    printed = capsys.readouterr()
    assert printed.err.strip() == (f"hmh predict: error: --out {out}: {out} is a symbolic link to "
                                   f"{tmp_path / 'nowhere'}, which does not exist")
    assert "mm apart" not in printed.out and not (tmp_path / "nowhere").exists()


def test_a_boxes_csv_with_a_byte_order_mark_is_read(checkpoints, photo, tmp_path):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"image,x,y,w,h\n{photo},30,20,50,40\n", encoding="utf-8-sig")
    assert boxes.read_bytes().startswith(b"\xef\xbb\xbf")
    assert _run("--boxes", boxes, "--checkpoint", checkpoints["selection"], "--out", tmp_path / "out") == 0
    assert _folders(tmp_path / "out") == [prediction_name(photo)]


def test_a_boxes_csv_field_over_the_csv_limit_is_one_line(checkpoints, photo, tmp_path, one_line_error):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"image,x,y,w,h\n{photo},30,20,50,40\n\"{'a' * 200_000}\",1,1,5,5\n")
    assert _run("--boxes", boxes, "--checkpoint", checkpoints["selection"], "--out", tmp_path / "out") == 2
    assert f"{boxes} line 3: not a boxes row (field larger than field limit" in one_line_error()
    assert not (tmp_path / "out").exists()


def test_a_second_predict_into_a_busy_out_stops_at_once_and_changes_nothing(checkpoints, photo, tmp_path,
                                                                            one_line_error, snapshot):
    out = tmp_path / "out"
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--out", out) == 0
    before = snapshot(out)
    with folder_lock.exclusive(out):  # another hmh predict writing there
        assert _run(photo, "--checkpoint", checkpoints["selection"], "--bbox", *BOX, "--out", out) == 2
    assert f"{out} is being written by hmh process {os.getpid()}" in one_line_error()
    assert snapshot(out) == before


def test_a_foreign_predictions_table_is_refused_before_the_work(checkpoints, photo, tmp_path, one_line_error):
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"folder": ["x"], "rank": [1.0]}), out / "predictions.parquet")
    before = (out / "predictions.parquet").read_bytes()
    assert _run(photo, "--checkpoint", checkpoints["selection"], "--out", out) == 2
    assert f"{out / 'predictions.parquet'}: column 'image' is missing" in one_line_error()
    assert (out / "predictions.parquet").read_bytes() == before and _folders(out) == []
