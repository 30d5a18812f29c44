"""The top-level CLI: help in workflow order, bare ``hmh``, OSErrors and SIGTERM as one line and a clean exit."""

import errno
import os
import re
import signal
import time

import pytest

from hmh import cli
from hmh.cli import main, run_reporting_errors
from hmh.config import preset_names
from hmh.errors import HmhError
from hmh.files.outputs import replacing


def test_bare_hmh_prints_the_help(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: hmh") and "train" in out and err == ""


def test_commands_are_listed_in_workflow_order(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    listed = re.findall(r"^    (\w+)\s", out, re.MULTILINE)
    assert listed == ["mano", "data", "train", "evaluate", "export", "predict", "search", "study", "results"]


def test_train_help_lists_every_preset_and_a_device_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"preset name ({', '.join(preset_names())})" in out and "bench" in out
    assert "--device DEVICE" in out


def test_train_device_is_checked_before_anything_runs(tmp_path, one_line_error):
    assert main(["train", "--device", "gpu0", "--out", str(tmp_path / "out")]) == 2
    assert "--device='gpu0' is invalid: expected auto, cpu, cuda or cuda:N" in one_line_error()
    assert not (tmp_path / "out").exists()


def test_train_device_overrides_the_config(monkeypatch):
    seen = {}

    def fake(cfg, out, **kwargs):
        seen["device"] = cfg.train.device
        raise HmhError("stop here")

    monkeypatch.setattr("hmh.train.runner.run_training", fake)
    assert main(["train", "--device", "cpu", "--set", "train.device=auto"]) == 2
    assert seen == {"device": "cpu"}


@pytest.mark.parametrize(("error", "line"), [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/a/checkpoints/x.pt"),
     "hmh train: error: cannot write /runs/a/checkpoints/x.pt: No space left on device"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/metrics.json"),
     "hmh train: error: cannot write /ro/metrics.json: Read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/x.json"),
     "hmh train: error: /data/x.json: Permission denied"),
    (OSError(errno.EIO, "Input/output error"), "hmh train: error: Input/output error"),
])
def test_an_os_error_is_one_line_naming_the_file(capsys, error, line):
    def run():
        raise error

    assert run_reporting_errors("hmh train", run) == 1
    err = capsys.readouterr().err
    assert err == line + "\n"


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_full_disk_while_saving_a_checkpoint_names_the_file(tmp_path, monkeypatch, capsys, wrapped):
    """``wrapped``: as torch.save does on a full disk, its zip writer raising a RuntimeError while unwinding."""
    import torch

    from hmh.config import load_config
    from hmh.models.checkpoint import save_checkpoint

    def full(obj, handle, *args, **kwargs):
        try:
            handle.write(b"PK")
            handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            if wrapped:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3200 vs 3094")

    monkeypatch.setattr(torch, "save", full)
    path = tmp_path / "c.pt"
    run = lambda: save_checkpoint(path, generator=torch.nn.Linear(2, 2), config=load_config(None),  # noqa: E731
                                  stage="generation", epoch=1)
    assert run_reporting_errors("hmh train", run) == 1
    assert capsys.readouterr().err == f"hmh train: error: cannot write {path}: No space left on device\n"
    assert list(tmp_path.iterdir()) == []  # no half-written file left


def test_sigterm_puts_a_replaced_run_back_and_exits_143(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("old")

    def train():
        with replacing(run_dir, ("config.yaml", "checkpoints")):
            (run_dir / "config.yaml").write_text("new, half written")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            pytest.fail("SIGTERM did not interrupt the run")

    before = signal.getsignal(signal.SIGTERM)
    assert run_reporting_errors("hmh train", train) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "hmh train: terminated\n"
    assert (run_dir / "config.yaml").read_text() == "old"
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
    assert signal.getsignal(signal.SIGTERM) is before



def test_an_error_raised_while_unwinding_from_sigterm_still_reads_terminated(capsys):
    """torch.save's zip writer turns an interruption inside a write into a RuntimeError of its own."""
    def run():
        try:
            raise cli.Terminated()
        except cli.Terminated:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None

    assert run_reporting_errors("hmh train", run) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "hmh train: terminated\n"


def test_other_errors_are_not_hidden():
    def run():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_reporting_errors("hmh train", run)


def test_a_write_error_that_names_no_file_names_the_output_folder(tmp_path, capsys):
    from hmh.files.outputs import naming_os_errors

    def run():
        with naming_os_errors(tmp_path / "eval"):
            raise OSError(errno.ENOSPC, "No space left on device")  # as file.write() raises it

    assert run_reporting_errors("hmh evaluate", run) == 1
    out = tmp_path / "eval"
    assert capsys.readouterr().err == f"hmh evaluate: error: cannot write {out}: No space left on device\n"


def test_an_os_error_ending_a_background_thread_is_one_line(capsys):
    import threading

    def write():
        raise OSError(errno.ENOSPC, "No space left on device")

    def run():
        thread = threading.Thread(target=write)
        thread.start()
        thread.join()

    assert run_reporting_errors("hmh train", run) == 0
    err = capsys.readouterr().err
    assert err == "hmh train: error in a background thread: No space left on device\n"
