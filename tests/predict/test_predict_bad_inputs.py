"""``hmh predict`` on bad input: each case is one line naming the culprit, the other images are still written, and
nothing that existed changes (symbolic-link loops, non-UTF-8 names, multi-frame and oversized images, boxes far
outside the image, malformed boxes files, foreign tables, unwritable image folders)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_predict
from PIL import Image
from test_predict import _folders, _run

from hmh.errors import HmhError
from hmh.predict.files import TABLE, existing_rows
from hmh.predict.jobs import BoxesError, expand_images, plan_jobs, read_boxes
from hmh.predict.run import PredictError, crop_hand, load_photo, prediction_name

checkpoints, photo = test_predict.checkpoints, test_predict.photo  # the shared fixtures
IMAGE = Image.fromarray(np.full((90, 120, 3), 128, dtype=np.uint8))


def test_a_symlink_loop_is_planned_and_then_refused_by_name(tmp_path):
    loop = tmp_path / "a.png"
    loop.symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(loop)
    jobs, _ = plan_jobs([loop], None, tmp_path / "out", None, False)
    assert [job.image for job in jobs] == [loop]
    with pytest.raises(PredictError, match=f"^{loop}: cannot read the image .*symbolic links"):
        load_photo(loop)


def test_a_non_utf8_file_name_is_written_with_escaped_bytes(checkpoints, tmp_path, capsys):
    image = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.png"))
    IMAGE.save(image)
    assert _run(image, "--checkpoint", checkpoints["selection"], "--out", tmp_path / "out") == 0
    folder = tmp_path / "out" / prediction_name(image)
    assert json.loads((folder / "prediction.json").read_text())["image"].endswith("caf\\xe9.png")
    assert "caf\\xe9.png" in (folder / "final_current.obj").read_text()
    assert pq.read_table(tmp_path / "out" / TABLE).column("image")[0].as_py().endswith("caf\\xe9.png")
    assert "Traceback" not in capsys.readouterr().err


def test_a_multi_frame_image_predicts_its_first_frame_and_says_so(tmp_path, caplog):
    path = tmp_path / "anim.gif"
    IMAGE.save(path, save_all=True, append_images=[Image.new("RGB", IMAGE.size, c) for c in ("red", "blue")])
    with caplog.at_level(logging.WARNING):
        assert load_photo(path).getpixel((0, 0)) == (128, 128, 128)
    assert f"{path}: 3 frames (animated or multi-page); only the first is predicted" in caplog.text


def test_an_image_over_pil_limit_is_one_warning_line_not_a_python_warning(tmp_path, caplog, monkeypatch):
    IMAGE.save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10800 pixels: over the limit, under twice it
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        load_photo(tmp_path / "big.png")
    assert "big.png: 120x90 pixels, over PIL's limit of 6000" in caplog.text


@pytest.mark.parametrize(("box", "message"), [
    ([0, 0, 1e308, 1e308], r"lies mostly outside the 120x90 image \(only 0% of it inside\)"),
    ([0, 0, 1e30, 1e30], "lies mostly outside"),
    ([100, 70, 60, 60], "lies mostly outside"),  # a third of it inside
    ([30, 20, 1e-300, 40], "is less than one pixel wide or high"),
    ([500, 500, 10, 10], "lies outside the 120x90 image"),
])
def test_a_box_mostly_outside_its_image_is_refused_by_its_source(box, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on the way
        with pytest.raises(PredictError, match=f"^img.png: b.csv line 2 .*{message}"):
            crop_hand(IMAGE, 64, box, source="img.png", box_name="b.csv line 2")


def test_a_box_half_inside_its_image_is_kept():
    assert crop_hand(IMAGE, 64, [-25, 20, 50, 40]).box.shape == (4,)


def _boxes(tmp_path: Path, name: str, text: str) -> Path:
    IMAGE.save(tmp_path / "good.png")
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize(("name", "text", "message"), [
    ("b.csv", "image,x,y,w,h,x\ngood.png,1,2,50,40,3\n", r"the header names column\(s\) 'x' twice"),
    ("b.csv", "image,x,y,w,h,width\ngood.png,1,2,50,40,3\n", r"unknown column\(s\) or key\(s\) 'width'"),
    ("b.csv", "image,x,y,w,h\n", "holds no rows"),
    ("b.json", "[]", "holds no rows"),
    ("b.json", '[{"image": "good.png", "x": 1, "y": 2, "w": 50, "h": 40, "hand": "left", "hnad": "right"}]',
     r"unknown column\(s\) or key\(s\) 'hnad'"),
    ("b.json", '[{"image": "good.png", "x": 1, "x": 2, "y": 2, "w": 50, "h": 40}]', "key 'x' given twice"),
    ("b.json", "[" * 100000 + "]" * 100000, "JSON nested too deeply"),
])
def test_a_boxes_file_that_cannot_be_meant_is_refused_as_a_whole(tmp_path, name, text, message):
    with pytest.raises(BoxesError, match=f"^{tmp_path / name}: {message}"):
        read_boxes(_boxes(tmp_path, name, text), False)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("b.csv", "image,x,y,w,h\ngood.png,1,2,50,40,7\n", r"b.csv line 2: 6 field\(s\), the header has 5"),
    ("b.csv", "image,x,y,w,h\ngood.png,1,2,50\n", r"b.csv line 2: 4 field\(s\), the header has 5"),
    ("b.csv", "image,x,y,w,h\ngood.png,1,2,50,40\n\ngood.png,1,2,50,-4,left\n", "b.csv line 4: 6 field"),
    ("b.json", '[{"image": "good.png", "x": true, "y": 2, "w": 50, "h": 40}]', "entry 1: x, y, w, h must be numbers"),
    ("b.json", '[{"image": "good.png", "x": 1' + "0" * 400 + ', "y": 2, "w": 50, "h": 40}]', "must be numbers"),
    ("b.json", '[{"image": 5, "x": 1, "y": 2, "w": 50, "h": 40}]', "entry 1: image must be a file name, got 5"),
    ("b.json", '[{"image": "good.png", "x": 1, "y": 2, "w": 50, "h": 40, "hand": 0}]', "hand must be right or left"),
])
def test_a_bad_boxes_row_is_one_message_naming_its_line(tmp_path, name, text, message):
    good, bad = read_boxes(_boxes(tmp_path, name, text), False)
    assert len(bad) == 1 and bad[0].startswith(str(tmp_path)) and message.replace("\\", "") in bad[0], bad


def test_a_boxes_header_with_spaces_is_read(tmp_path):
    good, bad = read_boxes(_boxes(tmp_path, "b.csv", "image, x, y, w, h\ngood.png, 1, 2, 50, 40\n"), False)
    assert not bad and good == [(tmp_path / "good.png", (1.0, 2.0, 50.0, 40.0), False, f"{tmp_path / 'b.csv'} line 2")]


def test_a_boxes_file_with_only_bad_rows_stops_before_the_model(checkpoints, tmp_path, capsys):
    boxes = _boxes(tmp_path, "b.csv", "image,x,y,w,h\ngood.png,1,2,-50,40\n")
    assert _run("--boxes", boxes, "--checkpoint", tmp_path / "no-checkpoint.pt", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"hmh predict: skipped: {boxes} line 2: the box must be finite")
    assert err[1:] == [f"hmh predict: error: no image to predict: all 1 row(s) of {boxes} were skipped"]
    assert not (tmp_path / "out").exists()


def test_an_empty_path_argument_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        _run(tmp_path / "x.png", "--checkpoint", "c.pt", "--out", "")
    assert stop.value.code == 2 and "argument --out: an empty path" in capsys.readouterr().err


def test_an_unlistable_folder_is_named_and_an_unstatable_file_is_left_to_the_reader(tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()

    def denied(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(HmhError, match=f"^{tmp_path / 'imgs'}: cannot list the folder \\(Permission denied\\)"):
        expand_images([tmp_path / "imgs"])
    monkeypatch.setattr(Path, "is_dir", denied)
    assert expand_images([tmp_path / "x.png"]) == [tmp_path / "x.png"]


@pytest.mark.parametrize("kind", ["extra column", "dangling link"])
def test_a_table_that_would_lose_something_is_refused(checkpoints, photo, tmp_path, kind):
    out = tmp_path / "out"
    assert _run(photo, "--checkpoint", checkpoints["generation"], "--out", out) == 0
    table = out / TABLE
    if kind == "extra column":
        rows = pq.read_table(table)
        pq.write_table(rows.append_column("note", pa.array(["mine"] * len(rows))), table)
    else:
        table.unlink()
        table.symlink_to(tmp_path / "elsewhere.parquet")
    with pytest.raises(HmhError, match=f"^{table}: .*hmh predict would replace it"):
        existing_rows(out)


def test_an_unwritable_image_folder_skips_that_image_only(checkpoints, photo, tmp_path, capsys):
    out, other = tmp_path / "out", tmp_path / "other.png"
    Image.open(photo).save(other)
    (out / prediction_name(photo) / "prediction.json").mkdir(parents=True)  # cannot be replaced by a file
    assert _run(photo, other, "--checkpoint", checkpoints["generation"], "--out", out) == 2
    err = capsys.readouterr().err
    assert f"hmh predict: skipped: {photo}: " in err and "Traceback" not in err
    assert (out / prediction_name(other) / "prediction.json").is_file()
    assert set(pq.read_table(out / TABLE).column("folder").to_pylist()) == {prediction_name(other)}
    assert (out / prediction_name(photo) / "prediction.json").is_dir()


def test_a_new_out_is_not_left_behind_when_no_image_was_written(checkpoints, tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    assert _run(tmp_path / "bad.png", "--checkpoint", checkpoints["generation"], "--out", tmp_path / "out") == 2
    assert not (tmp_path / "out").exists() and _folders(tmp_path) == []
