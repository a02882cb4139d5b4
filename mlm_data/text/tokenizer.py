"""Loading, checking, training and running HF ``tokenizers`` for the pipeline.

A ``tokenizer.json`` can carry its own truncation, padding and post-processor; the pipeline
switches the first two off (it decides lengths itself) and never lets the post-processor add
special tokens (instances are assembled with explicit ids). Word boundaries come from the
tokenizer's own pre-tokenization (``word_ids``), so whole-word masking works for WordPiece,
byte-level BPE and unigram vocabularies alike.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from mlm_data import storage
from mlm_data.dataset.manifest import MANIFEST_NAME, Manifest
from mlm_data.errors import TokenizerError
from mlm_data.text.word_cache import ChunkCache

#: ``name`` or ``org/name`` of a Hugging Face Hub repository.
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")

_CANDIDATES = {
    "cls": ("[CLS]", "<s>", "<cls>"),
    "sep": ("[SEP]", "</s>", "<sep>"),
    "mask": ("[MASK]", "<mask>"),
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "eos": ("<|endoftext|>", "</s>", "[SEP]", "<eos>"),
}


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens a task needs (None where the vocabulary has none)."""

    cls: int | None
    sep: int | None
    mask: int | None
    pad: int | None
    unk: int | None
    eos: int | None

    def all_ids(self) -> tuple[int, ...]:
        return tuple(sorted({i for i in (self.cls, self.sep, self.mask, self.pad, self.unk, self.eos) if i is not None}))

    def as_dict(self) -> dict[str, int | None]:
        return {k: getattr(self, k) for k in ("cls", "sep", "mask", "pad", "unk", "eos")}


@dataclass(frozen=True)
class TokenizerInfo:
    """What the manifest records about the tokenizer a dataset was made with."""

    vocab_size: int
    special: SpecialTokens
    sha256: str

    def as_manifest(self, path: str) -> dict[str, object]:
        return {"path": path, "sha256": self.sha256, "vocab_size": self.vocab_size,
                "special_tokens": self.special.as_dict()}


def parse_tokenizer(text: str, *, source: str) -> Tokenizer:
    """Build a tokenizer from JSON text, with truncation and padding switched off."""
    try:
        json.loads(text)
    except ValueError as e:
        raise TokenizerError(f"{source}: not a tokenizer file (invalid JSON: {e}); pass a HF tokenizers "
                             "tokenizer.json, or leave tokenizer.path empty to train one") from None
    try:
        tok = Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises plain Exception subclasses with Rust messages
        raise TokenizerError(f"{source}: not a HF tokenizers file ({str(e).splitlines()[0]}); pass a "
                             "tokenizer.json saved by `tokenizers` or `transformers`") from None
    tok.no_truncation()
    tok.no_padding()
    return tok


def read_tokenizer_text(url: str, *, sha256: str | None = None, recorded_by: str = "",
                        fix: str = "restore the original file") -> str:
    """The text of the tokenizer file at ``url``; with ``sha256``, only if the file still hashes
    to what ``recorded_by`` (e.g. ``"the manifest"``, ``"the checkpoint"``) recorded for it.

    Every reader of a dataset's or a run's ``tokenizer.json`` goes through here with the hash
    it was recorded with, so a file changed after the fact is refused wherever it is read,
    instead of being copied into a run or shipped in an export.
    """
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        raise TokenizerError(f"{url}: tokenizer file not found{_hub_hint(url)}") from None
    except IsADirectoryError:
        raise TokenizerError(f"{url}: is a directory with no manifest.json or tokenizer.json; pass a tokenizer.json "
                             "file, a dataset, or a model or run folder holding a tokenizer.json") from None
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise TokenizerError(f"{url}: tokenizer checksum mismatch (sha256 {digest[:12]}…, {recorded_by or 'the record'} "
                                 f"says {sha256[:12]}…): the file changed after it was written; {fix}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenizerError(f"{url}: not a tokenizer file (binary content); pass a tokenizer.json") from None


def dataset_tokenizer_text(manifest: Manifest) -> str:
    """A dataset's ``tokenizer.json``, checked against the sha256 its manifest records."""
    return read_tokenizer_text(manifest.tokenizer_url(), sha256=manifest.tokenizer.get("sha256"),
                               recorded_by=f"the manifest of {manifest.root}",
                               fix="restore the original file or re-create the dataset")


def user_tokenizer_text(path: str) -> tuple[str, str]:
    """The tokenizer a user names with ``--tokenizer``, and where it was read from.

    ``path`` is a ``tokenizer.json`` file, a dataset (its own tokenizer, checked against the
    manifest: the way to fine-tune on the vocabulary a model was pretrained with), or a folder
    holding a ``tokenizer.json`` (a Hugging Face model directory, an mlm-train run folder).
    """
    if storage.exists(storage.join(path, MANIFEST_NAME)):
        manifest = Manifest.load(path)
        return dataset_tokenizer_text(manifest), manifest.tokenizer_url()
    inside = storage.join(path, "tokenizer.json")
    if not path.endswith(".json") and storage.exists(inside):
        return read_tokenizer_text(inside), inside
    return read_tokenizer_text(path), path


def _hub_hint(url: str) -> str:
    """What to do when ``url`` looks like a Hugging Face Hub name (``bert-base-uncased``,
    ``google-bert/bert-base-cased``) rather than a file: nothing is downloaded at run time."""
    if "://" in url or url.endswith(".json") or not _HUB_NAME.fullmatch(url):
        return ""
    return (f"; hub names are not fetched (no network at run time): on a machine with network run "
            f"python -c \"from tokenizers import Tokenizer; Tokenizer.from_pretrained('{url}').save('tokenizer.json')\" "
            "or take the tokenizer.json shipped with the model, and pass its path")


def load_tokenizer(url: str, *, sha256: str | None = None) -> Tokenizer:
    """Read and parse a tokenizer file, checking its hash when one is expected.

    Pipeline workers load the dataset's copy of the tokenizer by URL; the hash guards against
    the file changing between the driver's check and a worker's read.
    """
    text = read_tokenizer_text(url)
    if sha256 is not None and hashlib.sha256(text.encode("utf-8")).hexdigest() != sha256:
        raise TokenizerError(f"{url}: changed while the pipeline was running; run again")
    return parse_tokenizer(text, source=url)


def describe(tok: Tokenizer, text: str) -> TokenizerInfo:
    """Vocabulary size, special ids and the file hash of a parsed tokenizer."""
    def find(names: Sequence[str]) -> int | None:
        for name in names:
            i = tok.token_to_id(name)
            if i is not None:
                return i
        return None

    special = SpecialTokens(**{k: find(v) for k, v in _CANDIDATES.items()})
    return TokenizerInfo(
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        special=special,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def require_specials(info: TokenizerInfo, task: str, *, source: str) -> None:
    """Fail early when the vocabulary lacks a special token that ``task`` needs."""
    need = {
        "mlm_nsp": ("cls", "sep", "mask", "pad"),
        "mlm_fullsent": ("cls", "sep", "mask", "pad"),
        "mlm_docsent": ("cls", "sep", "mask", "pad"),
        "causal_lm": ("eos",),
        "token_classification": ("cls", "sep", "pad"),
        "sequence_classification": ("cls", "sep", "pad"),
    }[task]
    missing = [n for n in need if getattr(info.special, n) is None]
    if missing:
        names = "; ".join(f"{n}: one of {', '.join(_CANDIDATES[n])}" for n in missing)
        raise TokenizerError(f"{source}: task {task!r} needs special tokens the vocabulary lacks ({names})")


@dataclass(frozen=True)
class Encoded:
    """Many token sequences, flat: sequence ``i`` is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray          # (N,) uint32
    word_start: np.ndarray   # (N,) bool; True at the first token of each word (and of each sequence)
    offsets: np.ndarray      # (S+1,) int64


#: Joins the sentences of a document for one tokenizer call. A control character: the cleaner
#: removes those from text, and as an added special token it is matched before normalisation.
_SENTENCE_BREAK = "\x1f"


class TextEncoder:
    """Tokenizes batches of texts into flat arrays with word-start flags.

    Word starts come from the tokenizer's own word ids, which works for every model. For the
    common BERT case (a WordPiece model behind ``BertPreTokenizer``) the same flags follow from
    the ``##`` prefix alone — a piece continues a word exactly when it carries the prefix — so
    we look them up in a per-vocabulary table and use ``encode_batch_fast``, which skips word
    ids and offsets and is markedly faster. When, on top of that, the ids of a text are the
    ids of its whitespace-separated chunks (see ``mlm_data.text.word_cache``), each distinct
    chunk is tokenized once and then looked up, which is several times faster again.

    Not thread-safe (the chunk cache is per encoder): one encoder per thread.
    """

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok
        self._continuation = _wordpiece_continuation_table(tok)
        self._fast = self._continuation is not None and hasattr(tok, "encode_batch_fast")
        self._joiner: Tokenizer | None = None
        self._cache = ChunkCache.for_tokenizer(tok) if self._fast else None
        if self._fast and self._cache is None:
            # A private copy that knows the sentence break as a special token: segments between
            # special tokens are normalised and pre-tokenized independently, so a joined
            # document gives exactly the ids of its sentences encoded one by one.
            self._joiner = Tokenizer.from_str(tok.to_str())
            self._joiner.add_special_tokens([_SENTENCE_BREAK])
            self._break_id = self._joiner.token_to_id(_SENTENCE_BREAK)

    def encode(self, texts: Sequence[str]) -> Encoded:
        """One token sequence per text."""
        texts = list(texts)
        if self._cache is not None:
            ids, offsets = self._cache.encode(texts)
            return _finish(ids, ~self._continuation[ids], offsets)  # type: ignore[index]
        encs = (self.tok.encode_batch_fast if self._fast else self.tok.encode_batch)(texts, add_special_tokens=False)
        ids, offsets = _flatten([e.ids for e in encs])
        if self._fast:
            word_start = ~self._continuation[ids]  # type: ignore[index]
        else:
            word_start = _word_starts_from_word_ids([e.word_ids for e in encs], len(ids))
        return _finish(ids, word_start, offsets)

    def encode_grouped(self, groups: Sequence[Sequence[str]]) -> Encoded:
        """One token sequence per sentence, for documents given as lists of sentences.

        On the WordPiece fast path each document is one tokenizer call with its sentences
        joined by a break token, which is much cheaper than one call per sentence; the break
        tokens' positions give the sentence boundaries. The chunk cache needs no joining.
        """
        if self._cache is not None or not self._fast or any(_SENTENCE_BREAK in s for g in groups for s in g):
            return self.encode([s for g in groups for s in g])
        encs = self._joiner.encode_batch_fast(  # type: ignore[union-attr]
            [_SENTENCE_BREAK.join(g) for g in groups], add_special_tokens=False)
        joined, _ = _flatten([e.ids for e in encs])
        is_break = joined == self._break_id
        breaks = np.flatnonzero(is_break)
        n_sentences = sum(len(g) for g in groups)
        # Sentence k of the batch ends at its break, or at its document's end; documents end
        # where their encodings end (a document of n sentences holds n - 1 breaks).
        doc_ends = np.cumsum(np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs)))
        ends = np.sort(np.concatenate([breaks, doc_ends[[len(g) > 0 for g in groups]]]))
        if len(ends) != n_sentences:
            return self.encode([s for g in groups for s in g])
        ids = joined[~is_break]
        # Each break before a boundary shifts later positions left by one.
        removed_before = np.searchsorted(breaks, ends, side="left")
        offsets = np.concatenate([[0], ends - removed_before]).astype(np.int64)
        return _finish(ids, ~self._continuation[ids], offsets)  # type: ignore[index]


def _flatten(ids_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(ids_lists))
    offsets = np.zeros(len(ids_lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter(itertools.chain.from_iterable(ids_lists), dtype=np.uint32, count=int(offsets[-1]))
    return ids, offsets


def _finish(ids: np.ndarray, word_start: np.ndarray, offsets: np.ndarray) -> Encoded:
    """Every non-empty sequence starts with a word."""
    lengths = np.diff(offsets)
    word_start[offsets[:-1][lengths > 0]] = True
    return Encoded(ids=ids, word_start=word_start, offsets=offsets)


def _wordpiece_continuation_table(tok: Tokenizer) -> np.ndarray | None:
    """``table[id]`` is True for ``##`` pieces, when word starts can be read off the ids."""
    spec = json.loads(tok.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "WordPiece" or pre.get("type") != "BertPreTokenizer":
        return None
    prefix = model.get("continuing_subword_prefix") or "##"
    table = np.zeros(tok.get_vocab_size(with_added_tokens=True), dtype=bool)
    for token, i in tok.get_vocab(with_added_tokens=False).items():
        if token.startswith(prefix):
            table[i] = True
    return table


def _word_starts_from_word_ids(word_lists: list[list[int | None]], n: int) -> np.ndarray:
    try:
        words = np.fromiter(itertools.chain.from_iterable(word_lists), dtype=np.int64, count=n)
    except TypeError:  # added tokens inside the text have no word id
        words = np.fromiter(
            (-1 if w is None else w for w in itertools.chain.from_iterable(word_lists)), dtype=np.int64, count=n
        )
    word_start = np.ones(n, dtype=bool)
    if n > 1:
        np.not_equal(words[1:], words[:-1], out=word_start[1:])
        word_start[1:] |= words[1:] < 0
    return word_start


def train_wordpiece(texts: Iterable[str], *, vocab_size: int, lowercase: bool, show_progress: bool = False) -> str:
    """Train a BERT-style WordPiece tokenizer and return it as JSON text.

    The same texts in the same order give a byte-identical file. ``tokenizers`` numbers the
    ``##x`` continuation characters in hash-map order, which differs between processes and
    decides ties between equally frequent merges; we fix those ids up front by declaring every
    ``##x`` the corpus can need as a reserved token, train, then rebuild the tokenizer with
    only the real special tokens. ``show_progress`` lets ``tokenizers`` draw its own progress
    bars (for a terminal).
    """
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                            strip_accents=lowercase, lowercase=lowercase)
    docs = [normalizer.normalize_str(t) for t in texts]
    chars: set[str] = set()
    for d in docs:
        chars.update(d)
    continuations = [f"##{c}" for c in sorted(chars) if not c.isspace()]

    def build(vocab: dict[str, int] | None) -> Tokenizer:
        model = models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100,
                                 continuing_subword_prefix="##") if vocab else models.WordPiece(
                                     unk_token="[UNK]", max_input_chars_per_word=100)
        tok = Tokenizer(model)
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        return tok

    trainer_tok = build(None)
    trainer_tok.normalizer = None  # the texts are normalised already
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2,
                                        special_tokens=specials + continuations,
                                        show_progress=show_progress, continuing_subword_prefix="##")
    trainer_tok.train_from_iterator(docs, trainer=trainer)
    learned = trainer_tok.get_vocab(with_added_tokens=False)
    ordered = sorted((t for t in learned if t not in specials), key=lambda t: (learned[t], t))
    tok = build({t: i for i, t in enumerate([*specials, *ordered])})
    tok.add_special_tokens(specials)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok.to_str()


def vocab_tokens_for_random(info: TokenizerInfo) -> np.ndarray:
    """Ids a random replacement may use: the whole vocabulary minus special tokens."""
    ids = np.arange(info.vocab_size, dtype=np.int64)
    return np.setdiff1d(ids, np.asarray(info.special.all_ids(), dtype=np.int64))
