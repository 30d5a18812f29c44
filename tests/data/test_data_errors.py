"""Bad BlurHand roots and arguments end in one line naming the culprit, never a traceback or a silent pass:
unused cameras with bad numbers, null annotation lists, splits without a usable sample, preview sizes, the cache."""

from __future__ import annotations

import re

import numpy as np
import pytest
from blurhand_fixture import Fixture

import hmh.mano.model
from hmh.cli import main
from hmh.data import blurhand
from hmh.data.blurhand import BlurHandDataset, DatasetError, check_root
from hmh.errors import HmhError

SIZE = 32


def _unused_camera(fx: Fixture, princpt: list) -> None:
    """Add camera "402" to capture "0", seen by no image, with principal point ``princpt``."""
    cams = fx.data["camera"]["0"]
    for name, value in (("camrot", np.eye(3).tolist()), ("campos", [0.0, 0.0, 0.0]), ("focal", [200.0, 200.0]),
                        ("princpt", princpt)):
        cams[name]["402"] = value
    fx.write("camera")


def test_check_validates_every_camera_even_one_no_sample_uses(fixture, capsys):
    _unused_camera(fixture, [100.0, float("nan")])
    fixture.data["camera"]["1"]["focal"]["403"] = [200.0, 200.0]  # a camera with a focal length and nothing else
    fixture.write("camera")
    assert len(BlurHandDataset(fixture.root, "train", SIZE, augment=False)) == 24  # the samples are fine
    (report,) = check_root(fixture.root)
    assert report.samples == 24
    assert report.problems[0].endswith("non-finite value nan at ['0']['princpt']['402'][1] "
                                       "(non-finite: 1 of 2 values)")
    assert "camera.json: missing key ['1']['camrot']['403']" in report.problems[1] and len(report.problems) == 4
    assert main(["data", "check", str(fixture.root)]) == 1
    out = capsys.readouterr().out
    assert "['0']['princpt']['402'][1]" in out and out.strip().endswith("4 problem(s)")


def test_a_used_camera_s_bad_value_is_listed_once(fixture):
    fixture.data["camera"]["0"]["focal"]["400"][0] = float("inf")
    fixture.write("camera")
    (report,) = check_root(fixture.root)
    assert len(report.problems) == 1 and "['0']['focal']['400'][0]" in report.problems[0]


@pytest.mark.parametrize("key, value, found", [("annotations", None, "null"), ("images", {}, "an object"),
                                               ("annotations", [None], None)])
def test_null_or_wrong_annotation_lists_are_one_line_naming_file_and_key(fixture, one_line_error, key, value,
                                                                         found):
    fixture.data["data"][key] = value
    fixture.write("data")
    where = f"[{key!r}]" + ("[0] is null, expected an object" if found is None else f" is {found}, expected a list")
    with pytest.raises(DatasetError, match=r"_data\.json: " + re.escape(where)):
        BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    (report,) = check_root(fixture.root)
    assert any(where in problem for problem in report.problems)
    assert main(["data", "preview", str(fixture.root), "--split", "train", "--out", str(fixture.root / "p.png")]) == 2
    assert where in one_line_error()


def test_a_split_without_a_usable_sample_is_an_error_and_a_check_problem(fixture, capsys):
    for ann in fixture.data["data"]["annotations"]:
        ann["joint_valid"] = [0] * 42
    fixture.write("data")
    with pytest.raises(DatasetError, match=r"_data\.json: the train split has no usable sample: every hand was "
                                           r"skipped \(no_valid_joint 24\)"):
        BlurHandDataset(fixture.root, "train", SIZE, augment=True)
    assert main(["data", "check", str(fixture.root)]) == 1
    out = capsys.readouterr().out
    assert "train: 0 samples; skipped: no_valid_joint 24" in out and "no usable sample" in out
    assert out.strip().endswith("1 problem(s)")


def test_a_split_without_a_middle_annotation_is_an_error(fixture):
    for ann in fixture.data["data"]["annotations"]:
        ann["is_middle"] = False
    fixture.write("data")
    with pytest.raises(DatasetError, match=r"the train split has no sample \(no annotation with is_middle=true\)"):
        BlurHandDataset(fixture.root, "train", SIZE, augment=False)


def test_a_hold_out_that_leaves_no_training_sample_is_an_error(fixture, monkeypatch):
    monkeypatch.setattr(blurhand, "split_groups", lambda groups, fraction, seed: np.ones(len(groups), bool))
    with pytest.raises(DatasetError, match=r"no 'train' sample left of the 24 in the train split"):
        BlurHandDataset(fixture.root, "train", SIZE, augment=False, val_fraction=0.5, subset="train")


@pytest.mark.parametrize("args, message", [(["--n", "0"], "--n must be between 1 and 256, got 0"),
                                           (["--n", "100000"], "--n must be between 1 and 256"),
                                           (["--tile", "100000"], "--tile must be between 16 and 1024 pixels"),
                                           (["--n", "256", "--tile", "1024"], "16384 px wide sheet")])
def test_preview_sizes_are_bounded(fixture, tmp_path, one_line_error, args, message):
    assert main(["data", "preview", str(fixture.root), "--split", "train", "--out", str(tmp_path / "p.png"),
                 *args]) == 2
    assert message in one_line_error() and not (tmp_path / "p.png").exists()


def test_preview_help_gives_each_option_s_default(capsys):
    with pytest.raises(SystemExit):
        main(["data", "preview", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("split to draw (default test)", "1 to 256 (default 16)", "16 to 1024", "(default 256)"):
        assert expected in text


def test_index_cache_that_is_not_a_writable_folder_is_one_line(fixture, tmp_path, monkeypatch, one_line_error):
    plain = tmp_path / "cache"
    plain.write_text("a file")
    monkeypatch.setenv("HMH_CACHE_DIR", str(plain))
    assert main(["data", "check", str(fixture.root)]) == 2
    assert f"cache folder {plain} (from $HMH_CACHE_DIR) is not a writable folder" in one_line_error()
    monkeypatch.setenv("HMH_CACHE_DIR", str(tmp_path / "readonly"))
    monkeypatch.setattr(hmh.mano.model.os, "access", lambda path, mode: False)  # read-only, even when run as root
    with pytest.raises(HmhError, match=r"readonly \(from \$HMH_CACHE_DIR\) is not a writable folder"):
        BlurHandDataset(fixture.root, "train", SIZE, augment=False)


@pytest.mark.parametrize("make, blocker", [(lambda p: p.symlink_to(p.parent / "gone"), "{p} is a symbolic link to a "
                                                                                       "missing folder"),
                                           (lambda p: p.write_text("a file"), "{p} is a file")])
def test_a_cache_under_a_file_or_a_dangling_link_names_it(fixture, tmp_path, monkeypatch, one_line_error, make,
                                                          blocker):
    make(tmp_path / "cache")
    monkeypatch.setenv("HMH_CACHE_DIR", str(tmp_path / "cache" / "below"))
    assert main(["data", "check", str(fixture.root)]) == 2
    assert blocker.format(p=tmp_path / "cache") + "); set HMH_CACHE_DIR to one" in one_line_error()


def test_a_damaged_index_cache_is_parsed_again(fixture):
    check_root(fixture.root)
    for cached in (hmh.mano.model.cache_root() / "blurhand").glob("train-*.npz"):
        cached.write_bytes(cached.read_bytes()[:100])  # truncated: not a zip file any more
    (report,) = check_root(fixture.root)
    assert report.samples == 24 and not report.problems
