"""The real-data commands refuse a wrong setup with one line before any expensive work: a BlurHand root that hmh did
not generate with hmh's synthetic hand, an empty data.root where the config needs one, a MANO path that is missing
or not a MANO file, and ImageNet weights that are neither cached nor downloadable. Each through the real entry
points (``hmh train``, ``hmh evaluate``, ``hmh search``, ``hmh study``, ``python -m tune.train``'s main), checked to
write nothing (no output folder, lock, dataset or index) and to start no Ray."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from tiny import TINY_MODEL

from hmh.cli import main
from hmh.config import load_config
from hmh.data.blurhand_index import index_cache_path
from hmh.data.synthetic import check_hand_model, is_synthetic_root
from hmh.mano.model import cache_root, model_path
from hmh.models.backbone import Backbone, PretrainedWeightsError, imagenet_weights, imagenet_weights_file
from hmh.models.build import build_models
from hmh.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[2]
BLURHAND = str(REPO / "tune" / "configs" / "blurhand.yaml")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path) -> Iterator[None]:
    """No download can succeed (every HTTP(S) request goes to a closed local port), and torch hub's cache is a
    folder of this test's that does not exist yet."""
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    # urllib builds its global opener, proxies included, on the first urlopen: one built here would keep the closed
    # port for every later test in this process (the two-node tests poll their dashboards with urlopen)
    urllib.request.install_opener(None)
    yield
    urllib.request.install_opener(None)


@pytest.fixture
def nothing_written(fixture, snapshot, tmp_path) -> Callable[[], Callable[[], None]]:
    """``check = nothing_written()`` notes ``tmp_path`` (the BlurHand root, any MANO files) and hmh's cache;
    ``check()`` then asserts that both are unchanged (no output folder, lock, dataset or index written) and that Ray
    was never started in this process."""

    def start() -> Callable[[], None]:
        before = snapshot(tmp_path), snapshot(cache_root())

        def check() -> None:
            assert (snapshot(tmp_path), snapshot(cache_root())) == before
            assert not index_cache_path(fixture.root, "train").exists()
            assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()

        return check

    return start


def _mano(tmp_path: Path) -> Path:
    """A folder holding a readable MANO_RIGHT.npz and MANO_LEFT.npz (hmh's synthetic hand; real MANO is licensed)."""
    folder = tmp_path / "mano"
    assert main(["mano", "build", "--out", str(folder)]) == 0
    return folder


@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_train_on_a_blurhand_root_without_mano_path_is_refused(fixture, tmp_path, one_line_error, nothing_written,
                                                               preset):
    check = nothing_written()
    args = ["train", "--config", preset, "--set", f"data.root={fixture.root}", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = one_line_error()
    assert err.startswith("hmh train: error: model.mano_path is empty") and f"data.root='{fixture.root}'" in err
    assert "MANO_RIGHT.pkl" in err
    check()


def test_a_root_written_by_hmh_data_synth_still_takes_the_synthetic_hand(fixture, tmp_path):
    assert not is_synthetic_root(fixture.root)
    (fixture.root / "dataset.yaml").write_text("format: BlurHand\ngenerator: hmh.data.synthetic\n")
    check_hand_model(fixture.root, "")  # accepted: its annotations were posed with that hand
    check_hand_model("", "")  # the cached synthetic dataset
    check_hand_model(tmp_path / "elsewhere" / "blurhand-synth-0123456789ab", "")  # a checkpoint's, not on this disk
    (tmp_path / "blurhand-synth-0123456789ab").mkdir()  # here, but without the manifest: not hmh's
    assert not is_synthetic_root(tmp_path / "blurhand-synth-0123456789ab")


def test_search_with_the_blurhand_config_and_no_data_root_is_refused_before_ray(tmp_path, one_line_error,
                                                                                nothing_written):
    check = nothing_written()
    assert main(["search", "--config", BLURHAND, "--set", f"search.storage_path={tmp_path / 'results'}"]) == 2
    err = one_line_error()
    assert err.startswith("hmh search: error: data.root is empty, and this config needs one (data.require_root=true)")
    check()


def test_paper_without_data_root_is_refused_before_a_synthetic_dataset_is_built(tmp_path, one_line_error,
                                                                                nothing_written):
    check = nothing_written()
    assert main(["train", "--config", "paper", "--out", str(tmp_path / "out")]) == 2
    err = one_line_error()
    assert err.startswith("hmh train: error: data.root is empty, and this config needs one (data.require_root=true)")
    check()


@pytest.mark.parametrize("command", ["search", "study", "tune.train"])
def test_the_ray_drivers_refuse_a_blurhand_root_without_mano_path(fixture, tmp_path, one_line_error, nothing_written,
                                                                   command):
    check = nothing_written()
    args = ["--config", BLURHAND, "--set", f"data.root={fixture.root}",
            "--set", f"search.storage_path={tmp_path / 'results'}"]
    if command == "tune.train":
        import tune.train
        from tune.cli import main as driver_main

        assert driver_main("tune.train", tune.train.run_args, tune.train.build_parser(), args) == 2
    else:
        assert main([command, *args]) == 2
    err = one_line_error()
    assert f": error: model.mano_path is empty (hmh's synthetic hand), but data.root='{fixture.root}'" in err
    check()


@pytest.mark.parametrize("kind", ["missing", "not MANO", "no left model"])
def test_a_bad_mano_path_is_refused_before_the_data_is_indexed(fixture, tmp_path, one_line_error, nothing_written,
                                                               kind):
    bad = tmp_path / "bad"
    bad.mkdir()
    if kind == "missing":
        mano, says = bad / "nonexistent", "MANO model file not found"
    elif kind == "not MANO":
        mano, says = bad / "MANO_RIGHT.pkl", "not a readable MANO pickle"
        mano.write_bytes(b"not a pickle")
    else:
        mano, says = bad, "no MANO_LEFT.pkl or MANO_LEFT.npz in this folder"
        (bad / "MANO_RIGHT.npz").write_bytes(model_path("", "right").read_bytes())
    check = nothing_written()
    args = ["train", "--config", "paper", "--set", f"data.root={fixture.root}", "--set", f"model.mano_path={mano}",
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = one_line_error()
    assert err.startswith(f"hmh train: error: model.mano_path: {mano}") and says in err
    check()


def test_missing_imagenet_weights_offline_are_one_line_naming_the_file(fixture, tmp_path, capsys, nothing_written):
    mano = _mano(tmp_path)
    wanted = imagenet_weights_file("resnet50")
    assert wanted == tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    wanted.parent.mkdir(parents=True)  # (made by the download attempt otherwise)
    check = nothing_written()
    capsys.readouterr()
    args = ["train", "--config", "paper", "--set", f"data.root={fixture.root}", "--set", f"model.mano_path={mano}",
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    said = capsys.readouterr()
    assert "Traceback" not in said.err and said.err.count("\n") == 1
    err = said.err.strip()
    assert err.startswith("hmh train: error: model.pretrained=true: the ImageNet weights of resnet50 are not in "
                          f"{wanted.parent} and cannot be downloaded (")
    assert f"put {wanted.name} (from https://download.pytorch.org/models/{wanted.name}) there" in err
    assert "TORCH_HOME" in err and "model.pretrained=false" in err
    assert "model.pretrained: downloading the ImageNet weights of resnet50 (once) from " in said.out  # never silent
    check()  # no partial download left either


def test_the_ray_drivers_check_the_imagenet_weights_before_ray(fixture, tmp_path, one_line_error):
    mano = _mano(tmp_path)
    args = ["search", "--config", BLURHAND, "--set", f"data.root={fixture.root}", "--set", f"model.mano_path={mano}",
            "--set", f"search.storage_path={tmp_path / 'results'}"]
    assert main(args) == 2
    assert "hmh search: error: model.pretrained=true: the ImageNet weights of resnet50" in one_line_error()
    assert not (tmp_path / "results").exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_provided_imagenet_weights_are_used_without_a_download(tmp_path):
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    path = imagenet_weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    said: list[str] = []
    loaded = imagenet_weights("resnet18", said.append)
    assert not said and loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
    backbone = Backbone("resnet18", pretrained=True)
    assert torch.equal(backbone.stem[0].weight, state["conv1.weight"])
    assert torch.equal(backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_an_unreadable_cached_weights_file_is_named(tmp_path):
    path = imagenet_weights_file("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a download")
    with pytest.raises(PretrainedWeightsError) as info:
        Backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert message.startswith(f"model.pretrained=true: {path}: not a readable weights file") and "\n" not in message


def test_evaluate_on_a_blurhand_root_with_a_synthetic_hand_checkpoint_is_refused(fixture, tmp_path, one_line_error):
    cfg = load_config("cpu", TINY_MODEL)
    generator, _ = build_models(cfg)
    checkpoint = save_checkpoint(tmp_path / "run" / "checkpoints" / "gen.pt", generator=generator, config=cfg,
                                 stage="generation", epoch=1)
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(fixture.root), "--split", "train",
            "--out", str(out), "--no-progress"]
    assert main(args) == 2
    assert "hmh evaluate: error: model.mano_path is empty (hmh's synthetic hand)" in one_line_error()
    assert not out.exists() and not index_cache_path(fixture.root, "train").exists()
