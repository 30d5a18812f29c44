"""Typed config: presets, overrides, validation errors that name the key, YAML round trip."""

import math
from pathlib import Path

import pytest

from hmh.config import (
    Config,
    ConfigError,
    field_types,
    flatten,
    from_dict,
    load_config,
    parse_override,
    parse_pick,
    save_config,
    to_dict,
    to_yaml,
)


@pytest.mark.parametrize("preset", ["cpu", "paper", "bench", "bench-evidence"])
def test_presets_load_and_round_trip_through_yaml(preset: str, tmp_path: Path) -> None:
    config = load_config(preset)
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert load_config(path) == config
    assert to_yaml(load_config(path)) == to_yaml(config)


def test_paper_preset_has_the_paper_settings() -> None:
    config = load_config("paper")
    assert (config.model.backbone, config.model.image_size, config.model.embed_dim) == ("resnet50", 256, 512)
    assert (config.model.num_hypotheses, config.selection.top_n, config.model.mht_blocks) == (16, 4, 4)
    assert config.selection.decoder_blocks == 4
    # faithful to the method: ImageNet start, the whole training split, the last epoch, per-frame winners
    assert config.model.pretrained and config.data.val_fraction == 0.0 and config.train.keep == "last"
    assert config.loss.winner == "frame" and config.optim.milestones == [10, 13]
    assert not load_config("cpu").model.pretrained  # the offline default downloads nothing


def test_bench_evidence_is_bench_with_another_selector() -> None:
    """The generator, the data and the budget are bench's: only the selector's own settings differ."""
    bench, evidence = flatten(load_config("bench")), flatten(load_config("bench-evidence"))
    assert {key: value for key, value in evidence.items() if bench[key] != value} == {
        "selection.evidence": "both", "selection.embedding_std": 0.02, "loss.selection_target": "jrc_graded",
        "loss.rank_weight": 1.0, "optim.selection_lr": 2e-3}
    assert load_config("paper").selection.evidence == "none"  # the dissertation's selector stays paper's


def test_overrides_are_typed_and_nested() -> None:
    config = load_config("cpu", ["model.num_hypotheses=8", "loss.jrc_alpha=0.25", "optim.milestones=[2, 3]"])
    assert config.model.num_hypotheses == 8
    assert config.loss.jrc_alpha == 0.25
    assert config.optim.milestones == [2, 3]
    assert isinstance(load_config(None, ["optim.lr=1"]).optim.lr, float)  # int accepted for a float field


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("model.num_hypotheses=0", "model.num_hypotheses"),
        ("selection.top_n=0", "selection.top_n"),
        ("selection.top_n=5", "selection.top_n"),  # cpu preset has K = 4
        ("model.num_frames=5", "model.num_frames"),
        ("loss.diversity=-0.1", "loss.diversity"),
        ("loss.joint_3d=-1", "loss.joint_3d"),
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-1e-3", "optim.lr"),
        ("model.backbone=vgg16", "model.backbone"),
        ("model.unknown_field=1", "model.unknown_field"),
        ("nonsense.key=1", "nonsense"),
        ("model.num_hypotheses=four", "model.num_hypotheses"),
        ("model.pretrained=1", "model.pretrained"),
        ("optim.milestones=3", "optim.milestones"),
        ("loss.jrc_alpha=1.5", "loss.jrc_alpha"),
        ("loss.winner=hypothesis", "loss.winner"),
        ("train.keep=first", "train.keep"),
        ("data.synthetic_profile=easy", "data.synthetic_profile"),
        ("selection.embedding_std=0", "selection.embedding_std"),
        ("train.seed=-1", "train.seed"),
        ("train.device=cudax", "train.device"),
        ("search.tpe_startup_trials=-1", "search.tpe_startup_trials"),
    ],
)
def test_invalid_values_raise_naming_the_key(override: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_config("cpu", [override])


TWO = "search.objectives=mpjpe_ms"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["search.objectives=time"], "search.objectives='time' is invalid: expected one of mpjpe, mpjpe_ms"),
        ([TWO, "search.pick=fastest"], "search.pick='fastest' is invalid: expected min_mpjpe, min_ms or max_ms="),
        ([TWO, "search.pick=max_ms=0"], "search.pick='max_ms=0' is invalid"),
        ([TWO, "search.pick=max_ms=-3"], "search.pick='max_ms=-3' is invalid"),
        ([TWO, "search.pick=max_ms=1e999"], "search.pick='max_ms=1e999' is invalid"),
        ([TWO, "search.pick=max_ms="], "search.pick='max_ms=' is invalid"),
        ([TWO, "search.pick=min_ms=3"], "search.pick='min_ms=3' is invalid"),
        (["search.pick=min_ms"], "search.pick='min_ms' is invalid: expected min_mpjpe with search.objectives='mpjpe'"),
    ],
)
def test_search_objectives_and_pick_are_checked_in_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("cpu", overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_search_pick_parses_its_three_rules() -> None:
    assert load_config("cpu").search.objectives == "mpjpe" and load_config("cpu").search.pick == "min_mpjpe"
    assert load_config("cpu", [TWO, "search.pick=max_ms=2.5e1"]).search.pick == "max_ms=2.5e1"
    assert parse_pick("max_ms=2.5e1") == ("max_ms", 25.0) and parse_pick("max_ms=20") == ("max_ms", 20.0)
    assert parse_pick("min_mpjpe") == ("min_mpjpe", math.inf) and parse_pick("min_ms") == ("min_ms", math.inf)
    assert parse_pick("max_ms=0") is None and parse_pick("max") is None


def test_error_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  num_hypotheses: 2\nselection:\n  top_n: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "selection.top_n" in str(info.value)


def test_truncated_yaml_and_missing_file_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: {backbone: resnet18\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="neither an existing file nor a preset"):
        load_config(tmp_path / "missing.yaml")


def test_base_chain_inherits_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text("base: cpu\nmodel:\n  num_hypotheses: 6\n")
    config = load_config(tmp_path / "child.yaml")
    assert config.model.num_hypotheses == 6
    assert config.model.embed_dim == load_config("cpu").model.embed_dim
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "loop.yaml")


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_override("model.num_hypotheses")


def test_dict_and_flat_views() -> None:
    config = Config()
    assert from_dict(to_dict(config)) == config
    flat = flatten(config)
    assert flat["model.num_hypotheses"] == config.model.num_hypotheses
    assert flat["optim.milestones"] == config.optim.milestones
    assert all(not isinstance(v, dict) for v in flat.values())


@pytest.mark.parametrize(("text", "value"), [("1e-4", 1e-4), ("3E-5", 3e-5), ("1.0e-3", 1e-3), ("2", 2.0),
                                             ("2.5e+1", 25.0)])
def test_exponent_floats_that_yaml_reads_as_strings_are_numbers(text: str, value: float, tmp_path: Path) -> None:
    assert load_config("cpu", [f"optim.lr={text}"]).optim.lr == value
    path = tmp_path / "exp.yaml"
    path.write_text(f"base: cpu\noptim: {{selection_lr: {text}}}\n")
    assert load_config(str(path)).optim.selection_lr == value


@pytest.mark.parametrize("text", ["fast", "1e-", "e5", "1e-4x"])
def test_non_numeric_float_strings_are_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match=f"optim.lr: expected a number, got '{text}'"):
        load_config("cpu", [f"optim.lr={text}"])


def test_exponent_strings_stay_invalid_for_integer_fields() -> None:
    with pytest.raises(ConfigError, match="model.num_hypotheses: expected an integer"):
        load_config("cpu", ["model.num_hypotheses=1e1"])


FLOAT_KEYS = [key for key, tp in field_types().items() if tp is float]  # every float of the schema, not a list


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_key_refuses_inf_and_nan_from_yaml_and_from_set(key: str, tmp_path: Path) -> None:
    section, name = key.split(".")
    for yaml_text, set_text, shown in ((".inf", "inf", "inf"), ("-.inf", "-Infinity", "-inf"), (".nan", "nan", "nan"),
                                       ("1e999", "1e999", "inf")):
        path = tmp_path / "bad.yaml"
        path.write_text(f"base: cpu\n{section}:\n  {name}: {yaml_text}\n")
        for source, overrides in ((path, []), ("cpu", [f"{key}={set_text}"])):
            with pytest.raises(ConfigError) as info:
                load_config(source, overrides)
            assert f"{key}={shown} is invalid: expected a finite number" in str(info.value)
