"""Checkpoints: weights_only round trip, atomic writes, clear errors, and rebuilding the models from a file alone."""


import pytest
import torch
from tiny import TINY_MODEL

from hmh.cli import main
from hmh.config import load_config, to_dict
from hmh.models.build import build_models, unwrap
from hmh.models.checkpoint import (
    CHECKPOINT_FILE,
    FORMAT,
    CheckpointError,
    load_checkpoint,
    models_from_checkpoint,
    save_checkpoint,
)
from hmh.train.loop import make_optimizer, make_scheduler


@pytest.fixture(scope="module")
def cfg():
    return load_config("cpu", TINY_MODEL)


class Wrapper(torch.nn.Module):
    """Stands in for DDP: the real module under ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_round_trip_weights_only(tmp_path, cfg):
    gen = torch.nn.Linear(3, 2)
    opt = make_optimizer("generation", gen, cfg)
    sched = make_scheduler("generation", opt, cfg, steps_per_epoch=5)
    gen(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    path = save_checkpoint(tmp_path / "a" / "c.pt", generator=Wrapper(gen), config=cfg, stage="generation", epoch=2,
                           optimizer=opt, scheduler=sched, metrics={"x": torch.tensor(1.5), "y": 2})
    raw = torch.load(path, weights_only=True)  # only tensors and plain Python inside
    assert raw["format"] == FORMAT and raw["stage"] == "generation" and raw["epoch"] == 2
    assert raw["config"] == to_dict(cfg)
    assert raw["metrics"] == {"x": 1.5, "y": 2.0}
    assert set(raw["versions"]) == {"hmh", "torch"}
    assert raw["model"]["selector"] is None
    assert set(raw["model"]["generator"]) == {"weight", "bias"}  # no "module." prefix from the wrapper
    data = load_checkpoint(path)
    assert torch.equal(data["model"]["generator"]["weight"], gen.weight)
    opt2 = make_optimizer("generation", torch.nn.Linear(3, 2), cfg)
    opt2.load_state_dict(data["optimizer"])
    sched2 = make_scheduler("generation", opt2, cfg, steps_per_epoch=5)
    sched2.load_state_dict(data["scheduler"])
    assert sched2.last_epoch == 1
    assert [p.name for p in tmp_path.joinpath("a").iterdir()] == ["c.pt"]  # no temporary file left behind


def test_missing_file_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_file_names_it(tmp_path, cfg):
    path = save_checkpoint(tmp_path / "c.pt", generator=torch.nn.Linear(2, 2), config=cfg, stage="generation",
                           epoch=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.pt: not a readable hmh checkpoint"):
        load_checkpoint(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    text = tmp_path / "notes.pt"
    text.write_text("hello world\n")  # torch's legacy unpickler fails with a KeyError on these bytes
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a readable hmh checkpoint"):
        load_checkpoint(text)


def test_wrong_content_is_rejected(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.pt: not an hmh checkpoint"):
        load_checkpoint(other)


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [{"format": FORMAT, "payload": Evil()}, b"\x00not a checkpoint at all"])
def test_refusals_say_what_was_found_and_never_advise_an_unsafe_load(tmp_path, content, one_line_error):
    """torch's own message advises weights_only=False: hmh says what it found and what it accepts instead."""
    path = tmp_path / "other.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    assert main(["evaluate", "--checkpoint", str(path), "--out", str(tmp_path / "eval")]) == 2
    err = one_line_error()
    assert f"{path}: refused, not an hmh checkpoint: " in err and "hmh reads only its own checkpoints" in err
    assert "weights_only" not in err and "trust" not in err
    assert ("import the Python object print" in err) == (not isinstance(content, bytes))
    assert not (tmp_path / "eval").exists()


def test_unwrap_nested():
    inner = torch.nn.Linear(1, 1)
    assert unwrap(Wrapper(Wrapper(inner))) is inner
    assert unwrap(inner) is inner


def test_rebuild_from_checkpoint_alone_gives_identical_outputs(tmp_path, cfg):
    torch.manual_seed(0)
    generator, selector = build_models(cfg)
    with torch.no_grad():  # move away from the initialisation, so a rebuilt default model would differ
        for p in list(generator.parameters()) + list(selector.parameters()):
            p.add_(0.01 * torch.randn_like(p))
    generator.eval()
    selector.eval()
    path = save_checkpoint(tmp_path / "sel.pt", generator=generator, selector=selector, config=cfg,
                           stage="selection", epoch=3, metrics={"final/mpjpe_current": 12.0})
    torch.manual_seed(123)
    loaded = models_from_checkpoint(path, "cpu")
    assert loaded.stage == "selection" and loaded.epoch == 3 and loaded.metrics == {"final/mpjpe_current": 12.0}
    image = torch.rand(2, 3, cfg.model.image_size, cfg.model.image_size)
    with torch.no_grad():
        want = generator(image)
        got = loaded.generator(image)
        assert torch.equal(want.joints, got.joints)
        assert torch.equal(want.vertices, got.vertices)
        assert torch.equal(selector(image, want).reward, loaded.selector(image, got).reward)
    gen_only = save_checkpoint(tmp_path / "gen.pt", generator=generator, config=cfg, stage="generation", epoch=1)
    assert models_from_checkpoint(gen_only).selector is None


def test_mismatched_state_names_the_key(tmp_path, cfg):
    path = save_checkpoint(tmp_path / "bad.pt", generator=torch.nn.Linear(2, 2), config=cfg, stage="generation",
                           epoch=1)
    with pytest.raises(CheckpointError, match="bad.pt: 'model.generator' does not match"):
        models_from_checkpoint(path)


def test_rebuild_restores_a_mano_model_that_is_gone(tmp_path, cfg):
    import dataclasses
    import shutil

    from hmh.mano.model import model_path

    mano_file = tmp_path / "mano" / "MANO_RIGHT.npz"
    mano_file.parent.mkdir()
    shutil.copyfile(model_path("", "right"), mano_file)
    own = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mano_path=str(mano_file)))
    torch.manual_seed(0)
    generator, _ = build_models(own)
    with torch.no_grad():
        generator.mano.layer.v_template.mul_(1.1)  # a MANO model the synthetic hand would not reproduce
    generator.eval()
    path = save_checkpoint(tmp_path / "gen.pt", generator=generator, config=own, stage="generation", epoch=1)
    mano_file.unlink()
    loaded = models_from_checkpoint(path)
    image = torch.rand(1, 3, cfg.model.image_size, cfg.model.image_size)
    with torch.no_grad():
        assert torch.equal(generator(image).vertices, loaded.generator(image).vertices)


def test_a_folder_with_checkpoint_pt_is_read_as_that_file(tmp_path, cfg):
    """Ray Train checkpoints of the tune drivers are folders holding checkpoint.pt: hmh evaluate/predict take them."""
    gen = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "epoch001" / CHECKPOINT_FILE, generator=gen, config=cfg, stage="generation", epoch=1)
    assert torch.equal(load_checkpoint(tmp_path / "epoch001")["model"]["generator"]["weight"], gen.weight)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=f"empty: a folder without {CHECKPOINT_FILE}, not a checkpoint"):
        load_checkpoint(tmp_path / "empty")
