"""Typed configuration: one dataclass per concern (:mod:`hmh.config_schema`), loaded from YAML with dotted
``key=value`` overrides.

``load_config("cpu", ["model.num_hypotheses=8"])`` reads the packaged preset ``cpu`` (or a YAML path), applies
the overrides, checks every type and value, and returns a :class:`Config`. A YAML file may name a ``base:``
(a preset name or a path relative to the file) whose values it then overrides. Unknown keys, wrong types and
invalid values raise :class:`ConfigError` naming the dotted key and the value.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from hmh import atomic
from hmh.config_schema import (
    BACKBONES,
    DEVICE,
    DEVICES,
    KEEP,
    PICKS,
    PRECISIONS,
    SEARCH_OBJECTIVES,
    SYNTHETIC_PROFILES,
    WINNERS,
    Config,
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SearchConfig,
    SelectionConfig,
    TrainConfig,
    parse_pick,
    validate,
)

__all__ = [
    "BACKBONES", "DEVICE", "DEVICES", "KEEP", "PICKS", "PRECISIONS", "PRESET_DIR", "SEARCH_OBJECTIVES",
    "SYNTHETIC_PROFILES", "WINNERS", "Config", "ConfigError", "DataConfig", "LossConfig", "ModelConfig", "OptimConfig",
    "SearchConfig", "SelectionConfig", "TrainConfig", "field_types", "flatten", "from_dict", "load_config",
    "parse_override", "parse_pick", "save_config", "to_dict", "to_yaml", "validate",
]

PRESET_DIR = Path(__file__).parent / "presets"

def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


# Numbers that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot ("1e-4", "3E-5"), and infinity or
# NaN spelt other than ".inf"/".nan" ("inf", "-Infinity", "nan"), read as numbers so validate() calls them invalid.
_YAML11_MISSED_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")
_YAML11_MISSED_NON_FINITE = re.compile(r"[-+]?\.?(inf|infinity|nan)", re.IGNORECASE)


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` when lossless (int -> float), else raise naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in config fields")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_MISSED_FLOAT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, str) and _YAML11_MISSED_NON_FINITE.fullmatch(value.strip()):
            return float(value.strip().replace(".", ""))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown key {key!r} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        kwargs[name] = _from_dict(tp, value, key) if _is_dataclass_type(tp) else _check_type(key, value, tp)
    return cls(**kwargs)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    text = str(name_or_path)
    preset = PRESET_DIR / f"{text}.yaml"
    if "/" not in text and not text.endswith((".yaml", ".yml")) and preset.exists():
        return preset
    path = Path(text)
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    if not path.exists():
        presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise ConfigError(f"config {text!r} is neither an existing file nor a preset ({presets})")
    return path


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a config file and its ``base:`` chain into one nested dict."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a preset name or a path, got {base!r}")
    parent = _read_yaml(_resolve(base, path.parent), seen + (path.resolve(),))
    return _deep_merge(parent, data)


def parse_override(text: str) -> dict:
    """``"model.num_hypotheses=8"`` -> ``{"model": {"num_hypotheses": 8}}`` (the value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {err}") from err
    nested: dict = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _upgrade(data: dict) -> dict:
    """A config stored by an earlier hmh (a checkpoint's): ``train.amp`` (CUDA autocast on/off) is now
    ``train.precision`` (``bf16``/``fp32``)."""
    train = data.get("train") if isinstance(data, dict) else None
    if not isinstance(train, dict) or "amp" not in train or "precision" in train:
        return data
    train = {k: v for k, v in train.items() if k != "amp"} | {"precision": "bf16" if train["amp"] is True else "fp32"}
    return data | {"train": train}


def from_dict(data: dict, source: str = "") -> Config:
    """Build and validate a :class:`Config` from a nested dict (missing keys take their defaults; a stored config
    of an earlier hmh is upgraded first)."""
    try:
        return validate(_from_dict(Config, _upgrade(data), ""))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}" if source else str(err)) from None


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Load a preset name or YAML path (``None`` = defaults), apply ``key=value`` overrides, validate."""
    overrides = list(overrides)
    data: dict = {}
    source = ""
    if path is not None:
        resolved = _resolve(path)
        source = str(resolved)
        data = _read_yaml(resolved)
    try:
        base = _from_dict(Config, data, "")  # check the file alone first, so its errors name the file
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}" if source else str(err)) from None
    merged = to_dict(base)
    for text in overrides:
        merged = _deep_merge(merged, parse_override(text))
    return from_dict(merged, f"{source or 'defaults'} with overrides" if overrides else source)


def to_dict(config: Config) -> dict:
    """Nested plain dict (YAML- and JSON-safe)."""
    return dataclasses.asdict(config)


def flatten(config: Config) -> dict[str, Any]:
    """``{"model.num_hypotheses": 4, ...}``: one dotted key per leaf (lists kept as lists)."""
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, dotted + ".")
            else:
                out[dotted] = value

    walk(to_dict(config), "")
    return out


def field_types() -> dict[str, Any]:
    """``{"model.num_hypotheses": int, ...}``: every leaf of :class:`Config` with its annotated type."""
    out: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if _is_dataclass_type(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = tp

    walk(Config, "")
    return out


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as YAML atomically."""
    atomic.write_text(path, to_yaml(config))
