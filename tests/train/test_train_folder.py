"""``hmh train`` / ``hmh evaluate`` output folders: the lock, a run a killed ``--overwrite`` left aside, dangling
symbolic links; and the line that says which epoch a stage kept. No training: every case stops before it."""

import dataclasses
import math
import os

import pytest
import torch

from hmh.cli import main
from hmh.config import ConfigError, load_config
from hmh.files import folder_lock
from hmh.results.tables import OBJECTIVE
from hmh.train import engine, runner
from hmh.train.runner import RunPaths, kept_line

TINY = ["model.image_size=64", "model.embed_dim=32", "model.num_hypotheses=2", "model.mht_blocks=1",
        "model.num_heads=2", "selection.top_n=1", "selection.decoder_blocks=1", "train.device=cpu"]


def _train(out, *extra: str) -> list[str]:
    return ["train", "--config", "cpu", "--out", str(out), "--no-progress", *extra,
            *(a for item in TINY for a in ("--set", item))]


def _evaluate(out, checkpoint="missing.pt") -> list[str]:
    return ["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"]


# Which epoch a stage keeps, and why.

def _history(objectives):
    return [{OBJECTIVE: v, "epoch": i + 1} for i, v in enumerate(objectives)]


def test_kept_line_names_the_epoch_the_metric_and_the_rule():
    cfg = load_config("cpu")
    line = kept_line("generation", cfg, True, 1, _history([41.2, 43.0, 44.02]))
    assert line == ("generation: kept epoch 1 of 3 (lowest validation mean_of_k/mpjpe_current: 41.20 mm; last epoch "
                    "44.02 mm; train.keep=best) in checkpoints/generation_best.pt")
    last = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, keep="last"))
    assert kept_line("selection", last, True, 3, _history([1, 2, 3])) == ("selection: kept epoch 3 of 3, the last "
                                                                          "(train.keep=last)")
    nans = _history([math.nan] * 2)
    assert "no validation split: data.val_fraction=0" in kept_line("generation", cfg, False, 2, nans)
    assert "was NaN in every epoch" in kept_line("generation", cfg, True, 2, nans)


def test_a_stage_prints_which_epoch_it_kept(tmp_path, monkeypatch):
    """The stage loop itself, its epochs faked: validation objectives 40, 50, 60 keep epoch 1 and say so."""
    cfg = load_config("cpu", ["train.generation_epochs=3"])
    objectives = iter([40.0, 50.0, 60.0])

    def save(path, **kwargs):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(kwargs["epoch"]))

    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **k: {})
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: {"mean_of_k/mpjpe_current": next(objectives)})
    monkeypatch.setattr(runner, "epoch_line", lambda report: f"epoch {report.epoch}")
    monkeypatch.setattr(runner, "save_checkpoint", save)
    lines: list[str] = []
    paths = RunPaths(tmp_path)
    result = runner._run_stage("generation", cfg, torch.nn.Linear(2, 2), None, {"train": [1, 2], "val": [3]},
                               torch.device("cpu"), paths, None, lines.append, False)
    assert paths.checkpoint("generation", "best").read_text() == "1"
    assert result.best_metrics[OBJECTIVE] == 40.0
    assert lines[-1].startswith("generation: kept epoch 1 of 3 (lowest validation mean_of_k/mpjpe_current: 40.00 mm; "
                                "last epoch 60.00 mm; train.keep=best)")



def test_the_generation_objective_setting_ranks_generation_epochs_and_is_what_a_trial_reports(tmp_path, monkeypatch):
    """``train.generation_objective=best_of_k``: the epoch with the lowest best of K is kept (not the lowest mean of
    K), and every epoch's report carries best of K as the objective, with its source."""
    cfg = load_config("cpu", ["train.generation_epochs=3", "train.generation_objective=best_of_k"])
    vals = iter([{"mean_of_k/mpjpe_current": 40.0, "best_of_k/mpjpe_current": 30.0},
                 {"mean_of_k/mpjpe_current": 50.0, "best_of_k/mpjpe_current": 20.0},
                 {"mean_of_k/mpjpe_current": 60.0, "best_of_k/mpjpe_current": 25.0}])

    def save(path, **kwargs):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(kwargs["epoch"]))

    reports = []
    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **k: {})
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: next(vals))
    monkeypatch.setattr(runner, "epoch_line", lambda report: reports.append(report.metrics()) or "")
    monkeypatch.setattr(runner, "save_checkpoint", save)
    lines: list[str] = []
    paths = RunPaths(tmp_path)
    runner._run_stage("generation", cfg, torch.nn.Linear(2, 2), None, {"train": [1, 2], "val": [3]},
                      torch.device("cpu"), paths, None, lines.append, False)
    assert paths.checkpoint("generation", "best").read_text() == "2"
    assert [r[OBJECTIVE] for r in reports] == [30.0, 20.0, 25.0]
    assert {r["val/objective_source"] for r in reports} == {"best_of_k"}
    assert "lowest validation best_of_k/mpjpe_current: 20.00 mm" in lines[-1]
    with pytest.raises(ConfigError, match="train.generation_objective.*one of mean_of_k, best_of_k, label_oracle"):
        load_config("cpu", ["train.generation_objective=final"])


@pytest.mark.parametrize("overrides", [["model.num_hypotheses=2", "selection.top_n=2"],
                                       ["selection.rule=reprojection"]])
def test_a_run_whose_output_needs_no_selector_reports_its_final_from_the_first_epoch(overrides):
    """top_n = K (every hypothesis kept) or the reprojection rule: the generation stage is the whole run, so its
    objective is the run's final, never a stand-in such as best of K that no output could reach."""
    from hmh.train.engine import selection_skipped
    from hmh.train.loop import final_without_selector, objective_source

    cfg = load_config("cpu", [*overrides, "train.generation_objective=best_of_k"])
    assert objective_source("generation", cfg) == "final"
    assert selection_skipped(cfg) == final_without_selector(cfg) != ""  # one rule: no selector is trained either
    with_selector = load_config("cpu", ["train.generation_objective=best_of_k"])
    assert objective_source("generation", with_selector) == "best_of_k"
    assert final_without_selector(with_selector) == ""

# One writer per folder.

@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_folder_another_process_writes_is_refused(tmp_path, one_line_error, command):
    out = tmp_path / "out"
    with folder_lock.exclusive(out):
        assert main(_train(out) if command == "train" else _evaluate(out)) == 2
    assert f"{out} is being written by hmh process {os.getpid()}" in one_line_error()
    assert not out.exists()


# What a killed --overwrite (SIGKILL) left aside.

def _aside(out, *names):
    aside = out / ".hmh-replaced-k1ll3d"
    (aside / "checkpoints").mkdir(parents=True)
    for name in names:
        (aside / name).write_text(f"old {name}")
    return aside


def test_the_next_train_puts_back_the_run_a_killed_overwrite_set_aside(tmp_path, capsys):
    out = tmp_path / "run"
    aside = _aside(out, "config.yaml", "metrics.json")
    assert main(_train(out)) == 2  # restored, so the folder now holds a run, which needs --overwrite
    captured = capsys.readouterr()
    assert f"restored the run an interrupted --overwrite had set aside in {aside}: checkpoints, config.yaml, " \
           "metrics.json" in captured.out
    assert f"--out {out}: already holds a run (config.yaml, checkpoints, metrics.json)" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml", "metrics.json"]
    assert (out / "config.yaml").read_text() == "old config.yaml"


def test_a_set_aside_run_beside_the_killed_runs_files_is_named_not_chosen(tmp_path, one_line_error, snapshot):
    out = tmp_path / "run"
    aside = _aside(out, "config.yaml")
    (out / "config.yaml").write_text("the killed run's")
    before = snapshot(out)
    assert main(_train(out, "--overwrite")) == 2
    assert (f"--out {out}: an interrupted --overwrite left the run it was replacing in {aside} (checkpoints, "
            f"config.yaml) beside its own partial config.yaml; to restore the old run, delete those and move the "
            f"contents of {aside} back into {out}; to keep the partial one, delete {aside}") in one_line_error()
    assert snapshot(out) == before


# Dangling symbolic links are refused before any work.

@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("under", [False, True])
def test_a_dangling_symlink_out_is_refused_first(tmp_path, one_line_error, command, under):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    out = link / "sub" if under else link
    assert main(_train(out) if command == "train" else _evaluate(out)) == 2
    assert f"--out {out}: {link} is a symbolic link to {tmp_path / 'gone'}, which does not exist" in one_line_error()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


def test_kept_line_of_the_last_epoch_does_not_repeat_it():
    line = kept_line("selection", load_config("cpu"), True, 2, _history([50.0, 42.5]))
    assert line == ("selection: kept epoch 2 of 2 (lowest validation final/mpjpe_current: 42.50 mm; train.keep=best) "
                    "in checkpoints/selection_best.pt")
