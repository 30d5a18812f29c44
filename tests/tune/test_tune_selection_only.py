"""A selection-only search (``search.generator``) is checked before Ray starts: a space that searches a generation
key, a budget without a selection stage, a top-n that can reach K, a checkpoint that is no hmh checkpoint or of
another model: each one line naming the key or the file. No Ray."""

import dataclasses
import re
from pathlib import Path

import pytest

from hmh.config import ConfigError, load_config
from hmh.models.build import build_models
from hmh.models.checkpoint import save_checkpoint
from tune.search import GENERATION_KEYS, load_experiment
from tune.space import SpaceError, load_space
from tune.train import prepare_config

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "tune" / "configs" / "demo.yaml")  # K = 4, 2 + 1 epochs
SELECTION = str(REPO / "tune" / "spaces" / "selection.yaml")


def _space(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def _experiment(tmp_path: Path, space: str, *overrides: str):
    return load_experiment(DEMO, [f"search.storage_path={tmp_path / 'results'}", "search.generator=/some/gen.pt",
                                  *overrides], space)


def test_the_selection_space_searches_no_generation_key_and_loads_on_the_demo(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, SELECTION)
    assert exp.space.keys and not [key for key in exp.space.keys if key.startswith(GENERATION_KEYS)]
    assert {"selection.top_n", "loss.jrc_alpha", "optim.selection_lr"} <= set(exp.space.keys)


@pytest.mark.parametrize("key", ["model.num_hypotheses", "optim.lr", "loss.diversity_alpha", "loss.mode_hypothesis"])
def test_a_space_with_a_generation_key_is_refused_by_name(tmp_path: Path, key: str) -> None:
    spec = {"model.num_hypotheses": "{type: categorical, values: [4]}", "optim.lr": "{type: float, low: 0.001, "
            "high: 0.01}", "loss.diversity_alpha": "{type: float, low: 0.5, high: 2.0}",
            "loss.mode_hypothesis": "{type: categorical, values: [false, true]}"}[key]
    space = _space(tmp_path, f"parameters:\n  loss.jrc_alpha: {{type: float, low: 0.0, high: 1.0}}\n  {key}: {spec}\n")
    with pytest.raises(SpaceError, match=rf"space.yaml: parameter '{key}' is of the generation stage, which "
                                         r"search.generator='/some/gen.pt' fixes"):
        _experiment(tmp_path, space)
    load_space(space, load_config(DEMO))  # the same space is fine for a search that trains both stages


@pytest.mark.parametrize(("space", "overrides", "error", "says"), [
    ("selection.top_n: {type: int, low: 1, high: model.num_hypotheses}", [], SpaceError,
     "space.yaml: parameter 'selection.top_n' = 4 skips the selection stage (top_n = K = 4 keeps every hypothesis"),
    ("selection.top_n: {type: categorical, values: [1, 4]}", [], SpaceError,
     "parameter 'selection.top_n' = 4 skips the selection stage"),
    ("loss.jrc_alpha: {type: float, low: 0.0, high: 1.0}", ["selection.top_n=4"], ConfigError,
     "search.generator='/some/gen.pt': its trials would train nothing, as the selection stage is skipped: top_n = K"),
    ("loss.jrc_alpha: {type: float, low: 0.0, high: 1.0}", ["train.selection_epochs=0"], ConfigError,
     "the selection stage is skipped: train.selection_epochs = 0"),
])
def test_a_budget_without_a_selection_stage_is_refused(tmp_path: Path, space: str, overrides: list[str], error,
                                                        says: str) -> None:
    with pytest.raises(error, match=re.escape(says)):
        _experiment(tmp_path, _space(tmp_path, f"parameters:\n  {space}\n"), *overrides)


TINY = ["model.embed_dim=16", "model.image_size=64", "data.synthetic_train=24", "data.synthetic_test=8",
        "data.synthetic_size=64", "data.synthetic_subframes=3", "data.max_train_samples=8", "data.max_eval_samples=8"]


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory) -> Path:
    """An untrained generator of the tiny demo model, saved as hmh train saves its generation stage."""
    cfg = load_config(DEMO, TINY)
    generator, _ = build_models(cfg, pretrained=False)
    return save_checkpoint(tmp_path_factory.mktemp("gen") / "generation_best.pt", generator=generator, config=cfg,
                           stage="generation", epoch=1)


def test_the_given_generator_is_checked_and_made_absolute(generator_file: Path, monkeypatch) -> None:
    monkeypatch.chdir(generator_file.parent)
    cfg = prepare_config(load_config(DEMO, [*TINY, "search.generator=generation_best.pt"]), progress=False)
    assert cfg.search.generator == str(generator_file)  # workers change directory


@pytest.mark.parametrize(("override", "says"), [
    ("model.num_hypotheses=2", "model.num_hypotheses: 4 there, 2 here"),
    ("model.embed_dim=32", "model.embed_dim: 16 there, 32 here"),
    ("loss.mode_hypothesis=true", "loss.mode_hypothesis: False there, True here"),  # what its hypothesis 0 is
])
def test_a_generator_of_another_model_is_refused_before_the_data_is_built(generator_file: Path, override: str,
                                                                          says: str, monkeypatch) -> None:
    import hmh.train.runner as runner

    monkeypatch.setattr(runner, "data_root", lambda *args, **kwargs: pytest.fail("the data was resolved first"))
    cfg = load_config(DEMO, [*TINY, f"search.generator={generator_file}", override, "selection.top_n=1"])
    with pytest.raises(ConfigError, match=f"search.generator='{generator_file}': its generator differs from this "
                                          f"config's: {says}$"):
        prepare_config(cfg, progress=False)


def test_a_file_that_is_no_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    other = tmp_path / "notes.pt"
    other.write_bytes(b"not a checkpoint")
    cfg = load_config(DEMO, [*TINY, f"search.generator={other}"])
    with pytest.raises(ConfigError, match=f"search.generator='{other}': {other}: refused, not an hmh checkpoint"):
        prepare_config(cfg, progress=False)
    missing = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, generator=str(tmp_path / "no.pt")))
    with pytest.raises(ConfigError, match="no.pt: checkpoint file not found"):
        prepare_config(missing, progress=False)
