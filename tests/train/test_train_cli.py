"""``hmh train`` + ``hmh evaluate`` end to end on a tiny config and the tiny synthetic dataset."""

import json
import shutil

import pytest
import torch
from tiny import TINY_MODEL

from hmh.cli import main
from hmh.config import load_config
from hmh.eval.metrics import METRICS
from hmh.eval.protocol import REDUCTIONS, SELECTION_STATS
from hmh.models.checkpoint import load_checkpoint
from hmh.train import runner
from hmh.train.loop import TrainingError

TINY = [
    *TINY_MODEL,
    "data.synthetic_train=24", "data.synthetic_test=8", "data.synthetic_size=64", "data.synthetic_subframes=3",
    "data.val_fraction=0.25", "train.batch_size=4", "train.eval_batch_size=8", "train.device=cpu",
    "train.generation_epochs=2", "train.selection_epochs=1", "train.log_every=1",
]
ALL_KEYS = {f"{r}/{m}" for r in REDUCTIONS for m in METRICS} | {f"selection/{s}" for s in SELECTION_STATS}
CONSTANT_KEYS = {f"constant/{m}" for m in METRICS if m != "mpvpe"}


def _train_args(out, *overrides: str) -> list[str]:
    return ["train", "--config", "cpu", "--out", str(out), "--no-progress",
            *(a for item in (*TINY, *overrides) for a in ("--set", item))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, main(_train_args(out))


def test_train_writes_everything(trained, capsys):
    out, code = trained
    assert code == 0
    for name in ("config.yaml", "metrics.json", "metrics.md"):
        assert (out / name).is_file(), name
    for stage in ("generation", "selection"):
        for kind in ("last", "best"):
            data = load_checkpoint(out / "checkpoints" / f"{stage}_{kind}.pt")
            assert data["stage"] == stage
            assert (data["model"]["selector"] is None) == (stage == "generation")
    last = load_checkpoint(out / "checkpoints" / "generation_last.pt")
    assert last["epoch"] == 2 and last["config"]["model"]["num_hypotheses"] == 2
    assert "val/mean_of_k/mpjpe_current" in last["metrics"]
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == ALL_KEYS | CONSTANT_KEYS
    assert report["metrics"]["constant/mpjpe_current"] > 0
    assert [len(report["history"][s]) for s in ("generation", "selection")] == [2, 1]
    assert "final (selected top-n)" in (out / "metrics.md").read_text()
    assert "constant mean pose (training split)" in (out / "metrics.md").read_text()


def test_tensorboard_has_scalars_and_images(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = trained
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars, images = set(acc.Tags()["scalars"]), set(acc.Tags()["images"])
    assert {"generation/train/loss/total", "generation/train/lr", "generation/val/best_of_k/mpjpe_current",
            "selection/val/final/mpjpe_current", "selection/val/selection/precision", "test/final/mpvpe",
            "train/generation/loss/total", "train/selection/lr"} <= scalars
    assert {"generation/hypotheses", "selection/hypotheses"} <= images
    assert len(acc.Scalars("generation/val/hyp0/mpjpe_current")) == 2


@pytest.mark.parametrize("slim", [False, True])
def test_evaluate_reproduces_the_test_table(trained, tmp_path, capsys, slim):
    """From the run's checkpoint, and from its slim export (hmh export: no optimizer state) alike."""
    out, _ = trained
    checkpoint = out / "checkpoints" / "selection_best.pt"
    if slim:
        assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "slim.pt")]) == 0
        checkpoint = tmp_path / "slim.pt"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "final (selected top-n)" in printed and str(tmp_path / "metrics.md") in printed
    assert "| constant mean pose (training split) |" in printed  # the row hmh train prints, from the same code
    assert "current MPJPE as a share of the constant mean pose" in printed
    got = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    want = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(got) == ALL_KEYS | CONSTANT_KEYS
    for key in ALL_KEYS | CONSTANT_KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key


def test_evaluate_generation_checkpoint_has_no_final(trained, tmp_path):
    out, _ = trained
    code = main(["evaluate", "--checkpoint", str(out / "checkpoints" / "generation_best.pt"), "--out", str(tmp_path),
                 "--split", "train", "--max-samples", "4", "--no-progress"])
    assert code == 0
    got = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert set(got) == {k for k in ALL_KEYS | CONSTANT_KEYS if not k.startswith(("final/", "selection/"))}


def test_evaluate_ranks_with_another_rule_and_says_which(trained, tmp_path, capsys):
    """``--rule`` ranks a trained run's hypotheses another way (the generator's outputs are the same); a rule that
    needs a selector on a generation checkpoint is one line naming the option."""
    out, _ = trained
    code = main(["evaluate", "--checkpoint", str(out / "checkpoints" / "selection_best.pt"), "--out",
                 str(tmp_path / "r"), "--rule", "reprojection", "--no-progress"])
    assert code == 0
    written = json.loads((tmp_path / "r" / "metrics.json").read_text())
    want = json.loads((out / "metrics.json").read_text())["metrics"]
    assert written["rule"] == "reprojection" and "final/mpjpe_current" in written["metrics"]
    assert written["metrics"]["best_of_k/mpjpe_current"] == pytest.approx(want["best_of_k/mpjpe_current"], rel=1e-5)
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", str(out / "checkpoints" / "generation_best.pt"), "--out",
                 str(tmp_path / "c"), "--rule", "combined", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--rule combined:" in err and "holds no selector" in err and "Traceback" not in err
    assert not (tmp_path / "c" / "metrics.json").exists()


def test_evaluate_compares_the_2d_shape_with_reprojection_align(trained, tmp_path, capsys):
    """``--reprojection-align similarity`` changes the reprojection rule's ranking, not the hypotheses, and is
    recorded; a value outside the choices is refused by the parser."""
    out, _ = trained
    ranked = {}
    for align in ("none", "similarity"):
        code = main(["evaluate", "--checkpoint", str(out / "checkpoints" / "selection_best.pt"), "--out",
                     str(tmp_path / align), "--rule", "reprojection", "--reprojection-align", align, "--no-progress"])
        assert code == 0
        ranked[align] = json.loads((tmp_path / align / "metrics.json").read_text())
        assert ranked[align]["reprojection_align"] == align
        assert f"selection.reprojection_align={align}" in capsys.readouterr().out
    none, similarity = ranked["none"]["metrics"], ranked["similarity"]["metrics"]
    assert similarity["best_of_k/mpjpe_current"] == none["best_of_k/mpjpe_current"]
    assert similarity["selection/precision"] != none["selection/precision"] or (
        similarity["final/mpjpe_current"] != none["final/mpjpe_current"])
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(out / "checkpoints" / "selection_best.pt"), "--reprojection-align",
              "affine"])
    assert "invalid choice: 'affine'" in capsys.readouterr().err


def test_evaluate_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "none.pt"
    assert main(["evaluate", "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: checkpoint file not found" in err and "Traceback" not in err


def test_train_bad_override_names_the_key(tmp_path, capsys):
    assert main(["train", "--config", "cpu", "--set", "model.num_hypotheses=0", "--out", str(tmp_path)]) == 2
    assert "model.num_hypotheses" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_checkpoint_weights_are_the_trained_ones(trained):
    out, _ = trained
    best = load_checkpoint(out / "checkpoints" / "selection_best.pt")
    gen_best = load_checkpoint(out / "checkpoints" / "generation_best.pt")
    for key, value in gen_best["model"]["generator"].items():  # stage 2 keeps stage 1's best generator
        assert torch.equal(value, best["model"]["generator"][key]), key


def test_keep_last_and_top_n_equal_to_k_skip_what_cannot_matter(tmp_path, capsys):
    """``train.keep=last`` keeps the last epoch even with a validation split; top_n = K has no selection stage."""
    overrides = [*TINY, "model.num_hypotheses=1", "train.keep=last", "train.generation_epochs=2"]
    args = ["train", "--config", "cpu", "--out", str(tmp_path), "--no-progress"]
    assert main(args + [a for item in overrides for a in ("--set", item)]) == 0
    printed = capsys.readouterr().out
    assert "generation: kept epoch 2 of 2, the last (train.keep=last)" in printed
    assert "selection stage skipped: top_n = K = 1" in printed
    assert "current MPJPE as a share of the constant mean pose" in printed
    kept = load_checkpoint(tmp_path / "checkpoints" / "generation_best.pt")
    last = load_checkpoint(tmp_path / "checkpoints" / "generation_last.pt")
    assert kept["epoch"] == last["epoch"] == 2
    assert not (tmp_path / "checkpoints" / "selection_last.pt").exists()


def test_a_given_generator_skips_its_stage_and_is_the_one_evaluated(trained, tmp_path, capsys):
    """``train.generator``: a second selector on the first run's generator (the dissertation's Table 4.3 setting)."""
    out, _ = trained
    given = out / "checkpoints" / "generation_best.pt"
    overrides = [*TINY, f"train.generator={given}", "selection.msf=false"]
    args = ["train", "--config", "cpu", "--out", str(tmp_path), "--no-progress"]
    assert main(args + [a for item in overrides for a in ("--set", item)]) == 0
    assert f"generation stage skipped: the generator of {given}" in capsys.readouterr().out
    assert not (tmp_path / "checkpoints" / "generation_last.pt").exists()
    kept = load_checkpoint(tmp_path / "checkpoints" / "selection_best.pt")
    for key, value in load_checkpoint(given)["model"]["generator"].items():
        assert torch.equal(value, kept["model"]["generator"][key]), key
    assert kept["config"]["selection"]["msf"] is False
    report = json.loads((tmp_path / "metrics.json").read_text())
    first = json.loads((out / "metrics.json").read_text())
    assert report["metrics"]["best_of_k/mpjpe_current"] == pytest.approx(first["metrics"]["best_of_k/mpjpe_current"])


@pytest.mark.parametrize(("override", "says"), [
    ("model.embed_dim=16", "model.embed_dim: 32 there, 16 here"),
    ("loss.mode_hypothesis=true", "loss.mode_hypothesis: False there, True here"),  # what its hypothesis 0 is
])
def test_a_given_generator_of_another_model_is_refused_by_name(trained, tmp_path, capsys, override, says):
    out, _ = trained
    overrides = [*TINY, f"train.generator={out / 'checkpoints' / 'generation_best.pt'}", override]
    args = ["train", "--config", "cpu", "--out", str(tmp_path), "--no-progress"]
    assert main(args + [a for item in overrides for a in ("--set", item)]) == 2
    err = capsys.readouterr().err
    assert "train.generator=" in err and says in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before anything is written


# Bad input: one line naming the argument or key and the value, no traceback, nothing that existed changed.

def test_train_into_a_run_folder_is_refused_before_anything_is_written(trained, snapshot, one_line_error):
    out, _ = trained
    before = snapshot(out)
    assert main(_train_args(out)) == 2
    err = one_line_error()
    assert (f"--out {out}: already holds a run (config.yaml, checkpoints, tensorboard, metrics.json, metrics.md); "
            "pass --overwrite to replace it") in err
    assert main(["train", "--config", "cpu", "--set", f"train.out_dir={out}"]) == 2  # the folder of the config
    assert f"train.out_dir {out}: already holds a run" in one_line_error()
    assert snapshot(out) == before


def test_a_failed_overwrite_leaves_the_old_run_as_it_was(trained, tmp_path, snapshot, one_line_error, monkeypatch):
    old = tmp_path / "run"
    shutil.copytree(trained[0], old)
    before = snapshot(old)

    def fail(stage, cfg, generator, selector, loaders, device, paths, *rest):
        paths.checkpoint(stage, "last").parent.mkdir(parents=True, exist_ok=True)
        paths.checkpoint(stage, "last").write_bytes(b"half an epoch")  # the new run wrote, then failed
        raise TrainingError(f"{stage} 1/2 step 1: non-finite loss")

    monkeypatch.setattr(runner, "_run_stage", fail)
    assert main(_train_args(old) + ["--overwrite"]) == 2
    assert "generation 1/2 step 1: non-finite loss" in one_line_error()
    assert snapshot(old) == before  # config.yaml, checkpoints, the one TensorBoard events file: all as they were


def test_overwrite_replaces_the_run_when_it_succeeds(trained, tmp_path):
    old = tmp_path / "run"
    shutil.copytree(trained[0], old)
    given = trained[0] / "checkpoints" / "generation_best.pt"
    assert main(_train_args(old, f"train.generator={given}", "train.selection_epochs=0") + ["--overwrite"]) == 0
    assert not (old / "checkpoints" / "selection_best.pt").exists()  # nothing of the old run is left
    assert len(list((old / "tensorboard").iterdir())) == 1
    assert sorted(p.name for p in old.iterdir()) == sorted(runner.RunPaths.ENTRIES)


def test_evaluate_into_a_folder_with_a_metric_table_needs_overwrite(trained, tmp_path, snapshot, one_line_error):
    out, _ = trained
    before = snapshot(out)
    args = ["evaluate", "--checkpoint", str(out / "checkpoints" / "generation_best.pt"), "--max-samples", "2",
            "--no-progress", "--out"]
    assert main(args + [str(out)]) == 2  # the training run's own metrics.json
    assert f"--out {out}: already holds a metric table (metrics.json, metrics.md); pass --overwrite" in one_line_error()
    assert snapshot(out) == before
    assert main(args + [str(tmp_path)]) == 0
    assert main(args + [str(tmp_path), "--overwrite"]) == 0  # replaces its own table
    assert json.loads((tmp_path / "metrics.json").read_text())["stage"] == "generation"


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_out_that_is_a_file_is_refused_first(trained, tmp_path, one_line_error, command):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    checkpoint = str(trained[0] / "checkpoints" / "selection_best.pt")
    for out, message in ((taken, f"--out {taken}: exists and is not a folder"),
                         (taken / "sub", f"--out {taken / 'sub'}: {taken} is a file, not a folder")):
        args = _train_args(out) if command == "train" else ["evaluate", "--checkpoint", checkpoint, "--out", str(out)]
        assert main(args) == 2
        assert message in one_line_error()
    assert taken.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["taken"]


@pytest.mark.parametrize("args, message", [
    (["evaluate", "--device", "gpu0"], "--device='gpu0' is invalid: expected auto, cpu, cuda or cuda:N"),
    (["evaluate", "--device", "cuda:7"], "--device='cuda:7' but "),  # no CUDA here, or fewer than 8 devices
    (["train", "--set", "train.device=gpu0"], "train.device='gpu0' is invalid: expected auto, cpu, cuda or cuda:N"),
])
def test_a_bad_device_is_one_line_error(trained, tmp_path, one_line_error, args, message):
    command, *rest = args
    base = (_train_args(tmp_path / "out") if command == "train" else
            ["evaluate", "--checkpoint", str(trained[0] / "checkpoints" / "selection_best.pt"), "--out",
             str(tmp_path / "out")])
    assert main(base + rest) == 2
    assert message in one_line_error()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["-1", "many"])
def test_a_bad_count_is_one_line_error(tmp_path, one_line_error, value):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--checkpoint", str(tmp_path / "c.pt"), "--max-samples", value])
    assert info.value.code == 2
    assert (f"hmh evaluate: error: argument --max-samples: invalid value {value!r}: expected an integer >= 0 "
            "(0 = all)") in one_line_error()


@pytest.mark.parametrize("source", ["set", "yaml"])
def test_a_non_finite_config_value_is_refused_before_anything_runs(tmp_path, one_line_error, source):
    out = tmp_path / "out"
    if source == "set":
        args = _train_args(out, "loss.jrc=inf")
    else:
        config = tmp_path / "inf.yaml"
        config.write_text("base: cpu\noptim:\n  lr: .inf\n")
        args = ["train", "--config", str(config), "--out", str(out)]
    assert main(args) == 2
    key = "loss.jrc" if source == "set" else "optim.lr"
    assert f"{key}=inf is invalid: expected a finite number" in one_line_error()
    assert not out.exists()


def test_evaluate_on_a_root_without_a_training_split_says_why_it_has_no_constant_row(trained, tmp_path, capsys):
    out, _ = trained
    full = runner.data_root(load_config(out / "config.yaml"), progress=False)
    root = tmp_path / "test-only"
    for part in ("annotations", "blur_images"):
        (root / part).mkdir(parents=True)
        (root / part / "test").symlink_to(full / part / "test")
    (root / "dataset.yaml").symlink_to(full / "dataset.yaml")
    args = ["evaluate", "--checkpoint", str(out / "checkpoints" / "generation_best.pt"), "--data", str(root),
            "--max-samples", "2", "--no-progress", "--out", str(tmp_path / "eval")]
    assert main(args) == 0
    assert "no constant mean-pose row: the training split cannot be read: " in capsys.readouterr().out
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert not any(key.startswith("constant/") for key in got)
