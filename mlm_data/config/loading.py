"""Build frozen dataclass configs from YAML with every mistake reported at once.

A config file is read, command-line overrides (``section.field=value``) are applied, and the
result is converted field by field against the dataclass type hints. Unknown keys, wrong types
and values that ``__post_init__`` rejects are all collected and raised as one ``ConfigError``
that names the file, the dotted field path, what was found and what is accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

import yaml

from mlm_data.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping from a local path or fsspec URL."""
    import fsspec

    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: config file is not UTF-8 text ({e.reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, found {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], *, source: str = "--set") -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied (values parsed as YAML)."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: override {item!r} is not of the form section.field=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        set_path(out, key.strip(), value)
    return out


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``dotted == 'a.b.c'``, creating sections as needed."""
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, source: str) -> T:
    """Convert ``data`` into ``cls``, raising one ``ConfigError`` that lists every problem."""
    errors: list[str] = []
    result = _convert(cls, {} if data is None else data, "", errors)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"{source}: invalid configuration:\n{lines}")
    return result


def to_dict(cfg: Any) -> Any:
    """The plain-data form of a config (for manifests, checkpoints and run folders)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (list, tuple, Sequence):
        args = typing.get_args(tp)
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


_MISSING = object()


def _convert(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    where = path or "(top level)"
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            errors.append(f"{where}: expected a mapping, found {value!r}")
            return _MISSING
        hints = typing.get_type_hints(tp)
        n_errors_before = len(errors)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        kwargs: dict[str, Any] = {}
        for key, sub in value.items():
            sub_path = f"{path}.{key}" if path else str(key)
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(fields))}"
                errors.append(f"{sub_path}: unknown key{hint}")
                continue
            converted = _convert(hints[key], sub, sub_path, errors)
            if converted is not _MISSING:
                kwargs[key] = converted
        missing = [
            n for n, f in fields.items()
            if n not in kwargs and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        ]
        for n in missing:
            errors.append(f"{(path + '.') if path else ''}{n}: required field is missing")
        if len(errors) > n_errors_before:
            return _MISSING
        try:
            return tp(**kwargs)
        except ConfigError as e:
            msg = str(e).removeprefix("mlm-data error: ")
            for line in msg.splitlines():
                line = line.strip().removeprefix("- ")
                if line:
                    errors.append(f"{path + '.' if path else ''}{line}")
            return _MISSING
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        errors.append(f"{where}: {value!r} is not allowed; expected {_describe(tp)}")
        return _MISSING
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = _convert(arg, value, path, trial)
            if not trial:
                return out
        errors.append(f"{where}: {value!r} is not {_describe(tp)}")
        return _MISSING
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            errors.append(f"{where}: expected {_describe(tp)}, found {value!r}")
            return _MISSING
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            errors.append(f"{where}: expected a mapping, found {value!r}")
            return _MISSING
        args = typing.get_args(tp)
        if args:
            return {k: _convert(args[1], v, f"{path}.{k}", errors) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        errors.append(f"{where}: expected true or false, found {value!r}")
        return _MISSING
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        errors.append(f"{where}: expected an integer, found {value!r}")
        return _MISSING
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads 5e-4 and 1e-3 (no dot) as text
                return float(value)
            except ValueError:
                pass
        errors.append(f"{where}: expected a number, found {value!r}")
        return _MISSING
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        errors.append(f"{where}: expected a string, found {value!r}")
        return _MISSING
    errors.append(f"{where}: unsupported config type {tp!r}")
    return _MISSING


def check(errors: list[str]) -> None:
    """Raise the collected ``__post_init__`` problems of one config section, if any."""
    if errors:
        raise ConfigError("\n".join(errors))
