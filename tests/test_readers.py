"""Reading input files: formats, compression, ids, drop reasons, damaged files, bounded memory."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tracemalloc
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from mlm_data import accounting
from mlm_data.config.preprocess import InputConfig
from mlm_data.errors import ConfigError, InputError
from mlm_data.reading import byte_streams, table_records
from mlm_data.reading.document_reader import (
    Document,
    Dropped,
    FileProblem,
    InputFile,
    detect_format,
    list_input_files,
    read_documents,
)

MAX_CHARS = 1000


def read(path, max_document_chars=MAX_CHARS, **config):
    (file,) = list_input_files([str(path)])
    return list(read_documents(file, InputConfig(**config), max_document_chars=max_document_chars))


def outcomes(items, name):
    """Text or drop reason per slot, after checking the ids number every slot exactly once."""
    slots = [i for i in items if not isinstance(i, FileProblem)]
    assert [i.id for i in slots] == [f"{name}#{k}" for k in range(len(slots))]
    assert all(isinstance(i, (Document, Dropped)) for i in slots)
    return [i.text if isinstance(i, Document) else i.reason for i in slots]


def problems(items):
    return [(p.reason, p.detail) for p in items if isinstance(p, FileProblem)]


def write_parquet(path, column, values, type_=None):
    array = pa.array(values, type=type_ or pa.string())
    pq.write_table(pa.table({column: array, "n": list(range(len(values)))}), path)


# --------------------------------------------------------------------------------------------
# Formats

PARAGRAPHS = b"one\ntwo\n\n\n  \t\nthree\n\xc2\xa0\nfour\nfive"  # "\xc2\xa0": a no-break space


def test_text_blank_line_documents(tmp_path):
    (tmp_path / "a.txt").write_bytes(PARAGRAPHS)
    assert outcomes(read(tmp_path / "a.txt"), "a.txt") == ["one\ntwo", "three", "four\nfive"]


def test_text_line_documents_skip_blank_lines_without_an_index(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\none\n  \ntwo\n\n")
    assert outcomes(read(tmp_path / "a.txt", document_boundary="line"), "a.txt") == ["one", "two"]


def test_jsonl_documents_and_drop_reasons(tmp_path):
    lines = [
        json.dumps({"body": "first", "text": "ignored"}),
        "",  # blank: no slot
        "{not json",
        "[1, 2]",
        json.dumps({"text": "no body"}),
        json.dumps({"body": 7}),
        json.dumps({"body": "  \n "}),
        '{"body": "lone \\ud800 surrogate"}',
        json.dumps({"body": "last, with ünïcode"}, ensure_ascii=False),
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert outcomes(read(tmp_path / "c.jsonl", text_field="body"), "c.jsonl") == [
        "first", accounting.INVALID_JSON, accounting.INVALID_JSON, accounting.MISSING_TEXT,
        accounting.MISSING_TEXT, accounting.EMPTY, accounting.INVALID_UTF8, "last, with ünïcode",
    ]


def test_jsonl_nested_too_deep_for_the_parser_is_named_so(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000  # valid JSON: json.loads gives up with RecursionError
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"text": ' + deep + "}\n" + '{"text": "ok too"}\n')
    assert outcomes(read(tmp_path / "d.jsonl", max_document_chars=100_000), "d.jsonl") == [
        "ok", accounting.JSON_TOO_DEEP, "ok too"]


@pytest.mark.parametrize("line", [' {"text": "padded"} ', '{"text": "a"} {"text": "b"}', '{"text": "x"}]', "\ufeff{}"])
def test_jsonl_lines_are_judged_exactly_as_json_loads(tmp_path, line):
    (tmp_path / "j.jsonl").write_text('{"text": "first"}\n' + line + "\n", encoding="utf-8")
    try:
        expected = json.loads(line)["text"]
    except (ValueError, KeyError) as exc:
        expected = accounting.MISSING_TEXT if isinstance(exc, KeyError) else accounting.INVALID_JSON
    assert outcomes(read(tmp_path / "j.jsonl"), "j.jsonl") == ["first", expected]


@pytest.mark.parametrize("type_", [pa.string(), pa.large_string()])
def test_parquet_documents(tmp_path, type_):
    write_parquet(tmp_path / "p.parquet", "body", ["a", None, " ", "d" * 601, "e"], type_)
    assert outcomes(read(tmp_path / "p.parquet", max_document_chars=150, text_field="body"), "p.parquet") == [
        "a", accounting.MISSING_TEXT, accounting.EMPTY, accounting.DOCUMENT_TOO_LONG, "e",
    ]


def test_parquet_binary_column_is_decoded_strictly(tmp_path):
    write_parquet(tmp_path / "p.parquet", "body", [b"ok", b"bad \xff", "ü".encode()], pa.binary())
    assert outcomes(read(tmp_path / "p.parquet", text_field="body"), "p.parquet") == [
        "ok", accounting.INVALID_UTF8, "ü",
    ]


def test_parquet_is_read_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(table_records, "PARQUET_BATCH_ROWS", 3)
    texts = [f"doc {i}" for i in range(10)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "p.parquet", row_group_size=4)
    assert outcomes(read(tmp_path / "p.parquet"), "p.parquet") == texts


def test_parquet_dictionary_column(tmp_path):  # what a pandas categorical becomes
    pq.write_table(pa.table({"text": pa.array(["a", "b", "a"]).dictionary_encode()}), tmp_path / "d.parquet")
    assert outcomes(read(tmp_path / "d.parquet"), "d.parquet") == ["a", "b", "a"]


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_parquet_missing_column(tmp_path, policy):
    write_parquet(tmp_path / "p.parquet", "content", ["a"])
    detail = "no column 'text' (input.text_field); the columns are 'content', 'n'"
    if policy == "fail":
        with pytest.raises(InputError, match=re.escape(f"p.parquet: {detail}; set input.text_field to one of them, "
                                                       "or set input.on_bad_file=skip to skip it")):
            read(tmp_path / "p.parquet", on_bad_file=policy)
    else:
        items = read(tmp_path / "p.parquet", on_bad_file=policy)
        assert problems(items) == [(accounting.FILE_COLUMNS, detail)]
        assert outcomes(items, "p.parquet") == []


def test_parquet_column_of_another_type_is_a_bad_file(tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "p.parquet")
    with pytest.raises(InputError, match=r"p\.parquet: column 'text' \(input.text_field\) has type int64, not string"):
        read(tmp_path / "p.parquet")
    assert problems(read(tmp_path / "p.parquet", on_bad_file="skip"))[0][0] == accounting.FILE_COLUMNS


def test_csv_and_tsv_documents(tmp_path):
    (tmp_path / "a.csv").write_text('id,text\n1,"first, with a comma\nand a line"\n2,\n3,third\n')
    assert outcomes(read(tmp_path / "a.csv"), "a.csv") == ["first, with a comma\nand a line", accounting.EMPTY, "third"]
    (tmp_path / "b.tsv").write_text("one\t1\ntwo\t2\n")
    assert outcomes(read(tmp_path / "b.tsv", has_header=False, text_field="0"), "b.tsv") == ["one", "two"]
    with pytest.raises(InputError, match=r"a\.csv: no column 'body' \(input.text_field\); the columns are 'id', 'text'"):
        read(tmp_path / "a.csv", text_field="body")


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("a.txt", "auto", "text"), ("a.text.gz", "auto", "text"), ("README", "auto", "text"),
        ("notes.md", "auto", "text"), ("a.jsonl.zst", "auto", "jsonl"), ("a.json", "auto", "jsonl"),
        ("a.NDJSON.zstd", "auto", "jsonl"), ("x/a.parquet", "auto", "parquet"),
        ("a.csv", "auto", "csv"), ("a.txt", "jsonl", "jsonl"), (".gz", "auto", "text"),
    ],
)
def test_detect_format(name, fmt, expected):
    assert detect_format(name, fmt) == expected


@pytest.mark.parametrize(("name", "fmt"), [("a.conll", "auto"), ("a.bio.gz", "auto"), ("a.txt", "conll")])
def test_formats_without_a_text_column_are_refused_at_the_call(name, fmt):
    with pytest.raises(ConfigError, match="is not a text-corpus format; use one of text, jsonl, parquet, csv, tsv"):
        read_documents(InputFile(f"/nowhere/{name}", name, 0), InputConfig(format=fmt), max_document_chars=10)


# --------------------------------------------------------------------------------------------
# Compression, encodings, line endings


def gzip_members(data):
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


def zstd_frames(data):
    half = len(data) // 2
    c = zstandard.ZstdCompressor(write_checksum=True)
    return c.compress(data[:half]) + c.compress(data[half:])


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".gz", gzip.compress), (".gz", gzip_members), (".zst", zstandard.ZstdCompressor().compress),
        (".zstd", zstd_frames),
    ],
)
@pytest.mark.parametrize(("name", "config"), [("a.txt", {}), ("a.jsonl", {"text_field": "t"})])
def test_compressed_files_give_the_same_documents(tmp_path, suffix, compress, name, config):
    if name.endswith(".jsonl"):
        data = "".join(json.dumps({"t": f"doc {i} " * (i % 50)}) + "\n" for i in range(3000)).encode()
    else:
        data = b"".join(b"line %d\n" % i + (b"\n" if i % 7 == 0 else b"") for i in range(30000))
    (tmp_path / name).write_bytes(data)
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / (name + suffix)).write_bytes(compress(data))
    plain = outcomes(read(tmp_path / name, **config), name)
    assert len(plain) > 2000
    assert outcomes(read(tmp_path / "z" / (name + suffix), **config), name + suffix) == plain


def test_invalid_utf8_drops_only_that_document(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"good one\n\nbad \xff\xfe here\nstill bad\n\ngood two\n")
    assert outcomes(read(tmp_path / "a.txt"), "a.txt") == ["good one", accounting.INVALID_UTF8, "good two"]
    assert outcomes(read(tmp_path / "a.txt", document_boundary="line"), "a.txt") == [
        "good one", accounting.INVALID_UTF8, "still bad", "good two",
    ]


def test_bom_and_crlf(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n\r\nthree\r\n")
    assert outcomes(read(tmp_path / "a.txt"), "a.txt") == ["one\ntwo", "three"]
    (tmp_path / "b.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "x"}\r\n\r\n{"text": "y"}\r\n')
    assert outcomes(read(tmp_path / "b.jsonl"), "b.jsonl") == ["x", "y"]


def reference_documents(data, bound, boundary):
    """The documents spelled out naively, whole file in memory, for comparison."""
    lines = [line.removesuffix(b"\r") for line in data.split(b"\n")]
    if boundary == "line":
        docs = [line for line in lines if line.strip()]
    else:
        docs = [d for d in b"\n".join(b"" if not line.strip() else line for line in lines).split(b"\n\n") if d.strip()]
        docs = [d.strip(b"\n") for d in docs]
    return [accounting.DOCUMENT_TOO_LONG if len(d) > bound else d.decode() for d in docs]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 64, 1 << 20])
@pytest.mark.parametrize("boundary", ["blank_line", "line"])
def test_chunk_boundaries_do_not_change_documents(tmp_path, monkeypatch, chunk, boundary):
    # Lines of 0..10 bytes (some CRLF, every third blank) around an 8-byte bound, cut anywhere.
    lines = [b"" if i % 3 == 0 else b"x" * (i % 11) + b"\r" * (i % 5 == 0) for i in range(5000)]
    lines[42] = b"   " * 5  # a blank line longer than the bound is still blank
    data = b"\n".join(lines)
    (tmp_path / "a.txt").write_bytes(data)
    monkeypatch.setattr(byte_streams, "CHUNK_BYTES", chunk)
    got = outcomes(read(tmp_path / "a.txt", max_document_chars=2, document_boundary=boundary), "a.txt")
    assert got == reference_documents(data, 8, boundary)
    assert accounting.DOCUMENT_TOO_LONG in got and len(set(got)) > 3


# --------------------------------------------------------------------------------------------
# Bounded memory


@pytest.mark.parametrize("name", ["big.txt", "big.jsonl", "big.txt.zst"])
def test_a_50mb_line_is_skipped_in_bounded_memory(tmp_path, name):
    huge = b"y" * (50 << 20)
    data = b"before\n\n" + huge + b"\nsame document\n\nafter\n"
    if name.endswith(".jsonl"):
        data = b'{"text": "before"}\n{"text": "' + huge + b'"}\n{"text": "after"}\n'
    if name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    (tmp_path / name).write_bytes(data)
    del huge, data
    tracemalloc.start()
    try:
        items = read(tmp_path / name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcomes(items, name) == ["before", accounting.DOCUMENT_TOO_LONG, "after"]
    assert peak < 20 << 20


def test_a_document_of_many_short_lines_is_bounded_too(tmp_path):
    lines = b"\n".join([b"x" * 99] * 100)  # 9999 bytes in one paragraph; bound is 4000
    (tmp_path / "a.txt").write_bytes(b"a\n\n" + lines + b"\n\nb")
    assert outcomes(read(tmp_path / "a.txt"), "a.txt") == ["a", accounting.DOCUMENT_TOO_LONG, "b"]
    assert outcomes(read(tmp_path / "a.txt", max_document_chars=2500), "a.txt")[1] == lines.decode()


# --------------------------------------------------------------------------------------------
# Empty, binary and corrupt files


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("e.txt", b""), ("e.jsonl", b""), ("e.txt.gz", b""), ("e.txt.gz", gzip.compress(b"")),
        ("e.txt.zst", b""), ("e.jsonl.zst", zstandard.ZstdCompressor().compress(b"")),
        ("e.parquet", b""),
    ],
)
@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_empty_file_is_a_file_problem_not_an_error(tmp_path, name, content, policy):
    (tmp_path / name).write_bytes(content)
    items = read(tmp_path / name, on_bad_file=policy)
    assert [(type(i), i.name, i.reason) for i in items] == [(FileProblem, name, accounting.FILE_EMPTY)]


@pytest.mark.parametrize("name", ["b.txt", "b.jsonl", "b.txt.gz"])
def test_binary_file(tmp_path, name):
    content = b"GIF89a\x01\x00\x01\x00" + bytes(range(256)) * 10
    (tmp_path / name).write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    with pytest.raises(InputError, match=rf"{name}: binary content \(NUL byte at offset 7\).*on_bad_file=skip"):
        read(tmp_path / name)
    items = read(tmp_path / name, on_bad_file="skip")
    assert [(type(i), i.reason) for i in items] == [(FileProblem, accounting.FILE_BINARY)]


def test_truncated_gzip(tmp_path):
    docs = [f"document {i} " + "word " * 200 for i in range(4000)]  # ~4 MB of text
    data = gzip.compress("\n\n".join(docs).encode(), compresslevel=1)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "t.txt.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        read(tmp_path / "corpus" / "t.txt.gz")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"mlm-data error: {tmp_path / 'corpus' / 't.txt.gz'}: corrupt gzip stream (ends early after ")
    assert message.endswith("re-create or remove the file, or set input.on_bad_file=skip to skip it")

    items = read(tmp_path / "corpus" / "t.txt.gz", on_bad_file="skip")
    ((reason, detail),) = problems(items)
    assert reason == accounting.FILE_CORRUPT and "ends early" in detail
    assert items[-1] == FileProblem("t.txt.gz", reason, detail)
    kept = outcomes(items, "t.txt.gz")
    assert 0 < len(kept) < len(docs) and kept == docs[: len(kept)]


@pytest.mark.parametrize(
    ("damage", "detail"),
    [
        (lambda d: d[:-4] + bytes(4), "corrupt gzip stream (Incorrect length of data produced after 1400 bytes)"),
        (lambda d: d[:-8] + bytes(4) + d[-4:], "corrupt gzip stream (CRC check failed 0x0 != "),
        (lambda d: d[:-3], "corrupt gzip stream (ends early after 1400 bytes)"),
        (lambda d: d[:len(d) // 2], "corrupt gzip stream (ends early after "),
        (lambda d: d[:5] + b"\xff" * 8 + d[13:], "corrupt gzip stream (Error -3 while decompressing data"),
        (lambda d: b"PK\x03\x04" + d, "not a gzip file (bad magic bytes)"),
        (lambda d: d + b"trailing junk", "corrupt gzip stream (unexpected data after 1400 bytes)"),
        (lambda d: d + bytes(7) + b"\x1f", "corrupt gzip stream (unexpected data after 1400 bytes)"),
    ],
)
def test_damaged_gzip(tmp_path, damage, detail):
    (tmp_path / "d.jsonl.gz").write_bytes(damage(gzip.compress(b'{"text": "x"}\n' * 100)))
    with pytest.raises(InputError, match="d.jsonl.gz: corrupt|d.jsonl.gz: not a gzip"):
        read(tmp_path / "d.jsonl.gz")
    assert detail in problems(read(tmp_path / "d.jsonl.gz", on_bad_file="skip"))[0][1]


def test_gzip_padded_with_zeros_is_fine(tmp_path):
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"x\n\ny\n") + bytes(512))
    assert outcomes(read(tmp_path / "a.txt.gz"), "a.txt.gz") == ["x", "y"]


ZDATA = b"".join(b"zstd line %d\n\n" % i for i in range(20000))


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"not zstd at all", "not a zstd file (bad magic bytes)"),
        (zstd_frames(ZDATA)[:-9], "corrupt zstd stream (ends inside a frame after "),
        (zstandard.ZstdCompressor().compress(ZDATA)[:100], "corrupt zstd stream (ends inside a frame after "),
        (zstd_frames(ZDATA)[:-4] + b"\x00\x00\x00\x00", "corrupt zstd stream (zstd decompress error"),
        (zstd_frames(ZDATA) + b"junk", "corrupt zstd stream ("),
    ],
)
def test_bad_zstd(tmp_path, content, detail):
    (tmp_path / "z.txt.zst").write_bytes(content)
    with pytest.raises(InputError, match=r"z\.txt\.zst: (corrupt zstd|not a zstd).*on_bad_file=skip"):
        read(tmp_path / "z.txt.zst")
    items = read(tmp_path / "z.txt.zst", on_bad_file="skip")
    ((reason, got),) = problems(items)
    assert reason == accounting.FILE_CORRUPT and got.startswith(detail)
    outcomes(items, "z.txt.zst")


def test_zstd_skippable_frames_are_ignored(tmp_path):
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"meta!"
    c = zstandard.ZstdCompressor()
    (tmp_path / "s.txt.zst").write_bytes(skippable + c.compress(b"a\n\n") + skippable + c.compress(b"b\n"))
    assert outcomes(read(tmp_path / "s.txt.zst"), "s.txt.zst") == ["a", "b"]


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_unreadable_parquet(tmp_path, policy):
    write_parquet(tmp_path / "p.parquet", "text", ["a"] * 100)
    data = (tmp_path / "p.parquet").read_bytes()
    (tmp_path / "p.parquet").write_bytes(data[: len(data) // 2])
    if policy == "fail":
        with pytest.raises(InputError, match=r"p\.parquet: not a readable Parquet file"):
            read(tmp_path / "p.parquet")
    else:
        assert problems(read(tmp_path / "p.parquet", on_bad_file="skip"))[0][0] == accounting.FILE_CORRUPT


def test_parquet_damaged_in_a_later_row_group_keeps_earlier_documents(tmp_path):
    texts = [f"doc {i} " * 20 for i in range(400)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "p.parquet", row_group_size=100, compression="snappy")
    data = bytearray((tmp_path / "p.parquet").read_bytes())
    start = pq.ParquetFile(tmp_path / "p.parquet").metadata.row_group(3).column(0).dictionary_page_offset
    data[start:start + 20] = b"\xff" * 20  # the last row group's first page header
    (tmp_path / "p.parquet").write_bytes(bytes(data))
    items = read(tmp_path / "p.parquet", on_bad_file="skip")
    kept = outcomes(items, "p.parquet")
    assert 0 < len(kept) <= 300 and kept == texts[: len(kept)]  # batches may span row groups
    assert problems(items)[0][1].startswith(f"unreadable Parquet data after row {len(kept)} (")
    with pytest.raises(InputError, match="p.parquet: unreadable Parquet data after row"):
        read(tmp_path / "p.parquet")


def test_compressed_parquet_is_refused(tmp_path):
    with pytest.raises(InputError, match="Parquet compresses internally"):
        read_documents(InputFile(str(tmp_path / "p.parquet.gz"), "p.parquet.gz", 1), InputConfig(), max_document_chars=10)


def test_file_deleted_after_listing(tmp_path):
    (tmp_path / "gone.txt").write_text("x")
    (file,) = list_input_files([str(tmp_path / "gone.txt")])
    (tmp_path / "gone.txt").unlink()
    with pytest.raises(InputError, match="gone.txt: cannot open input file.*deleted after the input was listed"):
        list(read_documents(file, InputConfig(), max_document_chars=10))


# --------------------------------------------------------------------------------------------
# Listing and ids


def make_corpus(root):
    for rel, text in {
        "a.jsonl": '{"text": "a"}\n', "sub/b.jsonl": '{"text": "b"}\n', "sub/deeper/c.jsonl": '{"text": "c"}\n',
        "notes.txt": "n", "_SUCCESS": "", ".hidden.jsonl": "{}", "_tmp/d.jsonl": "{}", "sub/.DS_Store": "\0",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_glob_with_double_star_names_relative_to_the_fixed_prefix(tmp_path):
    make_corpus(tmp_path / "corpus")
    files = list_input_files([str(tmp_path / "corpus" / "**" / "*.jsonl")])
    assert [f.name for f in files] == ["a.jsonl", "sub/b.jsonl", "sub/deeper/c.jsonl"]
    assert files[1].url == str(tmp_path / "corpus" / "sub" / "b.jsonl") and files[1].size == 14
    assert [f.name for f in list_input_files([str(tmp_path / "corpus" / "sub" / "*")])] == [
        "b.jsonl", "deeper/c.jsonl",
    ]


def test_directory_means_every_visible_file_below_it(tmp_path):
    make_corpus(tmp_path / "corpus")
    files = list_input_files([str(tmp_path / "corpus") + "/"])
    assert [f.name for f in files] == ["a.jsonl", "notes.txt", "sub/b.jsonl", "sub/deeper/c.jsonl"]


def test_duplicates_removed_and_name_collisions_refused(tmp_path):
    make_corpus(tmp_path / "corpus")
    corpus = tmp_path / "corpus"
    files = list_input_files([str(corpus / "sub" / "b.jsonl"), str(corpus / "**" / "*.jsonl")])
    assert [f.name for f in files] == ["a.jsonl", "b.jsonl", "sub/deeper/c.jsonl"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.jsonl").write_text("{}")
    with pytest.raises(InputError, match="same name 'a.jsonl'.*use one pattern with a common parent"):
        list_input_files([str(corpus / "*.jsonl"), str(tmp_path / "other" / "*.jsonl")])


def test_ids_do_not_depend_on_where_the_corpus_lives(tmp_path):
    make_corpus(tmp_path / "here" / "corpus")
    shutil.copytree(tmp_path / "here" / "corpus", tmp_path / "there" / "moved")

    def ids(root):
        files = list_input_files([str(root / "**" / "*.jsonl")])
        return [i.id for f in files for i in read_documents(f, InputConfig(), max_document_chars=10)]

    assert ids(tmp_path / "here" / "corpus") == ids(tmp_path / "there" / "moved") == [
        "a.jsonl#0", "sub/b.jsonl#0", "sub/deeper/c.jsonl#0",
    ]


@pytest.mark.parametrize("pattern", ["nothing/*.txt", "empty_dir", "missing.txt", "corpus/_*"])
def test_pattern_matching_nothing(tmp_path, monkeypatch, pattern):
    monkeypatch.chdir(tmp_path)
    make_corpus(tmp_path / "corpus")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match=re.escape(f"input pattern '{pattern}' matched no files; check the path")):
        list_input_files(["corpus/a.jsonl", pattern])


def test_hidden_files_are_mentioned_when_nothing_else_matched(tmp_path):
    make_corpus(tmp_path / "corpus")
    with pytest.raises(InputError, match=r"2 hidden file\(s\).*were skipped"):
        list_input_files([str(tmp_path / "corpus" / "_*")])
    # Named in the fixed part of a pattern, a hidden directory is what the user asked for.
    assert [f.name for f in list_input_files([str(tmp_path / "corpus" / "_tmp" / "*")])] == ["d.jsonl"]


@pytest.fixture
def memory_corpus():
    fs = fsspec.filesystem("memory")
    root = f"/readers-test-{uuid.uuid4().hex}"
    fs.pipe({
        f"{root}/corpus/a.txt": b"one\n\ntwo\n",
        f"{root}/corpus/sub/b.txt.gz": gzip.compress(b"three\n"),
        f"{root}/corpus/_SUCCESS": b"",
    })
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def test_memory_filesystem(memory_corpus):
    files = list_input_files([f"{memory_corpus}/corpus/**/*.txt*"])
    assert [(f.name, f.url) for f in files] == [
        ("a.txt", f"memory://{memory_corpus[len('memory://'):]}/corpus/a.txt"),
        ("sub/b.txt.gz", f"memory://{memory_corpus[len('memory://'):]}/corpus/sub/b.txt.gz"),
    ]
    items = [i for f in files for i in read_documents(f, InputConfig(), max_document_chars=10)]
    assert [(i.id, i.text) for i in items] == [("a.txt#0", "one"), ("a.txt#1", "two"), ("sub/b.txt.gz#0", "three")]
    assert [f.name for f in list_input_files([f"{memory_corpus}/corpus"])] == ["a.txt", "sub/b.txt.gz"]
