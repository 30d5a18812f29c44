"""benchmarks/selection_ceiling.py: each oracle ranks by its own part of the error (camera plane, depth, 3D), the 2D
rankings by the projected joints against 2D evidence, the top-1 errors split into the camera plane and depth, and the
label oracle's gain is 1; random 2D error as large as the Unfolder's, and the share of an error along the
hypotheses' differences; other checkpoints' Unfolder joints as 2D evidence and other selectors' rewards, refused
when they read other images or rank another generator's hypotheses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from tiny import TINY_MODEL

from hmh.config import load_config
from hmh.models.build import build_models
from hmh.models.checkpoint import save_checkpoint
from hmh.train.runner import build_datasets, data_root, make_loader

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "selection_ceiling.py"


@pytest.fixture(scope="module")
def ceiling():
    spec = importlib.util.spec_from_file_location("selection_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# per hypothesis, the offset (m) of every joint but the wrist: 0 off in x, y only; 1 in depth only; 2 a little in
# both (the best in 3D); 3 far off in both
OFFSETS = torch.tensor([[0.003, 0.004, 0.030], [0.020, 0.0, 0.001], [0.006, 0.008, 0.012], [0.05, 0.05, 0.05]])


def _data(n: int = 6) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    gt = 0.05 * torch.randn(n, 3, 21, 3, generator=gen)  # (N, T, J, 3)
    offsets = torch.zeros(len(OFFSETS), 1, 21, 3)
    offsets[:, :, 1:] = OFFSETS[:, None, None]  # the wrist stays: errors are wrist-relative
    joints = gt[:, None] + offsets[None]  # (N, K, T, J, 3)
    reward = torch.tensor([0.1, 0.9, 0.2, 0.8]).expand(n, -1)  # prefers hypotheses 1 and 3
    pixels = 100.0  # a toy orthographic camera: 1 px per 10 mm, centred in a 64 px crop
    gt_2d = 32.0 + pixels * gt[..., :2]
    evidence_2d = gt_2d.clone()
    evidence_2d[:, :, 1:] += 0.004 * pixels  # the Unfolder joints: every joint but the wrist 0.4 px off in x and y
    return {"joints": joints, "gt": gt, "valid": torch.ones(n, 3, 21, dtype=torch.bool), "reward": reward,
            "joints_2d": 32.0 + pixels * joints[..., :2], "gt_2d": gt_2d, "evidence_2d": evidence_2d}


def test_each_oracle_ranks_by_its_part_of_the_error(ceiling) -> None:
    rows = {r["ranking"].split(" (")[0]: r for r in ceiling.ceiling_rows(_data(), top_n=1, image_size=64)}
    share = 20 / 21  # every joint but the wrist is off
    plane_mm = 1000 * share * OFFSETS[:, :2].norm(dim=1)  # (K,)
    depth_mm = 1000 * share * OFFSETS[:, 2]
    expected_top1 = {"the selector": 1, "camera-plane oracle": 0, "depth oracle": 1, "label oracle": 2,
                     "2D: the ground truth's 2D joints, as they are": 0,  # the camera plane, projected
                     "2D: the selector's Unfolder joints, as they are": 0}
    for name, k in expected_top1.items():
        assert rows[name]["top1_plane"] == pytest.approx(float(plane_mm[k]), rel=1e-4), name
        assert rows[name]["top1_depth"] == pytest.approx(float(depth_mm[k]), rel=1e-4), name
    assert rows["label oracle"]["gain"] == pytest.approx(1.0)
    assert rows["label oracle"]["precision"] == pytest.approx(1.0)
    assert rows["camera-plane oracle"]["precision"] == 0.0  # hypothesis 0 is not the 3D best
    for name, k in expected_top1.items():  # top-1 = top-n: the final is that hypothesis' 3D error
        assert rows[name]["final"] == pytest.approx(1000 * share * float(OFFSETS[k].norm()), rel=1e-4), name
    every = rows["every hypothesis"]
    assert every["top1_plane"] == pytest.approx(float(plane_mm.mean()), rel=1e-4)
    assert "final" not in every


def test_the_table_has_a_row_per_ranking(ceiling) -> None:
    data = _data()
    text = ceiling.table(ceiling.ceiling_rows(data, top_n=2, image_size=64))
    lines = text.splitlines()
    assert lines[0].startswith("| ranking | final | gain | precision |")
    assert len(lines) == 2 + 10
    assert "| 2D: the ground truth's 2D joints, shape alone (similarity) |" in text
    assert ceiling.unfolder_error_px(data) == pytest.approx(0.4 * 2**0.5 * 20 / 21, rel=1e-5)
    assert lines[-1].startswith("| every hypothesis (mean) |  |  |  | ")


def test_the_unfolder_error_is_grouped_by_box_size_in_crop_and_image_pixels(ceiling) -> None:
    data = _data(n=4)
    data["box_side"] = torch.tensor([128.0, 32.0, 64.0, 96.0])
    data["evidence_2d"] = data["gt_2d"] + torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None, None, None] * torch.tensor(
        [0.6, 0.8])  # image i's joints (i + 1) crop px off
    data["valid"][0, 0] = False  # an invalid frame does not count
    data["evidence_2d"][0, 0] += 100.0
    rows = ceiling.unfolder_error_by_box(data, image_size=64, groups=2)
    assert [(r["side_low"], r["side_high"], r["images"]) for r in rows] == [(32.0, 64.0, 2), (96.0, 128.0, 2)]
    assert rows[0]["crop_px"] == pytest.approx((2 + 3) / 2) and rows[1]["crop_px"] == pytest.approx((4 + 1) / 2)
    assert rows[0]["image_px"] == pytest.approx((2 * 32 / 64 + 3 * 64 / 64) / 2)
    assert rows[1]["image_px"] == pytest.approx((4 * 96 / 64 + 1 * 128 / 64) / 2)
    text = ceiling.box_table(rows, image_size=64)
    assert text.splitlines()[2] == "| 32-64 | 2 | 2.50 | 2.00 |"


def test_random_error_is_as_large_as_the_unfolders_and_drawn_the_same_each_time(ceiling) -> None:
    data = _data()
    data["valid"][0, 0] = False
    noisy = ceiling.random_error_2d(data)
    distance = (noisy - ceiling.perfect_2d(data)).norm(dim=-1)[data["valid"]].mean()
    assert float(distance) == pytest.approx(ceiling.unfolder_error_px(data), rel=1e-5)
    assert torch.equal(noisy, ceiling.random_error_2d(data))
    assert torch.equal(ceiling.perfect_2d(data)[0, 0], data["evidence_2d"][0, 0])  # invalid: the Unfolder's joints


def test_the_share_of_an_error_along_the_hypotheses_differences(ceiling) -> None:
    """The toy hypotheses differ by one x and one y offset of every joint but the wrist: an error along such an offset
    is all along their differences; one that moves joint 1 right and joint 2 left is not along them at all."""
    data = _data()
    along = data["gt_2d"] + 3.0 * (data["joints_2d"][:, 0] - data["joints_2d"].mean(dim=1))
    assert ceiling.error_along_hypotheses(data, along) == pytest.approx(1.0, abs=1e-4)
    across = data["gt_2d"].clone()
    across[:, :, 1, 0] += 1.0
    across[:, :, 2, 0] -= 1.0
    assert ceiling.error_along_hypotheses(data, across) == pytest.approx(0.0, abs=1e-4)
    mixed = along + (across - data["gt_2d"]) * 1e3  # mostly across
    assert 0.0 < ceiling.error_along_hypotheses(data, mixed) < 0.1
    data["valid"][0, 0, 5] = False  # an image with an invalid joint is left out
    assert ceiling.error_along_hypotheses(data, along) == pytest.approx(1.0, abs=1e-4)


SMALL_DATA = ["data.synthetic_train=8", "data.synthetic_test=6", "data.synthetic_size=64",
              "data.synthetic_subframes=3", "train.eval_batch_size=4"]


def _generator_checkpoint(path, seed: int, *overrides: str):
    cfg = load_config("cpu", [*TINY_MODEL, *SMALL_DATA, *overrides])
    torch.manual_seed(seed)
    generator, _ = build_models(cfg)
    generator.eval()
    return cfg, generator, save_checkpoint(path, generator=generator, config=cfg, stage="generation", epoch=1)


def test_another_checkpoints_unfolder_joints_on_the_same_images(ceiling, tmp_path) -> None:
    cfg, _, _ = _generator_checkpoint(tmp_path / "ranked.pt", 0)
    _, other, path = _generator_checkpoint(tmp_path / "other.pt", 1)
    joints = ceiling.generator_unfolder_joints(ceiling.other_models(path, cfg), "test")
    dataset = build_datasets(cfg, data_root(cfg, progress=False), splits=("test",))["test"]
    dataset.augment = False
    with torch.no_grad():
        want = torch.cat([other(batch["image"]).unfolder_joints_2d.float()
                          for batch in make_loader(dataset, cfg, train=False, device=torch.device("cpu"))])
    assert joints.shape == (6, 3, 21, 2) and torch.equal(joints, want)
    assert ceiling.generator_unfolder_joints(ceiling.other_models(path, cfg), "test", max_samples=5).shape[0] == 5
    _, _, elsewhere = _generator_checkpoint(tmp_path / "elsewhere.pt", 1, "data.synthetic_test=4",
                                            "model.image_size=96")
    with pytest.raises(SystemExit, match=r"elsewhere\.pt: reads other images .*data\.synthetic_test.*"
                                         r"model\.image_size"):
        ceiling.other_models(elsewhere, cfg)


def test_bad_checkpoints_are_refused_in_one_line_before_any_pass(ceiling, tmp_path, capsys) -> None:
    _, _, generation = _generator_checkpoint(tmp_path / "generation.pt", 0)
    with pytest.raises(SystemExit, match=r"generation\.pt: a generation-stage checkpoint has no selector"):
        ceiling.main([str(generation)])
    cfg = load_config("cpu", [*TINY_MODEL, *SMALL_DATA])
    generator, selector = build_models(cfg)
    ranked = save_checkpoint(tmp_path / "ranked.pt", generator=generator, selector=selector, config=cfg,
                             stage="selection", epoch=1)
    with pytest.raises(SystemExit, match=r"^.*missing\.pt: checkpoint file not found$"):
        ceiling.main([str(ranked), "--unfolders", str(generation), str(tmp_path / "missing.pt")])
    assert "images" not in capsys.readouterr().err  # refused before the hypotheses were computed


def test_the_share_table_has_a_row_per_evidence_and_their_mean(ceiling) -> None:
    data = _data()
    others = {"a": data["gt_2d"] + 1.0, "b": data["gt_2d"] + 3.0}
    lines = ceiling.share_table(data, others).splitlines()
    assert lines[0] == "| 2D evidence | error, crop px | share of the error along the hypotheses' differences |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| the selector's Unfolder joints", "| the ground truth's 2D joints plus random error of the Unfolder's size",
        "| a", "| b", "| the mean of those 2 Unfolders' joints"]
    assert lines[-1].split(" | ")[1] == f"{2 * 2**0.5:.2f}"  # the mean: 2 px off in x and in y
    assert len(ceiling.share_table(data, {"a": others["a"]}).splitlines()) == 2 + 3


def test_other_selectors_rank_each_and_averaged(ceiling) -> None:
    data = _data()
    third = torch.tensor([0.1, 0.2, 0.9, 0.0]).expand(len(data["reward"]), -1)  # prefers hypothesis 2
    rows = {r["ranking"]: r for r in ceiling.ceiling_rows(data, top_n=1, image_size=64, rewards={"B": third})}
    share = 20 / 21
    assert rows["B (its reward)"]["final"] == pytest.approx(1000 * share * float(OFFSETS[2].norm()), rel=1e-4)
    mean = rows["the mean reward of the 2 selectors"]  # (0.1, 0.9, 0.2, 0.8) and B's: hypothesis 1 (0.55)
    assert mean["final"] == pytest.approx(1000 * share * float(OFFSETS[1].norm()), rel=1e-4)
    assert len(rows) == 10 + 2


def test_a_selector_on_another_generator_is_refused(ceiling, tmp_path) -> None:
    cfg = load_config("cpu", [*TINY_MODEL, *SMALL_DATA])
    torch.manual_seed(0)
    generator, selector = build_models(cfg)
    ranked = save_checkpoint(tmp_path / "ranked.pt", generator=generator, selector=selector, config=cfg,
                             stage="selection", epoch=1)
    same = save_checkpoint(tmp_path / "same.pt", generator=generator, selector=build_models(cfg)[1], config=cfg,
                           stage="selection", epoch=1)
    other_generator, other_selector = build_models(cfg)
    other = save_checkpoint(tmp_path / "other.pt", generator=other_generator, selector=other_selector, config=cfg,
                            stage="selection", epoch=1)
    reference = ceiling.other_models(ranked, cfg)
    ceiling.same_generator(same, ceiling.other_models(same, cfg), reference)
    with pytest.raises(SystemExit, match=r"other\.pt: its generator is not the one of the checkpoint ranked"):
        ceiling.same_generator(other, ceiling.other_models(other, cfg), reference)
    _, _, generation = _generator_checkpoint(tmp_path / "generation.pt", 0)
    with pytest.raises(SystemExit, match=r"generation\.pt: a generation-stage checkpoint has no selector"):
        ceiling.main([str(ranked), "--selectors", str(generation)])
    rewards = ceiling.selector_rewards(ceiling.other_models(same, cfg), "test", max_samples=5)
    assert rewards.shape == (5, 2)


def test_the_rankings_are_split_by_how_far_the_hand_moved(ceiling) -> None:
    data = _data(n=4)
    data["box_side"] = torch.full((4,), 128.0)  # image px = 2 x crop px
    data["gt_2d"][:, 2] = data["gt_2d"][:, 0] + torch.tensor([4.0, 1.0, 3.0, 2.0])[:, None, None] * torch.tensor(
        [1.0, 0.0])  # image i's hand moved that many crop px in x from the first frame to the last
    rows = ceiling.by_motion(data, top_n=1, image_size=64, groups=2)
    assert [(r["moved_low"], r["moved_high"], r["images"]) for r in rows] == [
        (pytest.approx(2.0), pytest.approx(4.0), 2), (pytest.approx(6.0), pytest.approx(8.0), 2)]
    share = 20 / 21
    for r in rows:
        assert r["selector"] == pytest.approx(1000 * share * float(OFFSETS[1].norm()), rel=1e-4)  # reward's pick
        assert r["label_oracle"] == pytest.approx(1000 * share * float(OFFSETS[2].norm()), rel=1e-4)
    slow = {key: value[[1, 3]] for key, value in data.items()}
    assert rows[0]["unfolder_px"] == pytest.approx(ceiling.unfolder_error_px(slow))
    assert rows[0]["share"] == pytest.approx(ceiling.error_along_hypotheses(slow, slow["evidence_2d"]))
    text = ceiling.motion_table(rows, image_size=64)
    assert text.splitlines()[0].startswith("| hand's motion during the exposure (image px) | images |")
    assert text.splitlines()[2].startswith("| 2.0-4.0 | 2 | ")
