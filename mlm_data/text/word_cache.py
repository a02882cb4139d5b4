"""Tokenizing by whitespace-separated chunks, each chunk tokenized once and then looked up.

For a BERT-style tokenizer the ids of a text are the ids of its whitespace-separated chunks,
concatenated: the normaliser works character by character (lower-casing, accent stripping,
control-character removal, spaces around CJK characters), the pre-tokenizer splits at every
whitespace, and WordPiece looks at one word at a time. Natural text repeats its chunks
("the", "of", "function") so heavily that a megabyte of documentation holds ~170,000 chunks
but only ~20,000 distinct ones, most of them seen before; tokenizing only the new ones and
gathering the rest from a cache with numpy does a small fraction of the tokenizer's work, and
gives the same ids. Arrow splits the batch and finds its distinct chunks in C++, so Python
touches each distinct chunk of a batch once, never each occurrence.

That holds only when every character the split splits on is, for this tokenizer, a pure
separator. It is not so for all of them: BERT's ``clean_text`` *deletes* \\v, \\f,
\\x1c-\\x1f and U+0085 (control characters) rather than treating them as spaces, so "a\\x1cb"
is one word to BERT and two chunks to the split. ``ChunkCache.for_tokenizer`` probes the
tokenizer with every whitespace character, and texts holding one that does not separate
words take the tokenizer's own path. The cleaner turns all of those into line breaks anyway,
so in the pipeline they never reach the tokenizer.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer

from mlm_data.ragged import offsets_from_lengths, ranges_index

#: Normalisers that map each character on its own (or reorder combining marks, which never
#: cross a whitespace character), so a text normalises to its chunks' normal forms, joined.
_LOCAL_NORMALIZERS = frozenset({"BertNormalizer", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents"})
#: Pre-tokenizers that split at every whitespace character and look no further than a chunk.
_LOCAL_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
#: Joins new chunks for one tokenizer call; whitespace, so never inside a chunk.
_BREAK = "\x1f"
#: Lone surrogates cannot be UTF-8, so cannot go to Arrow; the cleaner deletes them.
_SURROGATES = "\ud800-\udfff"

#: Cache bounds: past either, the cache starts again empty. A chunk costs ~100 bytes of
#: dictionary and string, so the defaults hold it under ~30 MB per encoder.
MAX_CHUNKS = 1 << 18
MAX_CACHED_TOKENS = 1 << 21


@functools.cache
def split_characters() -> str | None:
    """The characters Arrow's ``utf8_split_whitespace`` splits on, if they are Python's.

    Checked, not assumed, once per process: a text holding every character of the Basic
    Multilingual Plane, each between two letters, must split into the same pieces with Arrow
    and with ``str.split``; None if not. (Unicode has no whitespace outside the BMP; the
    opt-in test ``test_every_code_point`` checks all of them against the tokenizer.)
    """
    every = "a".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)
    pieces = pc.utf8_split_whitespace(pa.array([every]))[0].as_py()
    if [p for p in pieces if p] != every.split():
        return None
    return "".join(re.findall(r"\s", every))


def _is_local(spec: dict | None, allowed: frozenset[str]) -> bool:
    if spec is None:
        return True
    if spec.get("type") == "Sequence":
        parts = spec.get("normalizers", spec.get("pretokenizers"))
        return isinstance(parts, list) and all(_is_local(p, allowed) for p in parts)
    return spec.get("type") in allowed


class ChunkCache:
    """Encodes texts chunk by chunk, with the same ids as ``tok.encode_batch_fast``.

    Not thread-safe: give each worker thread its own. Results never depend on what the cache
    holds, only the time taken does.
    """

    def __init__(self, tok: Tokenizer, not_separators: str, *, max_chunks: int = MAX_CHUNKS,
                 max_tokens: int = MAX_CACHED_TOKENS) -> None:
        self._tok = tok
        self._joiner = Tokenizer.from_str(tok.to_str())
        self._joiner.add_special_tokens([_BREAK])
        self._break_id = self._joiner.token_to_id(_BREAK)
        self._max_chunks = max_chunks
        self._max_tokens = max_tokens
        self._unsafe = re.compile(f"[{re.escape(not_separators)}{_SURROGATES}]")
        self._clear()

    @classmethod
    def for_tokenizer(cls, tok: Tokenizer, **bounds: int) -> ChunkCache | None:
        """A cache for ``tok``, or None when its ids are not the concatenation of its chunks'.

        Checks that truncation and padding are off, the pipeline components by type, that no
        added token holds whitespace (it would span chunks), and then probes every whitespace character ``c``: ``"a" + c + "b"`` must
        give the ids of "a" followed by those of "b", and ``c`` alone no ids. Texts holding a
        character that fails go the tokenizer's own way.
        """
        if tok.truncation is not None or tok.padding is not None:
            return None  # each chunk would be cut or padded on its own
        spec = json.loads(tok.to_str())
        if not (_is_local(spec.get("normalizer"), _LOCAL_NORMALIZERS)
                and _is_local(spec.get("pre_tokenizer"), _LOCAL_PRE_TOKENIZERS)):
            return None
        if any(not t.get("content") or any(c.isspace() for c in t["content"])
               for t in spec.get("added_tokens") or []):
            return None
        whitespace = split_characters()
        if whitespace is None:
            return None
        probes = [f"a{c}b" for c in whitespace] + list(whitespace) + ["a", "b"]
        encs = tok.encode_batch_fast(probes, add_special_tokens=False)
        n = len(whitespace)
        expected = encs[-2].ids + encs[-1].ids
        not_separators = "".join(c for i, c in enumerate(whitespace) if encs[i].ids != expected or encs[n + i].ids)
        return cls(tok, not_separators, **bounds)

    def _clear(self) -> None:
        # Slot 0: the empty chunk Arrow reports before leading and after trailing whitespace.
        self._slot: dict[str, int] = {"": 0}
        self._starts = np.zeros(1024, dtype=np.int64)
        self._lengths = np.zeros(1024, dtype=np.int64)
        self._store = np.zeros(1 << 14, dtype=np.uint32)
        self._used = 0

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of every text, flat, and offsets: text ``i`` is ``ids[offsets[i]:offsets[i+1]]``."""
        texts = list(texts)
        # One C-speed scan of the whole batch; only a hit costs a look at each text.
        if not self._unsafe.search("\n".join(texts)):
            return self._encode_chunked(texts)
        return self._encode_mixed(texts, [i for i, t in enumerate(texts) if self._unsafe.search(t)])

    def _encode_mixed(self, texts: list[str], unsafe: list[int]) -> tuple[np.ndarray, np.ndarray]:
        is_unsafe = np.zeros(len(texts), dtype=bool)
        is_unsafe[unsafe] = True
        safe_ids, safe_offsets = self._encode_chunked([t for t, u in zip(texts, is_unsafe.tolist()) if not u])
        other_ids, other_offsets = _encode_each(self._tok, [texts[i] for i in unsafe])
        lengths = np.empty(len(texts), dtype=np.int64)
        lengths[~is_unsafe] = np.diff(safe_offsets)
        lengths[is_unsafe] = np.diff(other_offsets)
        offsets = offsets_from_lengths(lengths)
        ids = np.empty(int(offsets[-1]), dtype=np.uint32)
        ids[ranges_index(offsets[:-1][~is_unsafe], lengths[~is_unsafe])] = safe_ids
        ids[ranges_index(offsets[:-1][is_unsafe], lengths[is_unsafe])] = other_ids
        return ids, offsets

    def _encode_chunked(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        lists = pc.utf8_split_whitespace(pa.array(texts, type=pa.large_string()))
        chunk_offsets = lists.offsets.to_numpy()
        encoded = pc.dictionary_encode(lists.values)
        slots = self._slots(encoded.dictionary.to_pylist())[encoded.indices.to_numpy()]
        lengths = self._lengths[slots]
        ids = self._store[ranges_index(self._starts[slots], lengths)]
        token_ends = offsets_from_lengths(lengths)
        return ids, token_ends[chunk_offsets - chunk_offsets[0]]

    def _slots(self, distinct: list[str]) -> np.ndarray:
        """Cache slots of a batch's distinct chunks, tokenizing the ones not yet cached."""
        slots = np.fromiter(map(self._slot.get, distinct, itertools.repeat(-1)), dtype=np.int64,
                            count=len(distinct))
        missing = np.flatnonzero(slots < 0).tolist()
        if missing:
            new = [distinct[i] for i in missing]
            if not self._add(new):
                self._clear()
                self._add([c for c in distinct if c])
                return np.fromiter(map(self._slot.__getitem__, distinct), dtype=np.int64, count=len(distinct))
            slots[missing] = np.arange(len(self._slot) - len(new), len(self._slot))
        return slots

    def _add(self, chunks: list[str]) -> bool:
        """Tokenize and store ``chunks``; False (nothing stored) when a bound would be passed.

        After a fresh start the cache takes every chunk of a batch, however many: a batch is
        bounded by the pipeline's batch size, and its lookups need them all.
        """
        ids, offsets = self._encode_chunks(chunks)
        first, n = len(self._slot), len(chunks)
        if first > 1 and (first + n > self._max_chunks or self._used + len(ids) > self._max_tokens):
            return False
        self._starts = _grow(self._starts, first + n)
        self._lengths = _grow(self._lengths, first + n)
        self._store = _grow(self._store, self._used + len(ids))
        self._starts[first:first + n] = offsets[:-1] + self._used
        self._lengths[first:first + n] = np.diff(offsets)
        self._store[self._used:self._used + len(ids)] = ids
        self._used += len(ids)
        self._slot.update(zip(chunks, range(first, first + n)))
        return True

    def _encode_chunks(self, chunks: list[str], per_call: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Ids of each chunk: a few long tokenizer inputs, chunks joined by a break token.

        Tokenizing each chunk as its own input costs more in per-input overhead than in
        tokenizing; segments between special tokens are tokenized independently, so a joined
        input gives each chunk's ids between the breaks.
        """
        groups = [_BREAK.join(chunks[i:i + per_call]) for i in range(0, len(chunks), per_call)]
        joined, group_offsets = _encode_each(self._joiner, groups)
        is_break = joined == self._break_id
        if int(is_break.sum()) != len(chunks) - len(groups):
            return _encode_each(self._tok, chunks)
        # A chunk ends at each break and at the end of each group.
        breaks = np.flatnonzero(is_break)
        ends = np.sort(np.concatenate([breaks, group_offsets[1:]]))
        removed_before = np.searchsorted(breaks, ends, side="left")
        return joined[~is_break], np.concatenate([[0], ends - removed_before]).astype(np.int64)


def _encode_each(tok: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _flatten([e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)])


def _grow(a: np.ndarray, size: int) -> np.ndarray:
    if size <= len(a):
        return a
    bigger = np.zeros(max(size, 2 * len(a)), dtype=a.dtype)
    bigger[:len(a)] = a
    return bigger


def _flatten(ids_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(ids_lists))
    offsets = offsets_from_lengths(lengths)
    ids = np.fromiter(itertools.chain.from_iterable(ids_lists), dtype=np.uint32, count=int(offsets[-1]))
    return ids, offsets
