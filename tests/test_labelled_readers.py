"""Reading labelled files: CoNLL, JSONL, CSV/TSV and Parquet records, every slot accounted for."""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_data import accounting
from mlm_data.config.preprocess import InputConfig
from mlm_data.errors import ConfigError, InputError
from mlm_data.reading import table_records
from mlm_data.reading.byte_streams import LONG, lines
from mlm_data.reading.csv_records import UNTERMINATED, QuoteTracker, csv_fields, csv_records
from mlm_data.reading.document_reader import Dropped, FileProblem, InputFile
from mlm_data.reading.input_files import detect_format, list_input_files
from mlm_data.reading.labelled_reader import LabelledText, TaggedSentence, read_labelled

TOKENS = "token_classification"
TEXTS = "sequence_classification"
LABELED = Path("/work/shared/corpora/labeled")


def read(path, task, max_document_chars=1000, **config):
    (file,) = list_input_files([str(path)])
    return list(read_labelled(file, InputConfig(**config), task=task, max_document_chars=max_document_chars))


def outcomes(items, name):
    """Per slot: ``(words, tags)``, ``(text, pair, label)`` or the drop reason, after checking
    that the ids number every slot exactly once, in order."""
    slots = [i for i in items if not isinstance(i, FileProblem)]
    assert [i.id for i in slots] == [f"{name}#{k}" for k in range(len(slots))]
    out = []
    for i in slots:
        if isinstance(i, TaggedSentence):
            out.append((list(i.words), list(i.tags)))
        elif isinstance(i, LabelledText):
            out.append((i.text, i.text_pair, i.label))
        else:
            assert isinstance(i, Dropped)
            out.append(i.reason)
    return out


def problems(items):
    return [(p.reason, p.detail) for p in items if isinstance(p, FileProblem)]


# --------------------------------------------------------------------------------------------
# CoNLL

CONLL = (
    "-DOCSTART- -X- -X- O\n"
    "\n"
    "EU\tB-ORG\n"
    "rejects NNP O\n"      # whitespace-separated: the tag is the last column
    "German\tB-MISC\n"
    "\n\n  \n"              # several blank lines: one boundary
    "Peter\tB-PER\n"
    "Blackburn\tI-PER\n"
    "-DOCSTART-\n"          # a document boundary also ends the sentence
    "BRUSSELS B-LOC"        # last sentence without a final newline
)
CONLL_EXPECTED = [
    (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
    (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    (["BRUSSELS"], ["B-LOC"]),
]


def test_conll_sentences_docstart_and_columns(tmp_path):
    (tmp_path / "a.conll").write_text(CONLL)
    assert outcomes(read(tmp_path / "a.conll", TOKENS), "a.conll") == CONLL_EXPECTED


@pytest.mark.parametrize(
    ("suffix", "compress"), [(".gz", gzip.compress), (".zst", zstandard.ZstdCompressor().compress)]
)
def test_conll_compressed_with_bom_and_crlf(tmp_path, suffix, compress):
    data = b"\xef\xbb\xbf" + CONLL.replace("\n", "\r\n").encode()
    (tmp_path / ("a.bio" + suffix)).write_bytes(compress(data))
    assert outcomes(read(tmp_path / ("a.bio" + suffix), TOKENS), "a.bio" + suffix) == CONLL_EXPECTED


def test_conll_bad_lines_drop_their_whole_sentence(tmp_path):
    data = (
        b"good\tO\n\n"
        b"one\tO\nlonely\nword\tO\n\n"          # a line with one column: no tag
        b"bad\tO\nutf8 \xff\tO\n\n"
        b"\tO\nx\tO\n\n"                          # an empty word column
        b"after\tO\n"
    )
    (tmp_path / "b.conll").write_bytes(data)
    assert outcomes(read(tmp_path / "b.conll", TOKENS), "b.conll") == [
        (["good"], ["O"]), accounting.INVALID_RECORD, accounting.INVALID_UTF8, accounting.INVALID_RECORD,
        (["after"], ["O"]),
    ]


def test_conll_columns_are_configurable(tmp_path):
    (tmp_path / "c.conll").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nshort NN O\n")
    got = read(tmp_path / "c.conll", TOKENS, conll_token_column=0, conll_label_column=3)
    assert outcomes(got, "c.conll") == [(["EU", "rejects"], ["B-ORG", "O"]), accounting.INVALID_RECORD]
    got = read(tmp_path / "c.conll", TOKENS, conll_token_column=1, conll_label_column=-1)
    assert outcomes(got, "c.conll") == [(["NNP", "VBZ"], ["B-ORG", "O"]), (["NN"], ["O"])]


def test_conllu_skips_comments_multiword_tokens_and_empty_nodes(tmp_path):
    data = (
        "# sent_id = 1\n# text = Vámonos al mar.\n"
        "1-2\tVámonos\t_\t_\n1\tVamos\tir\tVERB\n2\tnos\tnosotros\tPRON\n"
        "3-4\tal\t_\t_\n3\ta\ta\tADP\n4\tel\tel\tDET\n5\tmar\tmar\tNOUN\n5.1\tvisto\tver\tVERB\n"
        "6\t.\t.\tPUNCT\n\n"
    )
    (tmp_path / "u.conllu").write_text(data)
    got = read(tmp_path / "u.conllu", TOKENS, conll_token_column=1, conll_label_column=3)
    assert outcomes(got, "u.conllu") == [
        (["Vamos", "nos", "a", "el", "mar", "."], ["VERB", "PRON", "ADP", "DET", "NOUN", "PUNCT"]),
    ]


def test_conll_sentence_over_the_bound_is_dropped(tmp_path):
    long_sentence = "".join(f"w{i}\tO\n" for i in range(30))  # 180 bytes; bound is 4 * 10
    (tmp_path / "l.conll").write_text("a\tO\n\n" + long_sentence + "\nb\tO\n\n" + "x" * 100 + "\tO\n\nc\tO\n")
    assert outcomes(read(tmp_path / "l.conll", TOKENS, max_document_chars=10), "l.conll") == [
        (["a"], ["O"]), accounting.DOCUMENT_TOO_LONG, (["b"], ["O"]), accounting.DOCUMENT_TOO_LONG,
        (["c"], ["O"]),
    ]


def test_conll_label_column_cannot_be_the_token_column(tmp_path):
    with pytest.raises(ConfigError, match="conll_label_column: 0 is also input.conll_token_column"):
        read_labelled(InputFile("/x/a.conll", "a.conll", 1), InputConfig(conll_label_column=0),
                      task=TOKENS, max_document_chars=10)


# --------------------------------------------------------------------------------------------
# JSONL


def test_jsonl_tagged_records_and_drop_reasons(tmp_path):
    lines_ = [
        json.dumps({"tokens": ["New", "York"], "tags": ["B-LOC", "I-LOC"], "id": 7}),
        "",  # blank: no slot
        json.dumps({"tokens": ["a", "b"], "tags": ["O"]}),
        json.dumps({"tokens": ["a"]}),
        json.dumps({"tokens": "a b", "tags": ["O", "O"]}),
        json.dumps({"tokens": ["a", 1], "tags": ["O", "O"]}),
        json.dumps({"tokens": [], "tags": []}),
        json.dumps({"tokens": ["a"], "tags": [" "]}),
        "{broken",
        '{"tokens": ["lone \\ud800"], "tags": ["O"]}',
        json.dumps({"tokens": ["ünï", "\u0007"], "tags": [" O ", "O"]}, ensure_ascii=False),
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines_) + "\n", encoding="utf-8")
    assert outcomes(read(tmp_path / "t.jsonl", TOKENS), "t.jsonl") == [
        (["New", "York"], ["B-LOC", "I-LOC"]), accounting.LABEL_MISMATCH, accounting.INVALID_RECORD,
        accounting.INVALID_RECORD, accounting.INVALID_RECORD, accounting.EMPTY, accounting.INVALID_RECORD,
        accounting.INVALID_JSON, accounting.INVALID_UTF8, (["ünï", "\u0007"], ["O", "O"]),
    ]


def test_jsonl_tagged_fields_are_configurable(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"words": ["x"], "ner": ["O"]}) + "\n")
    assert outcomes(read(tmp_path / "t.json", TOKENS, tokens_field="words", tags_field="ner"), "t.json") == [
        (["x"], ["O"]),
    ]


def test_jsonl_labelled_texts(tmp_path):
    lines_ = [
        {"text": "good film", "label": "pos"},
        {"text": "bad film", "label": 0},
        {"text": "x", "label": True},
        {"text": "x", "label": None},
        {"text": "x"},
        {"text": "x", "label": 1.5},
        {"text": "x", "label": "  "},
        {"body": "no text", "label": "pos"},
        {"text": 3, "label": "pos"},
        {"text": " \n ", "label": "pos"},
    ]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines_))
    (tmp_path / "s.jsonl.gz").write_bytes(gzip.compress((tmp_path / "s.jsonl").read_bytes()))
    expected = [
        ("good film", None, "pos"), ("bad film", None, "0"), *[accounting.INVALID_RECORD] * 5,
        accounting.MISSING_TEXT, accounting.MISSING_TEXT, accounting.EMPTY,
    ]
    assert outcomes(read(tmp_path / "s.jsonl", TEXTS), "s.jsonl") == expected
    assert outcomes(read(tmp_path / "s.jsonl.gz", TEXTS), "s.jsonl.gz") == expected


def test_jsonl_pairs(tmp_path):
    lines_ = [
        {"premise": "A man sleeps.", "hypothesis": "Nobody sleeps.", "gold": "contradiction"},
        {"premise": "A man sleeps.", "gold": "neutral"},
        {"premise": "A man sleeps.", "hypothesis": "", "gold": "neutral"},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines_))
    got = read(tmp_path / "p.jsonl", TEXTS, text_field="premise", text_pair_field="hypothesis", label_field="gold")
    assert outcomes(got, "p.jsonl") == [
        ("A man sleeps.", "Nobody sleeps.", "contradiction"), accounting.MISSING_TEXT, accounting.EMPTY,
    ]


@pytest.mark.parametrize("task", [TOKENS, TEXTS])
def test_jsonl_nested_too_deep_for_the_parser(tmp_path, task):
    deep = "[" * 100_000 + "]" * 100_000  # valid JSON that Python's parser cannot recurse into
    (tmp_path / "d.jsonl").write_text('{"x": ' + deep + "}\n" + deep + "\n{broken\n")
    assert outcomes(read(tmp_path / "d.jsonl", task, max_document_chars=100_000), "d.jsonl") == [
        accounting.JSON_TOO_DEEP, accounting.JSON_TOO_DEEP, accounting.INVALID_JSON]


def test_jsonl_line_over_the_bound(tmp_path):
    (tmp_path / "l.jsonl").write_text(
        json.dumps({"text": "a", "label": 1}) + "\n" + json.dumps({"text": "y" * 500, "label": 1}) + "\n"
        + json.dumps({"text": "b", "label": 2}) + "\n"
    )
    assert outcomes(read(tmp_path / "l.jsonl", TEXTS, max_document_chars=20), "l.jsonl") == [
        ("a", None, "1"), accounting.DOCUMENT_TOO_LONG, ("b", None, "2"),
    ]


# --------------------------------------------------------------------------------------------
# CSV and TSV


def test_csv_with_header_quoted_newlines_and_bad_rows(tmp_path):
    data = (
        'id,sentence,label\n'
        '1,"A film, with ""quotes""\nand a second line",pos\n'
        '\n'                                   # blank line between rows: no slot
        '2,short row\n'                        # too few fields
        '3,"",neg\n'                           # empty text
        '4,"crlf\r\ninside",neg\r\n'
        '5,plain,  neg  \n'
    )
    (tmp_path / "r.csv").write_bytes(data.encode())
    assert outcomes(read(tmp_path / "r.csv", TEXTS, text_field="sentence"), "r.csv") == [
        ('A film, with "quotes"\nand a second line', None, "pos"), accounting.INVALID_RECORD,
        accounting.EMPTY, ("crlf\ninside", None, "neg"), ("plain", None, "neg"),
    ]


def test_csv_pairs_by_name_and_position(tmp_path):
    (tmp_path / "p.csv").write_text('s1,s2,gold\n"a b","c, d",yes\n')
    expected = [("a b", "c, d", "yes")]
    assert outcomes(read(tmp_path / "p.csv", TEXTS, text_field="s1", text_pair_field="s2", label_field="gold"),
                    "p.csv") == expected
    assert outcomes(read(tmp_path / "p.csv", TEXTS, text_field="0", text_pair_field="1", label_field="2"),
                    "p.csv") == expected


def test_csv_header_without_the_column_is_a_bad_file(tmp_path):
    (tmp_path / "h.csv").write_text("sentence,label\nx,1\n")
    with pytest.raises(InputError, match=r"h\.csv: no column 'text' \(input\.text_field\); the columns are "
                                         r"'sentence', 'label'; set input\.text_field to one of them, or set "
                                         r"input\.on_bad_file=skip"):
        read(tmp_path / "h.csv", TEXTS)
    assert problems(read(tmp_path / "h.csv", TEXTS, on_bad_file="skip")) == [
        (accounting.FILE_COLUMNS, "no column 'text' (input.text_field); the columns are 'sentence', 'label'")]


def test_headerless_tsv_by_position_keeps_quotes(tmp_path):
    data = 'art\t"Quoted" start, and a comma\nfood\tA "critic" \t extra field\n\nsports\t\nlone\n'
    (tmp_path / "f.tsv").write_text(data)
    got = read(tmp_path / "f.tsv", TEXTS, has_header=False, label_field="0", text_field="1")
    assert outcomes(got, "f.tsv") == [
        ('"Quoted" start, and a comma', None, "art"), ('A "critic" ', None, "food"), accounting.EMPTY,
        accounting.INVALID_RECORD,
    ]


def test_headerless_file_needs_positions():
    with pytest.raises(ConfigError, match=r"input.text_field: 'text' is a column name, but input.has_header is false"):
        read_labelled(InputFile("/x/f.tsv", "f.tsv", 1), InputConfig(has_header=False, label_field="0"),
                      task=TEXTS, max_document_chars=10)


def test_csv_invalid_utf8_drops_only_that_row(tmp_path):
    (tmp_path / "u.csv").write_bytes(b"text,label\ngood,1\nbad \xff,1\nfine,2\n")
    assert outcomes(read(tmp_path / "u.csv", TEXTS), "u.csv") == [
        ("good", None, "1"), accounting.INVALID_UTF8, ("fine", None, "2"),
    ]


def test_csv_record_over_the_bound_is_followed_to_its_end(tmp_path):
    # Bound 4 * 10 = 40 bytes. Record 2 spans lines (quoted) and outgrows the bound; record 3 has
    # one physical line longer than the bound, which closes and reopens quotes: the reader must
    # still see those quotes to find where the record ends.
    many_lines = '"' + "\n".join(["line of text"] * 10) + '",b\n'
    long_line = '"start\n' + "z" * 100 + '" tail,"x\n' + 'more",c\n'
    data = "text,label\nfirst,a\n" + many_lines + long_line + "last,d\n"
    (tmp_path / "b.csv").write_text(data)
    assert outcomes(read(tmp_path / "b.csv", TEXTS, max_document_chars=10), "b.csv") == [
        ("first", None, "a"), accounting.DOCUMENT_TOO_LONG, accounting.DOCUMENT_TOO_LONG, ("last", None, "d"),
    ]
    assert len(outcomes(read(tmp_path / "b.csv", TEXTS, max_document_chars=1000), "b.csv")) == 4


def test_csv_lone_carriage_returns_are_ordinary_characters(tmp_path):
    # Only "\n" ends a line here; Python's csv would call a lone "\r" a line break.
    (tmp_path / "r.csv").write_bytes(b'text,label\nbefore\rafter,1\n"quoted\ralso",2\n')
    assert outcomes(read(tmp_path / "r.csv", TEXTS), "r.csv") == [("before\rafter", None, "1"), ("quoted\ralso", None, "2")]


def test_csv_quote_left_open_at_the_end(tmp_path):
    (tmp_path / "o.csv").write_text('text,label\nok,1\n"never closed,2\nmore\n')
    assert outcomes(read(tmp_path / "o.csv", TEXTS), "o.csv") == [("ok", None, "1"), accounting.INVALID_RECORD]


def csv_module_rows(text):
    return [row for row in csv.reader(io.StringIO(text, newline="")) if row]


def our_rows(data, chunk):
    quotes = QuoteTracker()
    chunks = iter([data[i:i + chunk] for i in range(0, len(data), chunk)])
    out = []
    for record in csv_records(lines(chunks, 1 << 20, observe_long=quotes.observe_long), quotes, 1 << 20):
        out.append(record if record is UNTERMINATED else csv_fields(record.decode()))
    return out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='a,"\n', max_size=60), st.integers(1, 7))
def test_csv_records_agree_with_python_csv(text, chunk):
    ours = our_rows(text.encode(), chunk)
    if ours and ours[-1] is UNTERMINATED:
        return  # Python's csv returns a half-open field there; we drop the record instead
    assert ours == csv_module_rows(text)


def test_long_lines_report_their_quotes():
    # With a bound of 4 bytes every line below is "long": the tracker sees them piecewise.
    data = b'"aaaaaaa\nbbbbbbb",ccccccc\nddddddd,"eeeee""eeee"\n'
    quotes = QuoteTracker()
    records = list(csv_records(lines(iter([data[i:i + 3] for i in range(0, len(data), 3)]), 4,
                                     observe_long=quotes.observe_long), quotes, 4))
    assert records == [LONG, LONG]


# --------------------------------------------------------------------------------------------
# Parquet


def test_parquet_labelled_texts(tmp_path, monkeypatch):
    monkeypatch.setattr(table_records, "PARQUET_BATCH_ROWS", 2)
    table = pa.table({
        "sentence": ["good", None, "bad", " ", "x" * 100, "ok"],
        "pair": ["p1", "p2", None, "p4", "p5", "p6"],
        "label": pa.array([1, 2, 3, None, 5, 6], type=pa.int64()),
    })
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=3)
    got = read(tmp_path / "t.parquet", TEXTS, max_document_chars=10, text_field="sentence")
    assert outcomes(got, "t.parquet") == [
        ("good", None, "1"), accounting.MISSING_TEXT, ("bad", None, "3"), accounting.INVALID_RECORD,
        accounting.DOCUMENT_TOO_LONG, ("ok", None, "6"),
    ]
    got = read(tmp_path / "t.parquet", TEXTS, max_document_chars=10, text_field="sentence", text_pair_field="pair")
    assert outcomes(got, "t.parquet")[:3] == [("good", "p1", "1"), accounting.MISSING_TEXT, accounting.MISSING_TEXT]


def test_parquet_binary_text_is_decoded_strictly(tmp_path):
    pq.write_table(pa.table({"text": pa.array([b"ok", b"bad \xff"], pa.binary()), "label": ["a", "b"]}),
                   tmp_path / "b.parquet")
    assert outcomes(read(tmp_path / "b.parquet", TEXTS), "b.parquet") == [("ok", None, "a"), accounting.INVALID_UTF8]


def test_parquet_tagged_sentences(tmp_path):
    table = pa.table({
        "tokens": [["New", "York"], ["a", "b"], None, ["x"]],
        "tags": pa.array([["B-LOC", "I-LOC"], ["O"], ["O"], ["O"]]).cast(pa.large_list(pa.string())),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    assert outcomes(read(tmp_path / "t.parquet", TOKENS), "t.parquet") == [
        (["New", "York"], ["B-LOC", "I-LOC"]), accounting.LABEL_MISMATCH, accounting.INVALID_RECORD, (["x"], ["O"]),
    ]
    pq.write_table(pa.table({"tokens": ["New York"], "tags": [["O"]]}), tmp_path / "s.parquet")
    with pytest.raises(InputError, match=r"column 'tokens' \(input.tokens_field\) has type string, not list of strings"):
        read(tmp_path / "s.parquet", TOKENS)


def test_parquet_dictionary_columns(tmp_path):  # what pandas categoricals become
    table = pa.table({"text": pa.array(["a", "b"]).dictionary_encode(), "label": pa.array(["x", "y"]).dictionary_encode()})
    pq.write_table(table, tmp_path / "d.parquet")
    assert outcomes(read(tmp_path / "d.parquet", TEXTS), "d.parquet") == [("a", None, "x"), ("b", None, "y")]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"text": ["a"], "y": ["b"]}, r"no column 'label' \(input.label_field\); the columns are 'text', 'y'"),
        ({"text": ["a"], "label": [0.5]}, r"column 'label' \(input.label_field\) has type double, not string or integer"),
    ],
)
def test_parquet_without_the_configured_columns(tmp_path, columns, message):
    pq.write_table(pa.table(columns), tmp_path / "c.parquet")
    with pytest.raises(InputError, match=message):
        read(tmp_path / "c.parquet", TEXTS)
    ((reason, detail),) = problems(read(tmp_path / "c.parquet", TEXTS, on_bad_file="skip"))
    assert reason == accounting.FILE_COLUMNS and re.match(message, detail)


# --------------------------------------------------------------------------------------------
# Formats, bad files


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.conll", "conll"), ("a.CoNLLu", "conll"), ("a.bio.gz", "conll"), ("a.iob.zst", "conll"),
     ("a.tsv.gz", "tsv"), ("a.csv", "csv")],
)
def test_detect_format_for_labelled_files(name, expected):
    assert detect_format(name) == expected


@pytest.mark.parametrize(
    ("name", "task", "fmt"),
    [("a.txt", TOKENS, "auto"), ("a.csv", TOKENS, "auto"), ("a.conll", TEXTS, "auto"), ("a.txt", TEXTS, "text")],
)
def test_formats_a_task_cannot_read_are_refused_at_the_call(name, task, fmt):
    with pytest.raises(ConfigError, match=f"is not a {task} format; use one of"):
        read_labelled(InputFile(f"/nowhere/{name}", name, 0), InputConfig(format=fmt), task=task, max_document_chars=10)


def test_compressed_parquet_is_refused():
    with pytest.raises(InputError, match="Parquet compresses internally"):
        read_labelled(InputFile("/x/p.parquet.gz", "p.parquet.gz", 1), InputConfig(), task=TEXTS, max_document_chars=10)


@pytest.mark.parametrize(("name", "task"), [("e.conll", TOKENS), ("e.tsv.gz", TEXTS), ("e.parquet", TEXTS)])
def test_empty_file_is_a_file_problem(tmp_path, name, task):
    (tmp_path / name).write_bytes(b"")
    items = read(tmp_path / name, task, has_header=False, text_field="1", label_field="0")
    assert [(type(i), i.reason) for i in items] == [(FileProblem, accounting.FILE_EMPTY)]


@pytest.mark.parametrize(("name", "task"), [("b.conll", TOKENS), ("b.csv", TEXTS)])
def test_binary_file_follows_the_policy(tmp_path, name, task):
    (tmp_path / name).write_bytes(b"text,label\n\x00\x01\x02")
    with pytest.raises(InputError, match=rf"{name}: binary content \(NUL byte at offset 11\), not a "
                                         rf"(CoNLL|CSV) file.*on_bad_file=skip"):
        read(tmp_path / name, task)
    assert [(type(i), i.reason) for i in read(tmp_path / name, task, on_bad_file="skip")] == [
        (FileProblem, accounting.FILE_BINARY)]


def test_truncated_gzip_keeps_the_records_before_the_damage(tmp_path):
    data = "".join(f"w{i}\tO\nx\tB-X\n\n" for i in range(20000)).encode()
    packed = gzip.compress(data, compresslevel=1)
    (tmp_path / "t.conll.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match=r"t\.conll\.gz: corrupt gzip stream \(ends early"):
        read(tmp_path / "t.conll.gz", TOKENS)
    items = read(tmp_path / "t.conll.gz", TOKENS, on_bad_file="skip")
    assert problems(items)[0][0] == accounting.FILE_CORRUPT
    kept = outcomes(items, "t.conll.gz")
    assert 0 < len(kept) < 20000
    assert kept[:-1] == [([f"w{i}", "x"], ["O", "B-X"]) for i in range(len(kept) - 1)]


def test_records_pickle_for_the_pipeline():
    for record in (TaggedSentence("a#0", ("x",), ("O",)), LabelledText("a#1", "t", None, "3")):
        assert pickle.loads(pickle.dumps(record)) == record


def test_core_modules_import_neither_beam_nor_torch():
    code = ("import sys, mlm_data.instances.labelled_rows, mlm_data.instances.tagged_rows, mlm_data.instances.text_rows, mlm_data.reading.labelled_reader, mlm_data.reading.document_reader; "
            "assert 'apache_beam' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# The real corpora (present on development machines and CI, never required)


@pytest.mark.skipif(not (LABELED / "ner_twitter_train.conll").exists(), reason="shared corpus not present")
def test_real_twitter_ner():
    items = read(LABELED / "ner_twitter_train.conll", TOKENS, max_document_chars=1_000_000)
    assert all(isinstance(i, TaggedSentence) for i in items)
    assert len(items) == 1921 and sum(len(i.words) for i in items) == 37647
    tags = {t for i in items for t in i.tags}
    kinds = ["company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product",
             "sportsteam", "tvshow"]
    assert tags == {"O"} | {f"{bio}-{k}" for bio in "BI" for k in kinds}


@pytest.mark.skipif(not (LABELED / "fortune_topics_train.tsv").exists(), reason="shared corpus not present")
def test_real_fortune_topics():
    items = read(LABELED / "fortune_topics_train.tsv", TEXTS, max_document_chars=1_000_000,
                 has_header=False, label_field="0", text_field="1")
    assert all(isinstance(i, LabelledText) for i in items) and len(items) == 12244
    labels = Counter(i.label for i in items)
    assert len(labels) == 43 and labels.most_common(2) == [("people", 985), ("definitions", 949)]
    assert sum(i.text.startswith('"') for i in items) == 895  # TSV has no quoting: kept as written
