"""Command-line flags generated from a config dataclass, and the argparse rules both console
scripts (``mlm-data`` and ``mlm-train``) share.

Every leaf field of a config gets one flag named after its dotted path (``instances.max_seq_length``
→ ``--instances.max-seq-length``; a CLI may drop the top-level section, ``train.max_steps`` →
``--max-steps``, or give a field a short name, ``output.path`` → ``--output``). The help text is
the field's docstring, the value is read as YAML and then checked by ``loading.load`` like a
value in a file, so a bad flag value is reported with all other problems at once. A usage
error (an unknown flag, a missing value) is one line, ``PROG error: ...``, with a "did you
mean" where one is close, and exit status 2.

Why not ``jsonargparse`` or ``tyro``: both were tried against these configs. Each stops at the
first problem and neither names the YAML file; jsonargparse prints the whole usage (50 lines)
before its error, has no "did you mean" for a mistyped key and accepts abbreviations by
default; tyro has a "did you mean" for flags but in a nine-line box, reads no config files and
lets a ``__post_init__`` error escape as a traceback. The loader here lists every problem with
the file, the dotted field and a suggestion, which is the message a user can act on.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Union

from mlm_data.config.loading import parse_yaml_value


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house rules: no abbreviations (``--out`` must never silently mean
    ``--output``) and every usage error on one line, ``PROG error: ...``, exit status 2.
    Sub-command parsers made with ``add_subparsers().add_parser`` follow them too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        program = self.prog.split()[0]
        self.exit(2, f"{program} error: {message} (see `{self.prog} --help`)\n")

    def reject_unknown(self, unknown: Sequence[str], *vocabularies: Iterable[str]) -> None:
        """Exit with one line naming every unknown flag, each with the closest known flag:
        from ``vocabularies`` in order (a CLI's own flags before the ones it passes on), this
        parser's own flags when none are given."""
        if unknown:
            self.error(unknown_arguments_message(unknown, *(vocabularies or (self.flags(),))))

    def flags(self) -> list[str]:
        return [s for action in self._actions for s in action.option_strings if s.startswith("--")]


def unknown_arguments_message(unknown: Sequence[str], *vocabularies: Iterable[str]) -> str:
    """``unknown flag --toknizer; did you mean --tokenizer?``: the flags in ``unknown`` (an
    argument after an unknown flag is taken for its value), or the stray arguments when there
    is no flag among them.

    >>> unknown_arguments_message(["--toknizer", "tok.json"], ["--tokenizer", "--output"])
    'unknown flag --toknizer; did you mean --tokenizer?'
    """
    vocabularies = tuple(list(v) for v in vocabularies)
    flags = [u for u in unknown if u.startswith("-")]
    if not flags:
        return f"unexpected argument{'s' if len(unknown) > 1 else ''} {' '.join(unknown)}"
    named = []
    for flag in flags:
        name = flag.split("=", 1)[0]
        close = next((m[0] for known in vocabularies if (m := difflib.get_close_matches(name, known, n=1))), None)
        named.append((name, close))
    if len(named) == 1:
        name, close = named[0]
        return f"unknown flag {name}" + (f"; did you mean {close}?" if close else "")
    return "unknown flags " + ", ".join(f"{n} (did you mean {c}?)" if c else n for n, c in named)


@dataclass(frozen=True)
class FieldFlag:
    """The flag of one config field."""

    flag: str
    """``--max-steps``."""
    path: str
    """``train.max_steps``: where the value goes in the config."""
    type: Any
    """The field's type hint; decides how the text after the flag is read."""
    help: str
    """The field's docstring."""
    metavar: str
    """What the value looks like: ``INT``, ``FLOAT``, ``{post,pre}``, ..."""

    @property
    def repeatable(self) -> bool:
        """A list of text (paths, datasets): ``--input a b --input c`` gives all three."""
        return self.type == tuple[str, ...]

    def parse(self, raw: str | list[str]) -> Any:
        """The value for the config: text for text fields, YAML for the rest (``5e-4``,
        ``[0.9, 0.98]``, ``null``); a choice may be spelled with dashes (``causal-lm``)."""
        if isinstance(raw, list):
            return list(raw)
        args = _non_null(self.type)
        if len(args) == 1 and args[0] is str:
            return None if raw == "null" and _nullable(self.type) else raw
        value = parse_yaml_value(raw)
        choices = [a for arg in args if typing.get_origin(arg) is Literal for a in typing.get_args(arg)]
        if isinstance(value, str) and value not in choices and value.replace("-", "_") in choices:
            return value.replace("-", "_")
        return value


def field_flags(cls: type, *, drop_section: bool = False, names: Mapping[str, str] | None = None,
                metavars: Mapping[str, str] | None = None) -> list[FieldFlag]:
    """One flag per leaf field of ``cls``: ``--`` and the dotted path with dashes for
    underscores, without its top-level section when ``drop_section`` (``train.max_steps`` →
    ``--max-steps``, ``data.masking.whole_word`` → ``--masking.whole-word``); ``names`` gives
    fields a name of their own (``{"output.path": "--output"}``). The names are checked unique,
    so a new field that would shadow another fails here instead of setting the wrong one."""
    names, metavars = names or {}, metavars or {}
    flags: list[FieldFlag] = []

    def walk(tp: type, prefix: tuple[str, ...]) -> None:
        docs = field_docs(tp)
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            path = (*prefix, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], path)
                continue
            dotted = ".".join(path)
            shown = path[1:] if drop_section and len(path) > 1 else path
            flag = names.get(dotted) or "--" + ".".join(shown).replace("_", "-")
            tp = hints[f.name]
            metavar = metavars.get(dotted) or ("TEXT" if tp == tuple[str, ...] else _metavar(tp))
            flags.append(FieldFlag(flag, dotted, tp, docs.get(f.name, ""), metavar))

    walk(cls, ())
    seen: dict[str, str] = {}
    for fl in flags:
        if fl.flag in seen:
            raise RuntimeError(f"config fields {seen[fl.flag]} and {fl.path} would share the flag {fl.flag}")
        seen[fl.flag] = fl.path
    return flags


def add_field_flags(parser: argparse.ArgumentParser, flags: Sequence[FieldFlag], *,
                    sections: Mapping[str, str]) -> None:
    """Add ``flags`` to ``parser``, one help group per top-level section (titled by
    ``sections``, in its order). A flag left out stays ``None`` in the parsed arguments."""
    groups = {name: parser.add_argument_group(title) for name, title in sections.items()}
    for f in flags:
        kwargs: dict[str, Any] = {"dest": _dest(f), "default": None, "metavar": f.metavar,
                                  "help": f.help.replace("%", "%%")}  # argparse %-formats help texts
        if f.type is bool:
            kwargs.update(nargs="?", const="true")
        elif f.repeatable:
            kwargs.update(nargs="+", action="extend")
        section = f.path.split(".")[0]
        groups.get(section, parser).add_argument(f.flag, **kwargs)


def given_fields(args: argparse.Namespace, flags: Sequence[FieldFlag]) -> list[tuple[str, Any]]:
    """``(path, value)`` for each field flag given on the command line, for ``loading.load``."""
    given = ((f, getattr(args, _dest(f), None)) for f in flags)
    return [(f.path, f.parse(raw)) for f, raw in given if raw is not None]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass and its bases (the house convention: a
    string literal on the line after the field), read once from the source.

    Python keeps no attribute docstrings at run time, so the class source is parsed; without
    source (a build that ships only bytecode) help texts are empty and the CLI still works.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _dest(f: FieldFlag) -> str:
    return f"field:{f.path}"


def _non_null(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _nullable(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def _metavar(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if tp is bool:
        return "true|false"
    if tp in (int, float, str):
        return {"int": "INT", "float": "FLOAT", "str": "TEXT"}[tp.__name__]
    if typing.get_origin(tp) is tuple:
        return "[" + ",".join(_metavar(a) for a in args if a is not Ellipsis) + (",..." if Ellipsis in args else "") + "]"
    if typing.get_origin(tp) is dict or tp is dict:
        return "{KEY:VALUE,...}"
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return "VALUE"
    named = [_metavar(a) for a in _non_null(tp)]
    return (named[0] + "|null") if len(named) == 1 else "VALUE"

