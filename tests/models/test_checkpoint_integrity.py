"""Checkpoint checksums (a changed byte is refused, naming the file) and the slim inference export."""

import logging
import struct

import pytest
import torch
from tiny import TINY_MODEL

from hmh.cli import main
from hmh.config import load_config
from hmh.models.build import build_models
from hmh.models.checkpoint import (
    CheckpointError,
    export_checkpoint,
    load_checkpoint,
    models_from_checkpoint,
    save_checkpoint,
    state_checksum,
)
from hmh.train.loop import make_optimizer

MARK = 1.2345  # the weight value the corruption test looks for in the file


@pytest.fixture(scope="module")
def cfg():
    return load_config("cpu", TINY_MODEL)


def _linear_checkpoint(path, cfg, with_optimizer=False):
    gen = torch.nn.Linear(8, 8)
    with torch.no_grad():
        gen.weight.fill_(MARK)
    optimizer = None
    if with_optimizer:
        optimizer = make_optimizer("generation", gen, cfg)
        gen(torch.randn(4, 8)).sum().backward()
        optimizer.step()
    return save_checkpoint(path, generator=gen, config=cfg, stage="generation", epoch=1, optimizer=optimizer,
                           metrics={"objective": float("nan")})


def test_an_overwritten_weight_is_refused_naming_the_file(tmp_path, cfg):
    path = _linear_checkpoint(tmp_path / "c.pt", cfg)
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<f", MARK))
    data[at:at + 4] = struct.pack("<f", 3.4e38)
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["model"]["generator"]["weight"].max() > 1e38  # torch loads it
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: corrupt: its contents do not match the checksum")
    assert "\n" not in str(info.value)


def test_the_checksum_survives_a_round_trip_and_covers_every_entry(tmp_path, cfg):
    path = _linear_checkpoint(tmp_path / "c.pt", cfg, with_optimizer=True)
    raw = torch.load(path, weights_only=True)
    assert raw["checksum"].startswith("sha256:") and raw["checksum"] == state_checksum(raw)
    assert load_checkpoint(path)["epoch"] == 1
    for change in (lambda d: d.update(epoch=2), lambda d: d["metrics"].update(objective=1.0),
                   lambda d: d["optimizer"]["state"][0]["exp_avg"].add_(1e-3),
                   lambda d: d["config"]["model"].update(num_hypotheses=3)):
        changed = torch.load(path, weights_only=True)
        change(changed)
        assert state_checksum(changed) != raw["checksum"]


def test_a_checkpoint_without_a_checksum_loads_with_a_warning(tmp_path, cfg, caplog):
    path = _linear_checkpoint(tmp_path / "old.pt", cfg)
    raw = torch.load(path, weights_only=True)
    del raw["checksum"]
    torch.save(raw, path)
    with caplog.at_level(logging.WARNING, logger="hmh.models.checkpoint"):
        data = load_checkpoint(path)
    assert torch.equal(data["model"]["generator"]["weight"], raw["model"]["generator"]["weight"])
    assert f"{path}: no checksum" in caplog.text and "without an integrity check" in caplog.text


def test_export_keeps_the_weights_and_drops_the_optimizer(tmp_path, cfg):
    torch.manual_seed(0)
    generator, selector = build_models(cfg)
    optimizer = make_optimizer("selection", selector, cfg)
    image = torch.rand(2, 3, 64, 64)
    selector(image, generator(image)).reward.sum().backward()
    optimizer.step()
    full = save_checkpoint(tmp_path / "run" / "selection_best.pt", generator=generator, selector=selector,
                           optimizer=optimizer, config=cfg, stage="selection", epoch=3, metrics={"x": 1.0})
    slim = export_checkpoint(full, tmp_path / "slim.pt")
    raw = torch.load(slim, weights_only=True)
    assert raw["optimizer"] is None and raw["scheduler"] is None and raw["scaler"] is None
    assert slim.stat().st_size < 0.75 * full.stat().st_size
    loaded, original = models_from_checkpoint(slim), models_from_checkpoint(full)
    assert (loaded.stage, loaded.epoch, loaded.metrics) == ("selection", 3, {"x": 1.0})
    for got, want in ((loaded.generator, original.generator), (loaded.selector, original.selector)):
        for (name, a), b in zip(got.state_dict().items(), want.state_dict().values(), strict=True):
            assert torch.equal(a, b), name


def test_hmh_export_writes_and_refuses_to_overwrite(tmp_path, cfg, capsys, one_line_error):
    full = _linear_checkpoint(tmp_path / "c.pt", cfg, with_optimizer=True)
    out = tmp_path / "slim.pt"
    assert main(["export", "--checkpoint", str(full), "--out", str(out)]) == 0
    assert f"written: {out}" in capsys.readouterr().out
    assert load_checkpoint(out)["optimizer"] is None
    before = out.read_bytes()
    assert main(["export", "--checkpoint", str(full), "--out", str(out)]) == 2
    assert f"--out {out}: exists; pass --overwrite" in one_line_error()
    assert main(["export", "--checkpoint", str(full), "--out", str(tmp_path)]) == 2
    assert "is a folder" in one_line_error()
    assert main(["export", "--checkpoint", str(full), "--out", str(full), "--overwrite"]) == 2
    assert "cannot replace the checkpoint it is made from" in one_line_error()
    assert out.read_bytes() == before and load_checkpoint(full)["optimizer"] is not None
