"""Config values and files that used to pass and crash later: each is one ConfigError line naming the key or file,
fast, with the value shown abbreviated."""

import time
from pathlib import Path

import pytest

from hmh.config import ConfigError, load_config, preset_names, read_yaml_file


def _error(source, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("override", "message"), [
    ("model.num_heads=0", "model.num_heads=0 is invalid: expected >= 1"),
    ("train.seed=-1", "train.seed=-1 is invalid: expected 0 <= seed < 2^32"),
    ("train.seed=9223372036854775808", "train.seed=9223372036854775808 is invalid"),
    ("search.seed=-3", "search.seed=-3 is invalid"),
    ("data.synthetic_seed=4294967296", "data.synthetic_seed=4294967296 is invalid"),
    ("model.num_hypotheses=100000", "model.num_hypotheses=100000 is invalid: expected 1 <= K <= 128"),
    ("model.image_size=65536", "model.image_size=65536 is invalid: expected a multiple of 32 from 32 to 1024"),
    ("data.synthetic_size=100000", "data.synthetic_size=100000 is invalid: expected from 32 to 1024"),
    ("search.experiment=", "search.experiment='' is invalid: expected a folder name"),
    ("search.experiment=../..", "search.experiment='../..' is invalid"),
    ("search.experiment=/tmp/x", "search.experiment='/tmp/x' is invalid"),
    ("search.experiment=a/b", "search.experiment='a/b' is invalid"),
    ("search.experiment=..", "search.experiment='..' is invalid"),
])
def test_values_that_crashed_later_are_refused_naming_the_key(override: str, message: str) -> None:
    assert message in _error("cpu", [override])


def test_the_bounds_themselves_are_accepted() -> None:
    cfg = load_config("cpu", ["model.num_hypotheses=128", "selection.top_n=2", "model.image_size=1024",
                              "train.seed=4294967295", "search.experiment=demo-2.v_1"])
    assert (cfg.model.num_hypotheses, cfg.model.image_size, cfg.train.seed) == (128, 1024, 2**32 - 1)


def test_a_string_override_is_taken_as_written_not_as_yaml() -> None:
    cfg = load_config("cpu", ["data.root=ds #2", "train.out_dir= 'runs/a b' ", "search.space=x: y",
                              "model.num_hypotheses=6 # a comment"])
    assert (cfg.data.root, cfg.train.out_dir, cfg.search.space) == ("ds #2", "runs/a b", "x: y")
    assert cfg.model.num_hypotheses == 6  # non-string keys are still YAML


def _bomb(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghijk"
    for prev, name in zip(names[:levels - 1], names[1:levels], strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_file_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    start = time.perf_counter()
    message = _error(path)
    assert time.perf_counter() - start < 2
    assert f"{path}: expands to more than 100000 values" in message and len(message) < 300


def test_an_error_repeats_at_most_a_short_part_of_a_huge_value(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("model:\n  num_hypotheses: [" + ", ".join(["1234567890"] * 5000) + "]\n")
    message = _error(path)
    assert "model.num_hypotheses: expected an integer, got [1234567890, " in message and len(message) < 300
    message = _error("cpu", ["model.backbone=" + "x" * 100_000])
    assert "model.backbone='xxx" in message and len(message) < 400


@pytest.mark.parametrize(("text", "message"), [
    ("model:\n  1: 2\n", "key 1 under model is of type int; keys must be names (strings)"),
    ("model: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 16 levels"),
    ("model: " + "[" * 30 + "]" * 30 + "\n", "nested deeper than 16 levels (at model[0]"),
    ("model: &a [*a]\n", "nested deeper than 16 levels"),
    ("model: {backbone: resnet18\n", "not valid YAML: expected ',' or '}', but got '<stream end>' (line 2, column 1)"),
])
def test_malformed_files_are_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert f"{path}: {message}" in _error(path)


def test_a_non_utf8_or_huge_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes('data:\n  root: "caf\xe9"\n'.encode("latin-1"))
    assert f"{path}: not UTF-8 text (byte 18" in _error(path)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    assert f"{big}: larger than 1024 KiB" in _error(big)


def test_override_values_get_the_same_checks() -> None:
    assert "nested deeper than 16 levels" in _error("cpu", ["optim.milestones=" + "[" * 40 + "]" * 40])
    assert "key 1 under the top is of type int" in _error("cpu", ["optim.milestones={1: 2}"])


def test_the_shared_reader_serves_other_yaml_files(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("parameters:\n  optim.lr: {type: float, low: 1.0e-5, high: 1.0e-3}\n")
    assert read_yaml_file(path)["parameters"]["optim.lr"]["high"] == 1e-3
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_yaml_file(path)


def test_preset_names_come_from_the_presets_folder() -> None:
    presets = Path(__file__).parents[2] / "hmh" / "config" / "presets"
    assert preset_names() == sorted(p.stem for p in presets.glob("*.yaml"))
    assert {"bench", "cpu", "paper"} <= set(preset_names())
