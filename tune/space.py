"""Search spaces as YAML a user edits without touching code, checked before Ray starts.

A space file maps dotted config keys to distributions::

    parameters:
      model.num_hypotheses: {type: categorical, values: [2, 4, 8]}
      selection.top_n: {type: int, low: 1, high: model.num_hypotheses}   # 1 <= top_n <= K
      loss.jrc_alpha: {type: float, low: 0.0, high: 1.0}
      optim.lr: {type: loguniform, low: 1.0e-5, high: 1.0e-3}
    initial_points:                     # optional: tried first, in order (Optuna's enqueue_trial)
      - {model.num_hypotheses: 4, selection.top_n: 2}

Types: ``int`` (``low``, ``high`` inclusive, optional ``step``, ``log``), ``float`` (``low``, ``high``, optional
``step``), ``loguniform`` (``low > 0``, ``high``; sampled on a log scale), ``categorical`` (``values``). A bound may
name another numeric config key instead of a number: its value in the same trial (when that key is searched
earlier in the file) or in the experiment config. That is how ``top_n <= K`` stays true while both are searched.

:func:`load_space` checks the file against a base :class:`~hmh.config.Config`: known keys, types that fit the
config field, ordered bounds, and that the corner configurations (every parameter at each of its extremes) and
the initial points pass :func:`hmh.config.from_dict`. Errors are :class:`SpaceError` naming the file and the key.
:class:`DefineByRun` turns a space into Optuna's define-by-run function for ``OptunaSearch``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hmh.config import Config, ConfigError, deep_merge, field_types, flatten, from_dict, read_yaml_file, to_dict
from hmh.errors import HmhError

__all__ = ["DefineByRun", "Param", "SearchSpace", "SpaceError", "apply_params", "config_field_types",
           "default_space_path", "load_space"]

SPACES_DIR = Path(__file__).parent / "spaces"
KINDS = ("int", "float", "loguniform", "categorical")
SPEC_KEYS = {"int": {"low", "high", "step", "log"}, "float": {"low", "high", "step"},
             "loguniform": {"low", "high"}, "categorical": {"values"}}
# The search itself, paths, and the epoch budget (ASHA's time axis) are set in the experiment config.
NOT_SEARCHABLE = ("search.", "data.root", "train.out_dir", "train.device", "train.generation_epochs",
                  "train.selection_epochs")
Bound = int | float | str


class SpaceError(HmhError, ValueError):
    """An invalid search space: the message names the space file and the key."""


def default_space_path() -> Path:
    return SPACES_DIR / "default.yaml"


def config_field_types() -> dict[str, Any]:
    """``{"model.num_hypotheses": int, ...}``: every leaf of :class:`Config` with its annotated type."""
    return field_types()


def _nested(flat: dict[str, Any]) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def apply_params(base: Config | dict, params: dict[str, Any]) -> Config:
    """``base`` with the dotted ``params`` set, validated (:class:`~hmh.config.ConfigError` names the key)."""
    data = to_dict(base) if isinstance(base, Config) else base
    return from_dict(deep_merge(data, _nested(params)))


@dataclass(frozen=True)
class Param:
    """One searched config key. ``low``/``high`` are numbers or the dotted key of another numeric value."""

    key: str
    kind: str
    low: Bound | None = None
    high: Bound | None = None
    step: int | float | None = None
    log: bool = False
    values: tuple = ()

    def suggest(self, trial: Any, low: float, high: float) -> Any:
        """Ask an Optuna trial for this parameter with the bounds resolved for this trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(low), int(high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(low), float(high), step=self.step,
                                   log=self.kind == "loguniform")


@dataclass(frozen=True)
class SearchSpace:
    """A validated space: parameters in file order, initial points, the source file and the experiment's base
    values of every numeric key a bound may refer to."""

    params: tuple[Param, ...]
    initial_points: tuple[dict, ...] = ()
    source: str = ""
    base_values: tuple[tuple[str, Any], ...] = ()

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def bounds(self, param: Param, chosen: dict[str, Any]) -> tuple[float, float]:
        """``(low, high)`` of ``param`` given the values ``chosen`` so far in this trial."""
        base = dict(self.base_values)

        def value(bound: Bound | None) -> float:
            if isinstance(bound, str):
                return chosen[bound] if bound in chosen else base[bound]
            return bound  # type: ignore[return-value]

        return value(param.low), value(param.high)

    def to_yaml(self) -> str:
        """The space as YAML (what :func:`load_space` reads)."""
        params = {}
        for p in self.params:
            spec: dict[str, Any] = {"type": p.kind}
            if p.kind == "categorical":
                spec["values"] = list(p.values)
            else:
                spec.update(low=p.low, high=p.high)
                if p.step is not None:
                    spec["step"] = p.step
                if p.log:
                    spec["log"] = True
            params[p.key] = spec
        data: dict[str, Any] = {"parameters": params}
        if self.initial_points:
            data["initial_points"] = [dict(point) for point in self.initial_points]
        return yaml.safe_dump(data, sort_keys=False)


class DefineByRun:
    """Optuna define-by-run function for ``OptunaSearch(space=...)``: suggests every parameter in file order,
    resolving bounds that name an earlier parameter from this trial's values (a picklable class, so Tune can save
    and restore the searcher)."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for param in self.space.params:
            low, high = self.space.bounds(param, chosen)
            chosen[param.key] = param.suggest(trial, low, high)


def _number(text: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string: accept such strings as numbers."""
    if isinstance(text, str):
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _parse_bound(where: str, name: str, raw: Any, kind: str, types: dict[str, Any]) -> Bound:
    raw = _number(raw)
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise SpaceError(f"{where}: '{name}' must be a number or a numeric config key, got {raw!r}")
    if isinstance(raw, str):
        if types.get(raw) not in (int, float):
            raise SpaceError(f"{where}: '{name}' = {raw!r} is neither a number nor a numeric config key")
        return raw
    if kind == "int":
        if not float(raw).is_integer():
            raise SpaceError(f"{where}: '{name}' must be an integer for type int, got {raw!r}")
        return int(raw)
    if not math.isfinite(float(raw)):
        raise SpaceError(f"{where}: '{name}' must be finite, got {raw!r}")
    return float(raw)


def _parse_param(where: str, key: str, spec: Any, types: dict[str, Any]) -> Param:
    if key not in types:
        raise SpaceError(f"{where}: unknown config key {key!r}")
    if key.startswith(NOT_SEARCHABLE):
        raise SpaceError(f"{where}: {key!r} cannot be searched (set it in the experiment config)")
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected a mapping with 'type', got {spec!r}")
    kind = spec.get("type")
    if kind not in KINDS:
        raise SpaceError(f"{where}: 'type' must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(set(spec) - SPEC_KEYS[kind] - {"type"})
    if unknown:
        raise SpaceError(f"{where}: unknown field {unknown[0]!r} for type {kind} "
                         f"(allowed: {', '.join(sorted(SPEC_KEYS[kind]))})")
    field_type = types[key]
    if typing.get_origin(field_type) is list:
        raise SpaceError(f"{where}: list-valued keys cannot be searched")
    allowed = {int: ("int", "categorical"), float: ("float", "loguniform", "categorical")}.get(field_type,
                                                                                            ("categorical",))
    if kind not in allowed:
        raise SpaceError(f"{where}: the config key is of type {field_type.__name__}: use type "
                         f"{' or '.join(allowed)}, not {kind}")
    if kind == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: 'values' must be a non-empty list, got {values!r}")
        if len({repr(v) for v in values}) != len(values):
            raise SpaceError(f"{where}: 'values' has duplicates: {values!r}")
        return Param(key, kind, values=tuple(_number(v) if field_type in (int, float) else v for v in values))
    for name in ("low", "high"):
        if name not in spec:
            raise SpaceError(f"{where}: type {kind} needs '{name}'")
    low = _parse_bound(where, "low", spec["low"], kind, types)
    high = _parse_bound(where, "high", spec["high"], kind, types)
    step = _number(spec.get("step"))
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < math.inf
                             or (kind == "int" and not float(step).is_integer())):
        raise SpaceError(f"{where}: 'step' must be a positive {'integer' if kind == 'int' else 'number'}, "
                         f"got {step!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: 'log' must be true or false, got {log!r}")
    if log and step not in (None, 1):
        raise SpaceError(f"{where}: 'log' and 'step' cannot be combined")
    step = None if step is None else (int(step) if kind == "int" else float(step))
    return Param(key, kind, low, high, step, log)


def _read(path: Path) -> dict:
    """The space file's mapping, read by :func:`hmh.config.read_yaml_file` (size, UTF-8, YAML, depth, aliases)."""
    try:
        data = read_yaml_file(path)
    except ConfigError as err:
        raise SpaceError(str(err)) from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: expected a mapping with 'parameters', got {type(data).__name__}")
    return data


def _choices(space: SearchSpace, param: Param, chosen: dict[str, Any]) -> list[Any]:
    """The extremes of ``param`` given earlier choices: ``[low, high]`` or every categorical value."""
    if param.kind == "categorical":
        return list(param.values)
    low, high = space.bounds(param, chosen)
    if low > high:
        refs = ", ".join(f"{b}={chosen.get(b, dict(space.base_values).get(b))}" for b in (param.low, param.high)
                         if isinstance(b, str))
        raise SpaceError(f"{space.source}: parameter {param.key!r}: low {low} > high {high}"
                         + (f" when {refs}" if refs else ""))
    if param.kind == "loguniform" and low <= 0:
        raise SpaceError(f"{space.source}: parameter {param.key!r}: loguniform needs low > 0, got {low}")
    if param.log and low < 1:
        raise SpaceError(f"{space.source}: parameter {param.key!r}: an int on a log scale needs low >= 1, got {low}")
    return [low, high]


def _corners(space: SearchSpace) -> Iterator[dict[str, Any]]:
    """Assignments with every parameter at its low end, at its high end, and each parameter at each extreme
    with the others low; bounds that name earlier parameters resolved as a trial would."""
    plans: list[tuple[int, int]] = [(-1, 0), (-1, -1)]
    plans += [(i, j) for i, p in enumerate(space.params) for j in range(len(p.values) if p.values else 2)]
    for target, pick in plans:
        chosen: dict[str, Any] = {}
        for i, param in enumerate(space.params):
            options = _choices(space, param, chosen)
            chosen[param.key] = options[pick] if (i == target or target == -1) else options[0]
        yield chosen


def _check_point(space: SearchSpace, index: int, point: Any) -> dict:
    """An initial point as ``{key: value}``, each value inside its parameter's range for this point."""
    where = f"{space.source}: initial_points[{index}]"
    if not isinstance(point, dict):
        raise SpaceError(f"{where}: expected a mapping of parameter keys to values, got {point!r}")
    for key in point:
        if key not in space.keys:
            raise SpaceError(f"{where}: {key!r} is not a parameter of this space")
    chosen: dict[str, Any] = {}
    for param in space.params:
        if param.key not in point:
            continue
        value = point[param.key]
        if param.kind == "categorical":
            ok = value in param.values
        else:
            value = _number(value)
            refs = [b for b in (param.low, param.high) if isinstance(b, str) and b in space.keys and b not in point]
            if refs:
                raise SpaceError(f"{where}: sets {param.key!r} but not {refs[0]!r}, which bounds it")
            low, high = space.bounds(param, chosen)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        if not ok:
            raise SpaceError(f"{where}: {param.key}={point[param.key]!r} is outside the parameter's range")
        chosen[param.key] = value
    return chosen


def load_space(path: str | Path, base: Config) -> SearchSpace:
    """Read and validate a space file against the experiment config ``base`` (module docstring)."""
    path = Path(path)
    data = _read(path)
    unknown = sorted(set(data) - {"parameters", "initial_points"})
    if unknown:
        raise SpaceError(f"{path}: unknown top-level key {unknown[0]!r} (known: initial_points, parameters)")
    raw = data.get("parameters")
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{path}: 'parameters' must be a non-empty mapping of config keys to distributions")
    types = config_field_types()
    params = tuple(_parse_param(f"{path}: parameter {key!r}", key, spec, types) for key, spec in raw.items())
    order = {p.key: i for i, p in enumerate(params)}
    for i, param in enumerate(params):
        for bound in (param.low, param.high):
            if isinstance(bound, str) and order.get(bound, -1) >= i:
                raise SpaceError(f"{path}: parameter {param.key!r}: bound {bound!r} is searched after it (or is "
                                 "itself); list the referenced parameter first")
    flat = {k: v for k, v in flatten(base).items() if types[k] in (int, float)}
    space = SearchSpace(params, source=str(path), base_values=tuple(sorted(flat.items())))
    for corner in _corners(space):
        _check_config(space, base, corner, "with")
    points = data.get("initial_points") or []
    if not isinstance(points, list):
        raise SpaceError(f"{path}: 'initial_points' must be a list of mappings, got {points!r}")
    checked = tuple(_check_point(space, i, point) for i, point in enumerate(points))
    for i, point in enumerate(checked):
        _check_config(space, base, point, f"initial_points[{i}]:")
    return dataclasses.replace(space, initial_points=checked)


def _check_config(space: SearchSpace, base: Config, params: dict[str, Any], label: str) -> None:
    try:
        apply_params(base, params)
    except ConfigError as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise SpaceError(f"{space.source}: {err} ({label} {shown})") from None

