"""The constant mean-pose baseline: hmh's own (``hmh.eval.baseline``, from the reader's targets) and the independent
one computed from the JSON files alone (``benchmarks/baseline.py``) agree, and both follow the protocol."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hmh.data.blurhand import BlurHandDataset
from hmh.data.synthetic import build_dataset
from hmh.eval.baseline import constant_errors, mean_pose, share_line
from hmh.eval.metrics import blurhand_errors

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "baseline.py"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("synth") / "data", train=12, test=6, size=64, subframes=3, seed=3,
                         progress=False)


def test_mean_pose_is_the_valid_mean_of_the_training_targets(root):
    train = BlurHandDataset(root, "train", 64, augment=True)  # augmentation does not reach the targets_3d
    joints, valid = train.targets_3d()
    mean = mean_pose(train)
    assert mean.shape == (3, 21, 3)
    torch.testing.assert_close(mean[1, 5], joints[valid[:, 1, 5] > 0, 1, 5].mean(0))
    assert mean[:, 0].abs().max() == 0  # the wrist of wrist-relative joints


def test_hmh_and_the_independent_json_baseline_agree(root, tmp_path):
    train, test = (BlurHandDataset(root, s, 64, augment=False) for s in ("train", "test"))
    ours = constant_errors(train, test)
    gt, valid = test.targets_3d()
    assert ours == {f"constant/{k}": v for k, v in blurhand_errors(mean_pose(train).expand_as(gt), gt, valid).items()
                    if k != "mpvpe"}
    out = tmp_path / "baseline.json"
    subprocess.run([sys.executable, str(SCRIPT), str(root), "--out", str(out)], check=True, capture_output=True)
    theirs = json.loads(out.read_text())
    assert theirs["samples_train"] == len(train) and theirs["samples_test"] == len(test)
    for metric in ("mpjpe_past", "mpjpe_current", "mpjpe_future"):
        assert theirs[metric] == pytest.approx(ours[f"constant/{metric}"], rel=1e-5), metric
        assert theirs[metric] > 10  # mm: a constant is far from every real sequence


def test_independent_baseline_names_an_unreadable_file(root, tmp_path):
    broken = tmp_path / "broken"
    (broken / "annotations" / "train").mkdir(parents=True)
    (broken / "annotations" / "train" / "BlurHand_train_data.json").write_text('{"images": [')
    run = subprocess.run([sys.executable, str(SCRIPT), str(broken)], capture_output=True, text=True)
    assert run.returncode != 0 and "BlurHand_train_data.json" in run.stderr


def test_share_line_divides_by_the_constant():
    line = share_line({"constant/mpjpe_current": 100.0, "best_of_k/mpjpe_current": 30.0,
                        "mean_of_k/mpjpe_current": 40.0})
    assert "(100.00 mm)" in line and "best of K 0.30x" in line and "mean of K 0.40x" in line
    assert share_line({"best_of_k/mpjpe_current": 30.0}) == ""
