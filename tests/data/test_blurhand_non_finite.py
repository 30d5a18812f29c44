"""NaN, inf, null and out-of-range numbers in a BlurHand root's JSONs: an error naming file, id and field by default,
skipped and counted per cause with ``skip_bad_annotations``, listed by ``hmh data check``."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from blurhand_fixture import Fixture

from hmh.data.blurhand import BlurHandDataset, DatasetError, check_root
from hmh.data.blurhand_index import index_cache_path

SIZE = 32
NAN, INF = float("nan"), float("inf")


def _set(path: tuple, value) -> Callable[[dict], None]:
    """An edit of a loaded JSON: ``data[path[0]]...[path[-1]] = value``."""

    def edit(data: dict) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return edit


def _frame(capture: str, frame: str, side: str):
    """Samples of hand ``side`` whose past, current or future frame is ``(capture, frame)``."""
    return lambda fx, aid, hand, used: hand == side and any(fx.anns[a][:2] == (capture, frame) for a in used)


def _camera(capture: str, camera: str):
    return lambda fx, aid, hand, used: fx.anns[aid][0] == capture and fx.anns[aid][2] == camera


def _annotation(annotation: int, side: str):
    return lambda fx, aid, hand, used: hand == side and annotation in used


# (file, edit, message pattern naming file + id + field, skip reason, which samples use the bad value)
CASES = {
    "world_coord nan": ("joint_3d", _set(("0", "3", "world_coord", 2, 1), NAN),
                        r"joint_3d\.json: non-finite value nan at \['0'\]\['3'\]\['world_coord'\]\[2\]\[1\]",
                        "non_finite_joints", _frame("0", "3", "right")),
    "world_coord null": ("joint_3d", _set(("1", "104", "world_coord", 30, 0), None),
                         r"joint_3d\.json: non-finite value nan at \['1'\]\['104'\]\['world_coord'\]\[30\]\[0\]",
                         "non_finite_joints", _frame("1", "104", "left")),
    "joint_valid inf": ("data", _set(("annotations", 3, "joint_valid", 5), INF),
                        r"data\.json: non-finite value inf at annotations\[id=3\]\['joint_valid'\]\[5\]",
                        "non_finite_joint_valid", _annotation(3, "right")),
    "camrot nan": ("camera", _set(("1", "camrot", "401", 1, 2), NAN),
                   r"camera\.json: non-finite value nan at \['1'\]\['camrot'\]\['401'\]\[1\]\[2\]",
                   "non_finite_camera", _camera("1", "401")),
    "campos beyond float32": ("camera", _set(("0", "campos", "400", 2), 1e39),
                              r"camera\.json: non-finite value 1e\+39 \(beyond float32\) at "
                              r"\['0'\]\['campos'\]\['400'\]\[2\]", "non_finite_camera", _camera("0", "400")),
    "focal inf": ("camera", _set(("0", "focal", "401", 0), INF),
                  r"camera\.json: non-finite value inf at \['0'\]\['focal'\]\['401'\]\[0\]",
                  "non_finite_camera", _camera("0", "401")),
    "princpt -inf": ("camera", _set(("1", "princpt", "400", 1), -INF),
                     r"camera\.json: non-finite value -inf at \['1'\]\['princpt'\]\['400'\]\[1\]",
                     "non_finite_camera", _camera("1", "400")),
    "mano pose nan": ("mano", _set(("1", "102", "left", "pose", 7), NAN),
                      r"MANO_NeuralAnnot\.json: non-finite value nan at \['1'\]\['102'\]\['left'\]\['pose'\]\[7\]",
                      "non_finite_mano", _frame("1", "102", "left")),
    "mano shape inf": ("mano", _set(("0", "4", "right", "shape", 0), INF),
                       r"MANO_NeuralAnnot\.json: non-finite value inf at \['0'\]\['4'\]\['right'\]\['shape'\]\[0\]",
                       "non_finite_mano", _frame("0", "4", "right")),
    "mano trans nan": ("mano", _set(("0", "2", "right", "trans", 1), NAN),
                       r"MANO_NeuralAnnot\.json: non-finite value nan at \['0'\]\['2'\]\['right'\]\['trans'\]\[1\]",
                       "non_finite_mano", _frame("0", "2", "right")),
}  # fmt: skip


def _samples(fx: Fixture):
    """``(annotation id, side, ids of its past/current/future annotations)`` of every sample of the fixture."""
    for ann in fx.data["data"]["annotations"]:
        if not ann["is_middle"]:
            continue
        used = (ann["aid_list"][0], ann["id"], ann["aid_list"][-1])
        for side in ("right", "left"):
            if ann["hand_type"] in (side, "interacting"):
                yield ann["id"], side, used


def _damage(fx: Fixture, case: str) -> tuple[str, str, int]:
    """Apply ``CASES[case]``; returns its pattern, skip reason and how many samples use the bad value."""
    name, edit, pattern, cause, uses = CASES[case]
    edit(fx.data[name])
    fx.write(name)
    return pattern, cause, sum(bool(uses(fx, aid, side, used)) for aid, side, used in _samples(fx))


@pytest.mark.parametrize("case", list(CASES))
def test_non_finite_value_is_an_error_or_a_counted_skip(fixture, case):
    pattern, cause, affected = _damage(fixture, case)
    total = sum(1 for _ in _samples(fixture))
    assert 0 < affected < total
    with pytest.raises(DatasetError, match=pattern) as info:
        BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    assert "\n" not in str(info.value) and "data.skip_bad_annotations=true" in str(info.value)

    ds = BlurHandDataset(fixture.root, "train", SIZE, augment=False, skip_bad_annotations=True)
    assert {k: v for k, v in ds.skipped.items() if v} == {cause: affected}
    assert len(ds) == total - affected
    joints, _ = ds.targets_3d()
    assert torch.isfinite(joints).all()
    for table in (ds.index.cam_rot, ds.index.cam_pos, ds.index.frame_world, ds.index.mano_pose):
        assert np.isfinite(table).all()  # zeroed where bad: no NaN reaches a sample by any path
    sample = ds[0]
    assert all(torch.isfinite(v).all() for v in sample.values())

    (report,) = check_root(fixture.root)
    assert len(report.problems) == 1 and report.skipped[cause] == affected
    assert re.search(pattern, report.problems[0])


def test_every_bad_value_is_listed(fixture):
    cases = ("world_coord nan", "camrot nan", "mano pose nan")
    for case in cases:
        _damage(fixture, case)
    with pytest.raises(DatasetError, match=r"\(and 2 more; `hmh data check .*` lists them\)"):
        BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    (report,) = check_root(fixture.root)
    assert len(report.problems) == 3
    assert all(any(re.search(CASES[case][2], p) for p in report.problems) for case in cases)


def test_cache_serves_both_settings_and_not_an_older_version(fixture):
    _damage(fixture, "world_coord nan")
    skip = BlurHandDataset(fixture.root, "train", SIZE, augment=False, skip_bad_annotations=True)
    assert not skip.index_from_cache
    with pytest.raises(DatasetError, match="non-finite value nan"):  # the cached index still holds the problem
        BlurHandDataset(fixture.root, "train", SIZE, augment=False)
    again = BlurHandDataset(fixture.root, "train", SIZE, augment=False, skip_bad_annotations=True)
    assert again.index_from_cache and np.array_equal(again.rows, skip.rows)
    path = index_cache_path(fixture.root, "train")
    with np.load(path) as data:
        old = {k: data[k] for k in data.files if k != "non_finite"}
    np.savez(path, **{**old, "version": np.int64(1)})  # an index written before the non-finite checks
    assert not BlurHandDataset(fixture.root, "train", SIZE, augment=False, skip_bad_annotations=True).index_from_cache


@pytest.mark.parametrize("value", [NAN, INF, 12.5, "wide"])
def test_bad_image_size_names_image_and_key(fixture, value):
    fixture.data["data"]["images"][3]["width"] = value
    fixture.write("data")
    with pytest.raises(DatasetError, match=r"data\.json: images\[id=3\]\['width'\] is .*, expected a size in pixels"):
        BlurHandDataset(fixture.root, "train", SIZE, augment=False, skip_bad_annotations=True)


def test_cli_check_lists_non_finite_values(fixture, capsys):
    from hmh.cli import main

    _damage(fixture, "world_coord nan")
    _damage(fixture, "mano pose nan")
    assert main(["data", "check", str(fixture.root)]) == 1
    out, err = capsys.readouterr()
    problems = [line for line in out.splitlines() if line.startswith("  problem: ")]
    assert len(problems) == 2 and all("non-finite value nan at" in p for p in problems)
    assert "['0']['3']['world_coord'][2][1]" in out and "['1']['102']['left']['pose'][7]" in out
    assert "skipped: non_finite_joints" in out and "non_finite_mano" in out
    assert out.strip().endswith("2 problem(s)") and "Traceback" not in out + err


def test_console_script_check_exits_non_zero_without_traceback(fixture):
    _damage(fixture, "camrot nan")
    script = Path(sys.executable).with_name("hmh")
    result = subprocess.run([str(script), "data", "check", str(fixture.root)], capture_output=True, text=True,
                            timeout=300, check=False)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "camera.json: non-finite value nan at ['1']['camrot']['401'][1][2]" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
