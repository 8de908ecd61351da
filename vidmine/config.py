"""Configuration as dataclasses: defaults in code, a TOML file on top, CLI flags on top of that.

Every package owns a dataclass of its settings. One TOML file holds them all, one table per
package (``[storage]``, ``[mining]``, ...). :func:`add_config_args` turns the fields of a
dataclass into ``--field-name`` flags, and :func:`build_config` merges the three layers.

:func:`validate` refuses nonsense where a config is built (each config's ``__post_init__``
calls it): every number must be finite, integers whole, and numbers at least 0 unless the
field's metadata says otherwise with ``above`` / ``min`` / ``max`` / ``below``; a field with
``choices`` takes one of them. The error names the setting, so a flag and a TOML key fail
with the same one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def _field_type(cls: type, field: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    tp = hints[field.name]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X] -> X
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else str
    return tp


def _coerce(value: Any, tp: Any, name: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("1", "true", "yes", "on")
            return bool(value)
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if tp in (float, str):
            return tp(value)
        if origin in (list, tuple):
            (inner, *_) = typing.get_args(tp) or (str,)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            out = [_coerce(v, inner, name) for v in value]
            return tuple(out) if origin is tuple else out
        if origin is dict or tp is dict:
            return dict(value)
    except (TypeError, ValueError, OverflowError) as exc:
        kind = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"setting {name}={value!r} is not a valid {kind}") from exc
    return value


def _number_problem(value: float, meta: Any) -> str | None:
    if not math.isfinite(value):
        return "must be a finite number"
    if "above" in meta and not value > meta["above"]:
        return f"must be above {meta['above']}"
    if not value >= meta.get("min", 0):
        return f"must be at least {meta.get('min', 0)}"
    if "max" in meta and not value <= meta["max"]:
        return f"must be at most {meta['max']}"
    if "below" in meta and not value < meta["below"]:
        return f"must be below {meta['below']}"
    return None


def validate(cfg: Any) -> None:
    """Raise ConfigError naming the first setting of dataclass ``cfg`` that is out of range."""
    for f in dataclasses.fields(cfg):
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            problem = None
            if "choices" in meta and v not in meta["choices"]:
                problem = f"choose one of {', '.join(map(str, meta['choices']))}"
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                problem = _number_problem(v, meta)
            if problem:
                raise ConfigError(f"setting {f.name}={v!r}: {problem}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a clear message."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {sorted(unknown)} in {where or cls.__name__}; "
            f"known: {sorted(fields)}"
        )
    kwargs = {k: None if _is_auto(cls, fields[k], v) else _coerce(v, _field_type(cls, fields[k]), k)
              for k, v in data.items()}
    return cls(**kwargs)


def _is_auto(cls: type, field: dataclasses.Field, value: Any) -> bool:
    """'auto' sets an optional setting to None, which its owner resolves (a flag or a TOML
    file cannot say None)."""
    tp = typing.get_type_hints(cls)[field.name]
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) \
        and type(None) in typing.get_args(tp)
    return optional and isinstance(value, str) and value.strip().lower() == "auto"


def load_toml(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--field-name`` flag per dataclass field; default None means 'not given'."""
    group = parser.add_argument_group(f"{cls.__name__} settings (also settable in the TOML file)")
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        tp = _field_type(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        flag = "--" + f.name.replace("_", "-")
        help_text = (f.metadata.get("help", "") + f" (default: {default!r})").strip()
        if tp is bool:
            group.add_argument(flag, dest=f.name, default=None,
                               action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                               help=help_text)


def build_config(cls: type[T], args: argparse.Namespace | None = None,
                 toml: dict[str, Any] | None = None, section: str | None = None) -> T:
    """Defaults <- TOML table ``section`` <- flags that were given on the command line."""
    data: dict[str, Any] = dict((toml or {}).get(section, {})) if section else dict(toml or {})
    if args is not None:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        for name in names:
            value = getattr(args, name, None)
            if value is not None:
                data[name] = value
    return from_dict(cls, data, where=f"[{section}]" if section else "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (stored with each run for provenance)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
