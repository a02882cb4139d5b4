"""Input files: expand patterns into named files, and tell their format from their names.

``list_input_files`` turns patterns into files with *names* relative to the pattern, so that
record ids (``"sub/b.jsonl#17"``) are the same on a laptop and on any bucket. ``detect_format``
decides how a file is read when ``input.format`` is ``auto``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mlm_data import storage
from mlm_data.errors import InputError

#: ``input.format: auto``: format by extension (after removing a compression suffix); any
#: other extension is plain text. ``.conll``, ``.bio`` and ``.iob`` are one token per line
#: (CoNLL-2003 style); ``.conllu`` is CoNLL-U, read by the same reader, which then also skips
#: its ``#`` comment lines and its multi-word token and empty node lines.
_EXTENSIONS = {
    "txt": "text", "text": "text", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl",
    "parquet": "parquet", "csv": "csv", "tsv": "tsv",
    "conll": "conll", "conllu": "conll", "bio": "conll", "iob": "conll",
}
_COMPRESSIONS = {"gz": "gzip", "zst": "zstd", "zstd": "zstd"}
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputFile:
    url: str
    """What to open with fsspec: a local path or a URL (``s3://b/k``, ``memory://x``)."""
    name: str
    """Path relative to the pattern's non-glob prefix; the stable part of document ids."""
    size: int
    """Bytes as stored (compressed size), for sizing decisions."""


def list_input_files(patterns: Sequence[str]) -> list[InputFile]:
    """Expand files, directories and globs (local or any fsspec URL) into files sorted by name.

    A directory stands for every file below it. Below a directory or a glob's fixed prefix,
    names with a part starting with '.' or '_' (``.DS_Store``, ``_SUCCESS``, ``_temporary/``)
    are skipped, as Hadoop and Spark do. A file reached by two patterns is listed once (with
    the name from the first); two different files with one name would give colliding
    document ids and are refused.

    >>> [f.name for f in list_input_files(["corpus/**/*.jsonl"])]  # doctest: +SKIP
    ['a.jsonl', 'sub/b.jsonl']
    """
    by_url: dict[str, tuple[InputFile, str]] = {}
    by_name: dict[str, tuple[InputFile, str]] = {}
    for pattern in patterns:
        files, hidden = _expand(pattern)
        if not files:
            raise InputError(_no_match_message(pattern, hidden))
        for f in files:
            if f.url in by_url:
                continue
            if f.name in by_name:
                other, other_pattern = by_name[f.name]
                raise InputError(
                    f"input files {other.url!r} (from {other_pattern!r}) and {f.url!r} (from "
                    f"{pattern!r}) have the same name {f.name!r}, so their document ids would "
                    "collide; use one pattern with a common parent directory (e.g. 'corpus/**/*.txt')"
                )
            by_url[f.url] = by_name[f.name] = (f, pattern)
    return sorted((f for f, _ in by_url.values()), key=lambda f: f.name)


@dataclass(frozen=True)
class Inputs:
    """What a run read, as the dataset records it (see ``inputs_of``)."""

    patterns: tuple[str, ...]
    """Each pattern relative to its fixed prefix, as document ids are: the manifest records
    these, so the same files read from another directory or bucket give the same manifest."""
    absolute: tuple[str, ...]
    """The patterns as absolute paths or URLs, for people: recorded beside the manifest
    (``run.json``), outside what the determinism contract covers."""
    num_files: int


def inputs_of(patterns: Sequence[str], files: Sequence[InputFile]) -> Inputs:
    """``Inputs`` of a run over ``patterns``, which listed ``files``.

    >>> inputs_of(["corpus/**/*.jsonl", "/data/extra.txt.gz"], []).patterns
    ('**/*.jsonl', 'extra.txt.gz')

    A directory is ``"."`` (its files are named relative to it); a URL loses its bucket and
    prefix the same way.
    """
    return Inputs(patterns=tuple(map(relative_pattern, patterns)),
                  absolute=tuple(p if "://" in p else os.path.abspath(p) for p in patterns),
                  num_files=len(files))


def relative_pattern(pattern: str) -> str:
    """The part of ``pattern`` below its fixed prefix (the prefix that ``InputFile.name`` drops)."""
    fs, path = fsspec.core.url_to_fs(pattern)
    path = path.rstrip("/") or path
    if _GLOB_CHARS.search(path):
        parts = path.split("/")
        first = next(i for i, part in enumerate(parts) if _GLOB_CHARS.search(part))
        return "/".join(parts[first:])
    return "." if fs.isdir(path) else posixpath.basename(path)


def _expand(pattern: str) -> tuple[list[InputFile], int]:
    """Files for one pattern, and how many were skipped as hidden."""
    fs, path = storage.url_to_fs(pattern, streaming=True)
    path = path.rstrip("/") or path
    local = isinstance(fs, LocalFileSystem)

    def url(p: str) -> str:
        return p if local else fs.unstrip_protocol(p)

    found: list[tuple[str, str, dict]] = []  # (path, name, info)
    if _GLOB_CHARS.search(path):
        parts = path.split("/")
        first = next(i for i, part in enumerate(parts) if _GLOB_CHARS.search(part))
        prefix = "/".join(parts[:first])
        for p, info in sorted(fs.glob(path, detail=True).items()):
            if info.get("type") == "directory":
                found += [(q, _relative(q, prefix), i) for q, i in _files_below(fs, p)]
            else:
                found.append((p, _relative(p, prefix), info))
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return [], 0
        if info.get("type") != "directory":
            return [InputFile(url(path), posixpath.basename(path), int(info.get("size") or 0))], 0
        found = [(q, _relative(q, path), i) for q, i in _files_below(fs, path)]
    visible = [(p, n, i) for p, n, i in found if not _is_hidden(n)]
    files = [InputFile(url(p), n, int(i.get("size") or 0)) for p, n, i in visible]
    return files, len(found) - len(visible)


def _files_below(fs: fsspec.AbstractFileSystem, path: str) -> list[tuple[str, dict]]:
    return sorted(fs.find(path, detail=True).items())


def _relative(path: str, prefix: str) -> str:
    return path[len(prefix):].lstrip("/") if path.startswith(prefix) else path.lstrip("/")


def _is_hidden(name: str) -> bool:
    return any(part.startswith((".", "_")) for part in name.split("/"))


def _no_match_message(pattern: str, hidden: int) -> str:
    msg = f"input pattern {pattern!r} matched no files; check the path"
    if hidden:
        msg += f" ({hidden} hidden file(s) with a name part starting with '.' or '_' were skipped)"
    if "://" not in pattern and not os.path.isabs(pattern):
        msg += f" (relative paths start at {os.getcwd()})"
    return msg + "; use '*' within a directory and '**' across directories"


def detect_format(name: str, format: str = "auto") -> str:
    """The format of file ``name`` under ``input.format``: ``auto`` looks at the extension.

    Compression suffixes are ignored and unknown extensions count as text:
    ``detect_format("a.jsonl.zst") == "jsonl"``, ``detect_format("README") == "text"``,
    ``detect_format("train.bio.gz") == "conll"``.
    """
    if format != "auto":
        return format
    return _EXTENSIONS.get(format_extension(name), "text")


def format_extension(name: str) -> str:
    """The lower-cased extension that names the format, after any compression suffix.

    >>> format_extension("Train.CoNLLU.gz"), format_extension("README")
    ('conllu', '')
    """
    base, ext = _split_ext(name.lower())
    if ext in _COMPRESSIONS:
        base, ext = _split_ext(base)
    return ext


def compression_of(name: str) -> str | None:
    """``"gzip"``, ``"zstd"`` or None, from the file name's last suffix."""
    return _COMPRESSIONS.get(_split_ext(name.lower())[1])


def stream_compression(file: InputFile, fmt: str) -> str | None:
    """The compression to undo while reading ``file`` as ``fmt``. Parquet is refused behind a
    gzip or zstd layer: it needs random access and compresses its pages itself."""
    compression = compression_of(file.name)
    if fmt == "parquet" and compression:
        raise InputError(
            f"{file.url}: Parquet compresses internally and cannot be read through {compression}; "
            "decompress the file or write it with Parquet's own compression"
        )
    return compression


def _split_ext(name: str) -> tuple[str, str]:
    base, dot, ext = posixpath.basename(name).rpartition(".")
    return (base, ext) if dot and base else (name, "")
