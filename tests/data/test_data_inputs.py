"""Malformed BlurHand annotation files, keys and values: one line naming the file and JSON location from the reader,
`hmh data check` and `hmh data preview`, never a traceback, a silent pass or a changed root."""

from __future__ import annotations

import re
import struct
import zlib

import pytest
from blurhand_fixture import Fixture

from hmh.cli import main
from hmh.data.blurhand import BlurHandDataset, DatasetError, check_root

SIZE = 32


def _refused(fx: Fixture, pattern: str, one_line_error, snapshot) -> None:
    """The reader, ``hmh data check`` and ``hmh data preview`` all refuse ``fx``'s train split with ``pattern``,
    and leave the root as it was."""
    before = snapshot(fx.root)
    with pytest.raises(DatasetError, match=pattern):
        BlurHandDataset(fx.root, "train", SIZE, augment=False)
    (report,) = check_root(fx.root)
    assert any(re.search(pattern, problem) for problem in report.problems), report.problems
    sheet = fx.root.parent / "sheet.png"
    assert main(["data", "preview", str(fx.root), "--split", "train", "--out", str(sheet)]) == 2
    assert re.search(pattern, one_line_error()) and not sheet.exists()
    assert snapshot(fx.root) == before


def _bytes(name: str, content: bytes):
    return lambda fx: fx.path(name).write_bytes(content)


def _replace_file(name: str, make):
    def damage(fx: Fixture) -> None:
        fx.path(name).unlink()
        make(fx.path(name))

    return damage


@pytest.mark.parametrize("damage, pattern", [
    (_bytes("data", b"[" * 100_000 + b"]" * 100_000), r"_data\.json: JSON nested too deeply"),
    (_bytes("camera", b'{"0": {"x\xe9": 1}}'), r"_camera\.json: not UTF-8 text \(byte 0xe9 at offset 9\)"),
    (lambda fx: fx.path("joint_3d").write_bytes(b"\xef\xbb\xbf" + fx.path("joint_3d").read_bytes()),
     r"_joint_3d\.json: starts with a byte order mark"),
    (_bytes("mano", b""), r"_NeuralAnnot\.json: invalid JSON at line 1 column 1 \(Expecting value\); is the file "
                          r"truncated\?"),
    (_bytes("data", b'{"images": [] "annotations": []}'), r"_data\.json: invalid JSON .*delimiter\)$"),
    (_replace_file("camera", lambda path: path.mkdir()), r"_camera\.json: is a folder"),
    (_replace_file("mano", lambda path: path.symlink_to(path.parent / "gone.json")),
     r"_NeuralAnnot\.json: BlurHand annotation file is a symbolic link to no file \(a missing target"),
    (_bytes("mano", b"[]"), r"_NeuralAnnot\.json: the file is a list, expected an object"),
    (_bytes("joint_3d", b"null"), r"_joint_3d\.json: the file is null, expected an object"),
])  # fmt: skip
def test_unreadable_annotation_files_are_one_line(fixture, one_line_error, snapshot, damage, pattern):
    damage(fixture)
    _refused(fixture, pattern, one_line_error, snapshot)


def _image(key: str, value):
    def edit(fx: Fixture) -> None:
        fx.data["data"]["images"][3][key] = value
        fx.write("data")

    return edit


def _annotation(key: str, value, index: int = 3):
    def edit(fx: Fixture) -> None:
        fx.data["data"]["annotations"][index][key] = value
        fx.write("data")

    return edit


def _mano(edit):
    def apply(fx: Fixture) -> None:
        edit(fx.data["mano"])
        fx.write("mano")

    return apply


@pytest.mark.parametrize("edit, pattern", [
    (_image("id", [3]), r"\['images'\]\[3\]\['id'\] is \[3\], expected an id"),
    (_image("id", "3"), r"\['images'\]\[3\]\['id'\] is '3', expected an id"),
    (_annotation("id", 2.5), r"\['annotations'\]\[3\]\['id'\] is 2.5, expected an id"),
    (_annotation("id", 10**30), r"\['annotations'\]\[3\]\['id'\] is 10{30}, expected an id"),
    (_annotation("id", True), r"\['annotations'\]\[3\]\['id'\] is True, expected an id"),
    (_annotation("id", 2), r"\['annotations'\]\[3\]\['id'\] is 2, the id of an earlier entry too"),
    (_image("width", 1e300), r"images\[id=3\]\['width'\] is 1e\+300, expected a size in pixels"),
    (_image("height", 3 * 10**9), r"images\[id=3\]\['height'\] is 3000000000, expected a size in pixels"),
    (_image("width", 0), r"images\[id=3\]\['width'\] is 0, expected a size in pixels"),
    (_image("capture", [0]), r"images\[id=3\]\['capture'\] is \[0\], expected a string or an integer"),
    (_image("seq_name", {"a": 1}), r"images\[id=3\]\['seq_name'\] is \{'a': 1\}, expected a string or an integer"),
    (_annotation("is_middle", "false"), r"annotations\[id=3\]\['is_middle'\] is 'false', expected true or false"),
    (_annotation("joint_valid", [-1] * 42), r"annotations\[id=3\]\['joint_valid'\] holds -1, expected 0 or 1"),
    (_annotation("joint_valid", ["1"] * 42), r"annotations\[id=3\]\['joint_valid'\] is not an array of numbers"),
    (_annotation("joint_valid", [[1, 1], [1]] * 21), r"\['joint_valid'\] is not an array of numbers"),
    (_mano(lambda m: m.update({"0": [1, 2]})), r"_NeuralAnnot\.json: \['0'\] is a list, expected an object"),
    (_mano(lambda m: m["0"].update({"3": "x"})), r"_NeuralAnnot\.json: \['0'\]\['3'\] is a string, expected an "
                                                 r"object"),
    (_mano(lambda m: m["0"]["3"].update(left=5)), r"\['0'\]\['3'\]\['left'\] is a number, expected an object with "
                                                  r"key 'pose'"),
])  # fmt: skip
def test_wrong_types_of_ids_sizes_and_keys_are_one_line(fixture, one_line_error, snapshot, edit, pattern):
    edit(fixture)
    _refused(fixture, pattern, one_line_error, snapshot)


def test_an_integer_too_large_for_a_float_is_a_non_finite_value(fixture, one_line_error):
    fixture.data["joint_3d"]["0"]["3"]["world_coord"][0][0] = 10**400  # beyond float64
    fixture.data["joint_3d"]["0"]["4"]["world_coord"][0][0] = 123456.5
    fixture.write("joint_3d")
    path = fixture.path("joint_3d")  # and beyond Python's 4300-digit limit for parsing an int
    path.write_text(path.read_text().replace("123456.5", "-" + "9" * 5000))
    (report,) = check_root(fixture.root)
    found = sorted(problem.split(": ", 1)[1] for problem in report.problems)
    assert found == [f"non-finite value {v} at ['0']['{f}']['world_coord'][0][0] (non-finite: 1 of 126 values)"
                     for v, f in (("-inf", 4), ("inf", 3))]
    assert main(["data", "preview", str(fixture.root), "--split", "train", "--out", str(fixture.root / "p.png")]) == 2
    assert "inf at ['0']['" in one_line_error()


def test_preview_refuses_what_the_reader_refuses(fixture, one_line_error):
    for ann in fixture.data["data"]["annotations"]:
        ann["joint_valid"] = [0] * 42
    fixture.write("data")
    assert main(["data", "preview", str(fixture.root), "--split", "train", "--out", str(fixture.root / "p.png")]) == 2
    assert "the train split has no usable sample: every hand was skipped (no_valid_joint 24)" in one_line_error()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels (a decompression bomb for large sizes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_preview_of_a_decompression_bomb_is_one_line(fixture, one_line_error):
    middle = next(a for a in fixture.data["data"]["annotations"] if a["is_middle"])
    image = fixture.data["data"]["images"][middle["image_id"]]
    path = fixture.root / "blur_images" / "train" / image["file_name"]
    path.write_bytes(_png_header(30_000, 30_000))
    assert main(["data", "preview", str(fixture.root), "--split", "train", "--out", str(fixture.root / "p.png")]) == 2
    assert f"{path}: unreadable or corrupt image" in one_line_error()


def test_an_unreadable_annotation_file_is_one_line(fixture, monkeypatch, one_line_error):
    from hmh.data import blurhand_json

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))  # what a root test cannot get from chmod

    monkeypatch.setattr(blurhand_json, "open", refuse, raising=False)
    assert main(["data", "preview", str(fixture.root), "--split", "train", "--out", str(fixture.root / "p.png")]) == 2
    assert f"{fixture.path('data')}: cannot read (Permission denied)" in one_line_error()


@pytest.mark.parametrize("focal", [[0.0, 200.0], [-200.0, -200.0]])
def test_a_focal_length_that_is_not_positive_is_one_line(fixture, one_line_error, snapshot, focal):
    fixture.data["camera"]["1"]["focal"]["401"] = focal
    fixture.write("camera")
    pattern = re.escape(f"_camera.json: ['1']['focal']['401'] is {focal!r}, expected positive focal lengths")
    _refused(fixture, pattern, one_line_error, snapshot)
