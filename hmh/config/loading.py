"""Typed configuration: one dataclass per concern (:mod:`hmh.config.schema`), loaded from YAML with dotted
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

from hmh.config.schema import (
    Config,
    ConfigError,
    shown,
    validate,
)
from hmh.files import atomic

PRESET_DIR = Path(__file__).parent / "presets"
MAX_YAML_BYTES = 1 << 20  # a config or search-space file larger than 1 MiB is refused unread
MAX_YAML_DEPTH = 16  # nesting levels of mappings and lists (a config has 3)
MAX_YAML_VALUES = 100_000  # values after expanding YAML aliases (&a / *a): refuses "billion laughs" files at once


def preset_names() -> list[str]:
    """The packaged presets (``hmh/config/presets/*.yaml``), sorted: ``["bench", "cpu", "paper"]``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


# Numbers that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot ("1e-4", "3E-5"), and infinity or
# NaN spelt other than ".inf"/".nan" ("inf", "-Infinity", "nan"), read as numbers so validate() calls them invalid.
_YAML11_MISSED_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")
_YAML11_MISSED_NON_FINITE = re.compile(r"[-+]?\.?(inf|infinity|nan)", re.IGNORECASE)


def _check_tree(node: Any, where: str) -> None:
    """Refuse a loaded YAML value nested deeper than :data:`MAX_YAML_DEPTH`, holding more than
    :data:`MAX_YAML_VALUES` values once its aliases are expanded, or with a mapping key that is not a string.
    Shared sub-trees (aliases) are counted once per use but walked once, so the check is fast on alias bombs."""
    sizes: dict[int, int] = {}

    def size(value: Any, depth: int, at: str) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{where}: nested deeper than {MAX_YAML_DEPTH} levels (at {at or 'the top'})")
        if id(value) in sizes:
            return sizes[id(value)]
        total = 1
        for key, child in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(value, list):
                total += size(child, depth + 1, f"{at}[{key}]")
            elif isinstance(key, str):
                total += size(child, depth + 1, f"{at}.{key}" if at else key)
            else:
                raise ConfigError(f"{where}: key {shown(key)} under {at or 'the top'} is of type "
                                  f"{type(key).__name__}; keys must be names (strings)")
            if total > MAX_YAML_VALUES:
                raise ConfigError(f"{where}: expands to more than {MAX_YAML_VALUES} values (YAML aliases?); "
                                  "not a config")
        sizes[id(value)] = total
        return total

    size(node, 0, "")


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error on one line, without the offending text it quotes: what is wrong and where."""
    mark = getattr(err, "problem_mark", None)
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        return f"{err.problem}" + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")
    detail = " ".join(str(err).split())
    return detail[:200] + ("..." if len(detail) > 200 else "")


def safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` checked by :func:`_check_tree`; errors are :class:`ConfigError`, one line naming
    ``where`` (a file, or an override)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(err)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested deeper than {MAX_YAML_DEPTH} levels") from None
    _check_tree(data, where)
    return data


def read_yaml_file(path: Path) -> Any:
    """The YAML of a config or search-space file, read safely: at most :data:`MAX_YAML_BYTES`, UTF-8, and
    :func:`safe_yaml`'s checks; every failure is one :class:`ConfigError` line naming ``path``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES // 1024} KiB; not a config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r})") from None
    return safe_yaml(text, str(path))


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` when lossless (int -> float), else raise naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {shown(value)}")
        return [_check_type(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in config fields")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_MISSED_FLOAT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, str) and _YAML11_MISSED_NON_FINITE.fullmatch(value.strip()):
            return float(value.strip().replace(".", ""))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {shown(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {shown(value)}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        key = shown(f"{prefix}.{unknown[0]}" if prefix else unknown[0])[1:-1]
        raise ConfigError(f"unknown key '{key}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        kwargs[name] = _from_dict(tp, value, key) if _is_dataclass_type(tp) else _check_type(key, value, tp)
    return cls(**kwargs)


def deep_merge(base: dict, top: dict) -> dict:
    """``base`` with ``top``'s values set, nested dicts merged key by key (neither input changes)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
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
        presets = ", ".join(preset_names())
        raise ConfigError(f"config {text!r} is neither an existing file nor a preset ({presets})")
    return path


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a config file and its ``base:`` chain into one nested dict."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    data = read_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a preset name or a path, got {shown(base)}")
    parent = _read_yaml(_resolve(base, path.parent), seen + (path.resolve(),))
    return deep_merge(parent, data)


def _override_value(key: str, raw: str, where: str) -> Any:
    """An override's value: for a string key (``data.root``, ``train.device`` ...) the text itself, surrounding
    spaces and one pair of matching quotes removed (so ``data.root=ds #2`` is ``"ds #2"``, not ``"ds"`` and a
    YAML comment); for any other key the text parsed as YAML (``8``, ``1e-4``, ``[10, 13]``, ``true``)."""
    text = raw.strip()
    if field_types().get(key) is str:
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
        return text[1:-1] if quoted else text
    return safe_yaml(text, where) if text else ""


def parse_override(text: str) -> dict:
    """``"model.num_hypotheses=8"`` -> ``{"model": {"num_hypotheses": 8}}`` (the value as
    :func:`_override_value` reads it)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {shown(text)}: expected dotted.key=value")
    value = _override_value(key, raw, f"override {shown(text)}")
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
        merged = deep_merge(merged, parse_override(text))
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
