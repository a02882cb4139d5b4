"""Preprocessing configuration: frozen dataclasses, one per pipeline stage, loaded from YAML.

Each field carries its default and a one-line docstring (also its ``--help`` text);
``__post_init__`` collects every problem of its section and raises them together (see
``loading.check``), and ``loading.load(PreprocessConfig, path, settings=...)`` reads it from
YAML and the command line. The resolved config is stored in the dataset manifest, so a
dataset always says how it was made.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from mlm_data.config.loading import check

Task = Literal[
    "mlm_nsp", "mlm_fullsent", "mlm_docsent", "causal_lm",
    "token_classification", "sequence_classification",
]
MiB = 1 << 20


@dataclass(frozen=True)
class InputConfig:
    paths: tuple[str, ...] = ()
    """Files, globs or fsspec URLs to read; ``--input`` on the command line replaces them."""
    format: Literal["auto", "text", "jsonl", "parquet", "conll", "csv", "tsv"] = "auto"
    """Input format; ``auto`` decides by file extension (after removing .gz/.zst)."""
    document_boundary: Literal["blank_line", "line"] = "blank_line"
    """Plain text: documents are separated by blank lines, or each line is one document."""
    text_field: str = "text"
    """JSONL key or Parquet/CSV column holding the document text."""
    on_bad_file: Literal["fail", "skip"] = "fail"
    """A binary, corrupt or unreadable file stops the run (``fail``) or is skipped and listed
    in the manifest (``skip``)."""
    text_pair_field: str | None = None
    """Sequence classification: optional second text (sentence pairs), by name or position."""
    label_field: str = "label"
    """Sequence classification: the label column (JSONL key, CSV/TSV/Parquet column name, or a
    0-based column position such as ``"0"`` for headerless CSV/TSV)."""
    has_header: bool = True
    """CSV/TSV: whether the first row names the columns (if not, fields are positions)."""
    tokens_field: str = "tokens"
    """Token classification JSONL: key of the list of words."""
    tags_field: str = "tags"
    """Token classification JSONL: key of the list of tags (one per word)."""
    conll_token_column: int = 0
    """CoNLL: 0-based column holding the word."""
    conll_label_column: int = -1
    """CoNLL: 0-based column holding the tag (-1 = last column)."""

    def __post_init__(self) -> None:
        errors = []
        if any(not isinstance(p, str) or not p for p in self.paths):
            errors.append("paths: every entry must be a non-empty string")
        for name in ("text_field", "label_field", "tokens_field", "tags_field"):
            if not getattr(self, name):
                errors.append(f"{name}: must not be empty")
        if self.conll_token_column < 0:
            errors.append(f"conll_token_column: must be >= 0, found {self.conll_token_column}")
        check(errors)


@dataclass(frozen=True)
class CleanConfig:
    unicode_normalization: Literal["NFC", "NFKC", "none"] = "NFC"
    """Unicode normal form applied to every document before anything else."""
    remove_control_chars: bool = True
    """Drop control and format characters (keeping newlines and tabs)."""
    min_document_chars: int = 1
    """Documents shorter than this after cleaning are dropped as ``document_too_short``."""
    max_document_chars: int = 4_000_000
    """Longer documents are dropped as ``document_too_long``; also bounds reader memory."""
    sentence_split: Literal["rules", "lines"] = "rules"
    """``rules``: rule-based splitter within each line; ``lines``: trust one sentence per line."""
    deduplicate: bool = True
    """Drop exact duplicate documents corpus-wide, keeping the one with the smallest id."""

    def __post_init__(self) -> None:
        errors = []
        if self.min_document_chars < 0:
            errors.append(f"min_document_chars: must be >= 0, found {self.min_document_chars}")
        if self.max_document_chars < max(1, self.min_document_chars):
            errors.append(
                f"max_document_chars: must be >= max(1, min_document_chars), found {self.max_document_chars}"
            )
        check(errors)


@dataclass(frozen=True)
class TokenizerConfig:
    path: str | None = None
    """A HF ``tokenizers`` JSON file (local or URL). When empty a WordPiece tokenizer is
    trained on the input (see the fields below) and stored in the dataset."""
    vocab_size: int = 30522
    """Training only: vocabulary size of the trained WordPiece tokenizer."""
    lowercase: bool = True
    """Training only: lowercase and strip accents (BERT uncased normalisation)."""
    train_sample_bytes: int = 512 * MiB
    """Training only: at most this much input text is used to learn the vocabulary."""

    def __post_init__(self) -> None:
        errors = []
        if not 100 <= self.vocab_size <= 1 << 24:
            errors.append(f"vocab_size: must be between 100 and 16777216, found {self.vocab_size}")
        if self.train_sample_bytes < 1:
            errors.append(f"train_sample_bytes: must be positive, found {self.train_sample_bytes}")
        check(errors)


@dataclass(frozen=True)
class InstanceConfig:
    task: Task = "mlm_nsp"
    """What rows to build: BERT pairs with NSP, RoBERTa full-/doc-sentence packing, causal
    LM blocks, or labelled classification examples."""
    max_seq_length: int = 128
    """Tokens per row including special tokens (the block size for causal LM)."""
    short_seq_prob: float = 0.1
    """``mlm_nsp``: probability of a shorter random target length (as Google's script)."""
    random_next_prob: float = 0.5
    """``mlm_nsp``: probability that segment B comes from another document."""
    dupe_factor: int = 1
    """How many times each document is turned into instances (with different random pairs
    and static masks). Keep 1 with dynamic masking."""

    def __post_init__(self) -> None:
        errors = []
        low = 8 if self.task == "mlm_nsp" else 4
        if not low <= self.max_seq_length <= 65535:
            errors.append(f"max_seq_length: must be between {low} and 65535, found {self.max_seq_length}")
        for name in ("short_seq_prob", "random_next_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                errors.append(f"{name}: must be between 0 and 1, found {v}")
        if self.dupe_factor < 1:
            errors.append(f"dupe_factor: must be >= 1, found {self.dupe_factor}")
        check(errors)


@dataclass(frozen=True)
class MaskingConfig:
    """Masked-language-model corruption, shared by static (pipeline) and dynamic (loader) masking."""

    probability: float = 0.15
    """Fraction of a row's maskable tokens (special tokens and padding are not) chosen for
    prediction: ``round(probability x maskable)``, at least 1, at most ``max_predictions``."""
    mask_token_fraction: float = 0.8
    """Of the chosen tokens, the share replaced by the mask token."""
    random_token_fraction: float = 0.1
    """Of the chosen tokens, the share replaced by a random token (the rest stay unchanged)."""
    whole_word: bool = False
    """Choose whole words: all tokens of a word are chosen together."""
    span: bool = False
    """SpanBERT-style: choose contiguous spans of whole words with geometric lengths."""
    span_geometric_p: float = 0.2
    """Span masking: parameter of the geometric span-length distribution (in words)."""
    max_span_length: int = 10
    """Span masking: longest span in words."""
    max_predictions: int | None = None
    """Upper bound of chosen tokens per sequence (Google's ``max_predictions_per_seq``)."""

    def __post_init__(self) -> None:
        errors = []
        if not 0.0 < self.probability < 1.0:
            errors.append(f"probability: must be strictly between 0 and 1, found {self.probability}")
        for name in ("mask_token_fraction", "random_token_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                errors.append(f"{name}: must be between 0 and 1, found {v}")
        if self.mask_token_fraction + self.random_token_fraction > 1.0 + 1e-9:
            errors.append(
                "mask_token_fraction + random_token_fraction: must be <= 1, found "
                f"{self.mask_token_fraction + self.random_token_fraction}"
            )
        if not 0.0 < self.span_geometric_p <= 1.0:
            errors.append(f"span_geometric_p: must be in (0, 1], found {self.span_geometric_p}")
        if self.max_span_length < 1:
            errors.append(f"max_span_length: must be >= 1, found {self.max_span_length}")
        if self.max_predictions is not None and self.max_predictions < 1:
            errors.append(f"max_predictions: must be >= 1 or null, found {self.max_predictions}")
        check(errors)


@dataclass(frozen=True)
class StaticMaskingConfig(MaskingConfig):
    enabled: bool = False
    """Mask in the pipeline and store the result (Google's original recipe). Off by default:
    store clean ids and let the loader mask dynamically, differently every epoch."""


@dataclass(frozen=True)
class LabelsConfig:
    """Label vocabulary and alignment for the classification tasks."""

    names: tuple[str, ...] | None = None
    """Fixed label list (its order gives the ids); empty = collect the labels seen in the input."""
    from_dataset: str | None = None
    """Reuse the label list of an existing dataset (``--labels-from``), so dev/test ids match train."""
    label_all_subtokens: bool = False
    """Token classification: label every sub-token of a word, not only the first."""
    stride: int = 32
    """Token classification: tokens of context repeated (unlabelled) at the start of the next
    window when a sentence is longer than ``max_seq_length``."""

    def __post_init__(self) -> None:
        errors = []
        if self.names is not None and len(set(self.names)) != len(self.names):
            errors.append("names: labels must be unique")
        if self.names is not None and self.from_dataset:
            errors.append("names and from_dataset: give one or the other")
        if self.stride < 0:
            errors.append(f"stride: must be >= 0, found {self.stride}")
        check(errors)


@dataclass(frozen=True)
class OutputConfig:
    path: str | None = None
    """Dataset directory or URL prefix; ``--output`` on the command line replaces it."""
    num_buckets: int = 0
    """Documents are hashed into this many buckets, each written as its own shard(s); 0 picks
    a number from the input size so that a bucket makes about one shard of the target size."""
    target_shard_bytes: int = 128 * MiB
    """A bucket's rows are split into shards of about this size (the last shard of a bucket
    may be smaller). Streamed to disk: it does not change memory."""
    bucket_memory_mb: int = 256
    """Memory for making one bucket's rows: a bucket is processed in windows of about
    ``bucket_memory_mb * 2**20 / (32 * instances.dupe_factor)`` tokens (8.4 M at 256), so the
    peak of that stage depends on this knob, not on the corpus, the bucket or the shard size.
    Each worker process adds its own base (~0.35 GB); on Dataflow count one window per harness
    thread."""
    validation_fraction: float = 0.0
    """Share of documents (by stable hash) set aside as a ``validation`` split."""
    overwrite: bool = False
    """Replace an existing dataset at the output path (its manifest is removed first)."""
    ipc_format: Literal["stream", "file"] = "stream"
    """Arrow IPC framing of the shards: ``stream`` (what HF ``datasets.Dataset.from_file``
    needs) or ``file`` (Feather v2: what ``pyarrow.dataset``, polars ``scan_ipc``, pandas
    ``read_feather`` and DuckDB read). The project's own readers take both."""

    def __post_init__(self) -> None:
        errors = []
        if self.num_buckets < 0:
            errors.append(f"num_buckets: must be >= 0 (0 = automatic), found {self.num_buckets}")
        if self.target_shard_bytes < 4096:
            errors.append(f"target_shard_bytes: must be at least 4096, found {self.target_shard_bytes}")
        if self.bucket_memory_mb < 1:
            errors.append(f"bucket_memory_mb: must be at least 1, found {self.bucket_memory_mb}")
        if not 0.0 <= self.validation_fraction < 1.0:
            errors.append(f"validation_fraction: must be in [0, 1), found {self.validation_fraction}")
        check(errors)


@dataclass(frozen=True)
class DedupConfig:
    """Near-duplicate removal with MinHash LSH (``mlm_data/quality``); exact de-duplication
    stays ``clean.deduplicate``. Off by default."""

    near_duplicates: bool = False
    """Drop documents whose word n-gram sets overlap another document's by at least
    ``jaccard_threshold``; in each group of near-duplicates the smallest id is kept and the
    others are counted as ``near_duplicate`` (or ``duplicate`` when identical to the kept one)."""
    jaccard_threshold: float = 0.8
    """Estimated Jaccard similarity of two documents' shingle sets above which they are
    near-duplicates. With 5-word shingles, 1 % of words changed gives about 0.91, 2 % about
    0.82, 5 % about 0.63: lower it to about 0.5 to catch copies with 5 % of words edited."""
    ngram: int = 5
    """Shingle size in words (after lowercasing and removing punctuation)."""
    num_perm: int = 128
    """MinHash signature length (one-permutation hashing: bins, each a signature position);
    more estimates Jaccard more exactly and costs more LSH bands."""
    bands: int = 0
    """LSH bands; 0 = chosen with ``rows`` from the threshold (the split of ``num_perm`` that
    minimises the false-candidate area under the LSH S-curve plus four times the missed-pair
    area, ``minhash.lsh_params``)."""
    rows: int = 0
    """LSH rows per band (``bands * rows <= num_perm``); 0 = chosen with ``bands``."""
    max_rounds: int = 8
    """Rounds of the connected-components step (each two shuffles of the similarity edges).
    Components that would need more rounds keep more than one document, never fewer."""
    write_clusters: str | None = None
    """Debug: write ``{"id", "kept", "reason"}`` for every dropped document to this JSONL file."""

    def __post_init__(self) -> None:
        errors = []
        if not 0.0 < self.jaccard_threshold <= 1.0:
            errors.append(f"jaccard_threshold: must be in (0, 1], found {self.jaccard_threshold}")
        if not 1 <= self.ngram <= 32:
            errors.append(f"ngram: must be between 1 and 32, found {self.ngram}")
        if not 8 <= self.num_perm <= 1024:
            errors.append(f"num_perm: must be between 8 and 1024, found {self.num_perm}")
        if (self.bands == 0) != (self.rows == 0):
            errors.append(f"bands and rows: give both or neither (0 = automatic), found {self.bands} and {self.rows}")
        elif self.bands < 0 or self.rows < 0 or self.bands * self.rows > self.num_perm:
            errors.append(f"bands * rows: must be positive and at most num_perm ({self.num_perm}), "
                          f"found {self.bands} * {self.rows}")
        if not 1 <= self.max_rounds <= 64:
            errors.append(f"max_rounds: must be between 1 and 64, found {self.max_rounds}")
        check(errors)


@dataclass(frozen=True)
class FilterConfig:
    """Rule-based quality filters (``mlm_data/quality/filters.py``), each off until given a
    value. A dropped document is counted as ``filter.<field>`` for the first rule it fails, in
    the order below. Words are whitespace-separated tokens; the n-gram rules use lowercased
    words without punctuation; lines are the document's lines after cleaning; paragraphs are
    blank-line-separated blocks of the input text."""

    min_words: int | None = None
    """Fewer words than this: dropped."""
    max_words: int | None = None
    """More words than this: dropped."""
    min_mean_word_length: float | None = None
    """Mean word length (characters) below this: dropped (Gopher: 3)."""
    max_mean_word_length: float | None = None
    """Mean word length above this: dropped (Gopher: 10)."""
    min_alpha_fraction: float | None = None
    """Share of non-space characters that are letters below this: dropped."""
    max_symbol_fraction: float | None = None
    """Share of non-space characters that are not letters, digits, marks or prose punctuation
    (``# { } < > | \\ _ [ ] * ^ ~ = +``, symbols, emoji) above this: dropped."""
    min_lines_ending_in_punctuation: float | None = None
    """Share of lines ending in terminal punctuation (. ! ? : ; … or a closing quote or
    bracket after one) below this: dropped."""
    max_duplicate_line_fraction: float | None = None
    """Share of lines that repeat an earlier line of the document above this: dropped (Gopher: 0.3)."""
    max_duplicate_line_char_fraction: float | None = None
    """Share of characters in repeated lines above this: dropped (Gopher: 0.2)."""
    max_duplicate_paragraph_fraction: float | None = None
    """Share of paragraphs that repeat an earlier one above this: dropped (Gopher: 0.3)."""
    max_duplicate_paragraph_char_fraction: float | None = None
    """Share of characters in repeated paragraphs above this: dropped (Gopher: 0.2)."""
    max_top_ngram_char_fraction: dict[int, float] = field(default_factory=dict)
    """``{n: limit}``: share of word characters covered by the most repeated n-gram above the
    limit: dropped (Gopher: ``{2: 0.2, 3: 0.18, 4: 0.16}``)."""
    max_duplicate_ngram_char_fraction: dict[int, float] = field(default_factory=dict)
    """``{n: limit}``: share of word characters inside n-grams that occur earlier in the
    document above the limit: dropped (Gopher: ``{5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.1}``)."""
    min_stop_words: int | None = None
    """Fewer occurrences of common English function words (a built-in list of 34) than this:
    dropped (Gopher: 2 of its 8)."""
    languages: tuple[str, ...] = ()
    """ISO 639-1 codes (``[en]``): documents whose most likely language (py3langid, whose
    model ships inside the package) is another, or below ``min_language_score``, are dropped."""
    min_language_score: float = 0.5
    """Language rule: the lowest accepted probability of the detected language."""
    language_sample_chars: int = 2000
    """Language rule: characters from the start of the document that are classified (the
    detector walks text byte by byte in Python, about 1.5 µs per byte)."""

    def __post_init__(self) -> None:
        errors = []
        for name in ("min_words", "max_words", "min_stop_words"):
            v = getattr(self, name)
            if v is not None and v < 0:
                errors.append(f"{name}: must be >= 0 or null, found {v}")
        for name in ("min_alpha_fraction", "max_symbol_fraction", "min_lines_ending_in_punctuation",
                     "max_duplicate_line_fraction", "max_duplicate_line_char_fraction",
                     "max_duplicate_paragraph_fraction", "max_duplicate_paragraph_char_fraction"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                errors.append(f"{name}: must be between 0 and 1 or null, found {v}")
        for name in ("min_mean_word_length", "max_mean_word_length"):
            v = getattr(self, name)
            if v is not None and v < 0:
                errors.append(f"{name}: must be >= 0 or null, found {v}")
        for name in ("max_top_ngram_char_fraction", "max_duplicate_ngram_char_fraction"):
            normal: dict[int, float] = {}
            for k, v in getattr(self, name).items():
                n = int(k) if isinstance(k, int) or (isinstance(k, str) and k.isdigit()) else -1
                if not 1 <= n <= 32:
                    errors.append(f"{name}: keys are n-gram sizes between 1 and 32, found {k!r}")
                elif not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                    errors.append(f"{name}.{k}: must be a number between 0 and 1, found {v!r}")
                else:
                    normal[n] = float(v)
            object.__setattr__(self, name, dict(sorted(normal.items())))
        if not 0.0 <= self.min_language_score <= 1.0:
            errors.append(f"min_language_score: must be between 0 and 1, found {self.min_language_score}")
        if self.language_sample_chars < 1:
            errors.append(f"language_sample_chars: must be positive, found {self.language_sample_chars}")
        if self.languages:
            from mlm_data.quality.language import language_problems

            errors.extend(language_problems(self.languages))
        check(errors)

    def enabled(self) -> bool:
        """Whether any rule is on."""
        return any(getattr(self, f.name) not in (None, (), {}) for f in fields(self)
                   if f.name not in ("min_language_score", "language_sample_chars"))


@dataclass(frozen=True)
class PreprocessConfig:
    seed: int = 12345
    """Root of every random choice; the same input, config and seed give identical bytes."""
    input: InputConfig = field(default_factory=InputConfig)
    """Where the text comes from and how to read it."""
    clean: CleanConfig = field(default_factory=CleanConfig)
    """Normalisation, length filters, sentence splitting and de-duplication."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """Which tokenizer to use, or how to train one."""
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    """How token streams become training rows."""
    masking: StaticMaskingConfig = field(default_factory=StaticMaskingConfig)
    """Optional static masking in the pipeline."""
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    """Label vocabulary and alignment (token and sequence classification)."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Where and how shards are written."""
    filters: FilterConfig = field(default_factory=FilterConfig)
    """Rule-based quality filters, all off by default (run after cleaning, before near-dedup)."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Near-duplicate removal (MinHash LSH), off by default."""

    def __post_init__(self) -> None:
        errors = []
        if self.masking.enabled and self.instances.task not in ("mlm_nsp", "mlm_fullsent", "mlm_docsent"):
            errors.append(f"masking.enabled: static masking applies to MLM tasks, not {self.instances.task!r}")
        if self.instances.task == "token_classification" and self.labels.stride >= self.instances.max_seq_length - 2:
            errors.append(f"labels.stride: must be below max_seq_length - 2, found {self.labels.stride}")
        if self.instances.task in ("token_classification", "sequence_classification"):
            if self.dedup.near_duplicates:
                errors.append("dedup.near_duplicates: applies to text corpora, not to labelled data "
                              f"(task {self.instances.task!r})")
            if self.filters.enabled():
                errors.append(f"filters: apply to text corpora, not to labelled data (task {self.instances.task!r})")
        check(errors)

    def require_paths(self, *, source: str) -> None:
        """Raise unless input and output are set (they may come from the command line)."""
        from mlm_data.errors import ConfigError

        missing = []
        if not self.input.paths:
            missing.append("input.paths (or --input)")
        if not self.output.path:
            missing.append("output.path (or --output)")
        if missing:
            raise ConfigError(f"{source}: missing {' and '.join(missing)}")
