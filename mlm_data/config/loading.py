"""Build frozen dataclass configs from YAML with every mistake reported at once.

``load(cls, path, base=..., settings=...)`` is the one way both console scripts (and tests)
build a config: layers of plain data (a base such as a resumed run's config, the YAML file,
the command line's ``section.field=value`` settings) are merged, each replacing only what it
names, and the result is converted field by field against the dataclass type hints. Unknown
keys, wrong types and values that ``__post_init__`` rejects are all collected and raised as
one ``ConfigError`` that names the file, the dotted field path, what was found and what is
accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

import yaml

from mlm_data.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping from a local path or fsspec URL."""
    from mlm_data import storage

    try:
        with storage.open_url(path, "r", encoding="utf-8") as f:
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


def parse_setting(item: str, *, source: str = "--set") -> tuple[str, Any]:
    """``"train.lr=5e-4"`` → ``("train.lr", "5e-4")``, ``"a.b=[1, 2]"`` → ``("a.b", [1, 2])``: the
    value is read as YAML; converting it to the field's type (``"5e-4"`` to a float) is
    ``from_dict``'s job, like for a value in a file."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{source}: override {item!r} is not of the form section.field=value")
    return key.strip(), parse_yaml_value(raw)


def parse_yaml_value(raw: str) -> Any:
    """A command-line value read as YAML (numbers, booleans, null, lists); text that is not
    valid YAML stays text."""
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def load(
    cls: type[T],
    path: str | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
) -> T:
    """Build a ``cls`` config from layers, each replacing only the fields it names.

    Lowest first: the dataclass defaults, ``base`` (a resumed run's config, or a command's own
    defaults), the YAML file at ``path``, then ``settings`` (``("train.lr", 5e-4)`` pairs from
    ``--set`` and the field flags: the command line always beats the file). Every problem of
    every layer is reported at once, naming the file and the dotted field.

    Two fields that say one thing two ways (``ALTERNATIVES`` of a section, e.g. ``max_steps``
    or ``epochs``) follow the layers too: the highest layer that names either decides, so
    ``--max-steps 30`` over a file with ``epochs: 3`` trains 30 steps; one layer giving both
    is refused.
    """
    where = path or "configuration"
    named = [("base config", dict(base or {})), (where, load_yaml(path) if path else {}),
             ("the command line", _nest(settings.items() if isinstance(settings, Mapping) else settings))]
    errors: list[str] = []
    layers = [(name, _expand_shorthands(cls, data, "", errors)) for name, data in named]
    merged: dict[str, Any] = {}
    for _, layer in layers:
        _merge(merged, layer)
    _settle_alternatives(cls, merged, layers, "")
    return from_dict(cls, merged, source=where, errors=errors)


def _nest(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        set_path(out, key, value)
    return out


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = _deep_copy(value)


def _sections(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that are config sections themselves, by name."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _expand_shorthands(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    """Rewrite a section written in a short form into its fields, in one layer, before the
    layers are merged: a section class may define ``expand_shorthand(value, path, errors)``
    (``data: [a, b]`` for ``data: {sources: [a, b]}``)."""
    expand = getattr(cls, "expand_shorthand", None)
    if expand is not None:
        data = expand(data, path, errors)
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, section in _sections(cls).items():
        if name in out:
            out[name] = _expand_shorthands(section, out[name], f"{path}{name}.", errors)
    return out


def _settle_alternatives(cls: type, merged: dict[str, Any], layers: list[tuple[str, Any]], path: str) -> None:
    """Keep, of each pair in ``cls.ALTERNATIVES``, the one named by the highest layer; refuse a
    layer that gives both. A null (or 0) value does not count as giving a field: it is how a
    file says "not this one" (``warmup_steps: 0`` next to ``warmup_fraction: 0.1``)."""
    conflicts = []
    for first, second in getattr(cls, "ALTERNATIVES", ()):
        for name, layer in reversed(layers):
            section = _section_of(layer, path)
            if first not in section and second not in section:
                continue
            gives = [f for f in (first, second) if section.get(f) not in (None, 0)]
            if len(gives) == 2:
                conflicts.append(f"{name} gives both {path}{first} and {path}{second}, two ways to say the same "
                                 "thing; keep one")
            elif second in gives:
                merged.pop(first, None)
            elif first in section:
                merged.pop(second, None)
            break
    if conflicts:
        raise ConfigError("; ".join(conflicts))
    for name, section in _sections(cls).items():
        if isinstance(merged.get(name), dict):
            _settle_alternatives(section, merged[name], layers, f"{path}{name}.")


def _section_of(layer: Any, path: str) -> dict[str, Any]:
    for part in path.split(".")[:-1]:
        layer = layer.get(part) if isinstance(layer, dict) else None
    return layer if isinstance(layer, dict) else {}


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


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, source: str, errors: list[str] | None = None) -> T:
    """Convert ``data`` into ``cls``, raising one ``ConfigError`` that lists every problem
    (``errors``: problems already found in the same data, reported with these)."""
    errors = [] if errors is None else errors
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
