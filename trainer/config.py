"""Training configuration: frozen dataclasses in three sections, loaded from YAML like the pipeline's.

``model`` says what network to build, ``train`` how to optimise it, ``data`` what to feed it;
``output`` is the run folder and ``init`` the weights to start from. Pretraining and
fine-tuning share it: the dataset's task decides the network (see ``ModelConfig.task``).
Every field has a default and a one-line docstring (which is also its ``--help`` text),
``__post_init__`` collects every problem of its section, and ``mlm_data.config.loading`` does
the YAML reading, ``--set`` overrides and error reporting, so a bad value is reported with the
file and the dotted field path like any other config error.

Fields that only the dataset knows (``model.vocab_size``, ``model.nsp_head``, ``model.task``,
``model.num_labels``) stay ``null`` in YAML and are filled in by ``resolve_for_dataset``; so are
``train.epochs`` and ``train.warmup_fraction``, turned into steps once the number of rows is
known. The resolved config is what a run folder and its checkpoints record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, get_args

from mlm_data.config.loading import check
from mlm_data.config.preprocess import MaskingConfig
from mlm_data.dataset.schema import LABELLED_TASKS, MLM_TASKS, TASKS
from mlm_data.errors import ConfigError
from trainer.loading.options import LoaderOptions

Task = Literal["mlm_nsp", "mlm_fullsent", "mlm_docsent", "causal_lm", "token_classification",
               "sequence_classification"]
assert get_args(Task) == TASKS, "ModelConfig.task must list mlm_data.dataset.schema.TASKS"


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int | None = None
    """Embedding rows; null = the dataset tokenizer's vocabulary size (a set value must be at least that)."""
    hidden_size: int = 768
    """Width of every token vector (H)."""
    num_layers: int = 12
    """Encoder blocks."""
    num_heads: int = 12
    """Attention heads per block; must divide hidden_size."""
    intermediate_size: int = 3072
    """Width of the feed-forward layer inside each block."""
    max_position_embeddings: int = 512
    """Learned positions; must cover the dataset's max_seq_length."""
    type_vocab_size: int = 2
    """Token types (segments A and B)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention output and feed-forward output."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities."""
    layer_norm: Literal["post", "pre"] = "post"
    """``post``: LayerNorm after each residual add (BERT); ``pre``: before each sublayer (GPT-2, more stable when deep)."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon (BERT's value)."""
    activation: Literal["gelu", "gelu_tanh"] = "gelu"
    """Feed-forward and MLM-head activation: exact erf GELU (BERT) or its tanh approximation."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initialisation of weights and embeddings (BERT's 0.02)."""
    nsp_head: bool | None = None
    """Next-sentence-prediction head on a tanh pooler; null = when the dataset's task is mlm_nsp."""
    task: Task | None = None
    """What the network is for (MLM tasks: encoder + MLM head; causal_lm: decoder; *_classification: encoder + classifier); null = the dataset's task."""
    num_labels: int | None = None
    """Classifier outputs for the *_classification tasks; null = the dataset's label count."""
    document_attention: bool = False
    """causal_lm: attend only within the row's own document and restart positions at each document start."""

    def __post_init__(self) -> None:
        errors = []
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1:
                errors.append(f"{name}: must be >= 1, found {getattr(self, name)}")
        for name in ("vocab_size", "num_labels"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                errors.append(f"{name}: must be >= 1 or null, found {getattr(self, name)}")
        if self.num_heads >= 1 and self.hidden_size % self.num_heads:
            errors.append(f"num_heads: must divide hidden_size {self.hidden_size}, found {self.num_heads}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                errors.append(f"{name}: must be in [0, 1), found {getattr(self, name)}")
        if self.layer_norm_eps <= 0 or self.initializer_range <= 0:
            errors.append("layer_norm_eps and initializer_range: must be > 0")
        check(errors)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1234
    """Root of model initialisation and per-step dropout seeds; the loader shuffles and masks from it too."""
    batch_size: int = 32
    """Rows per micro-batch on each rank (global batch = batch_size x grad_accum x ranks)."""
    grad_accum: int = 1
    """Micro-batches whose gradients are summed before each optimizer step."""
    max_steps: int = 1000
    """Optimizer steps to train for (a resumed run may raise it)."""
    epochs: float | None = None
    """Train for this many passes over the training rows instead (sets max_steps); null = use max_steps."""
    lr: float = 1e-4
    """Peak learning rate, reached at the end of warmup."""
    min_lr: float = 0.0
    """Learning rate at max_steps."""
    warmup_steps: int = 0
    """Steps of linear warmup from lr/warmup_steps to lr."""
    warmup_fraction: float | None = None
    """Warmup as a fraction of max_steps instead (sets warmup_steps); null = use warmup_steps."""
    schedule: Literal["linear", "cosine"] = "linear"
    """Decay from lr to min_lr after warmup."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay, not applied to biases and LayerNorm weights."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)."""
    eps: float = 1e-6
    """AdamW epsilon."""
    clip_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value; null = no clipping."""
    precision: Literal["auto", "fp32", "bf16", "bf16-master"] = "auto"
    """``bf16``: bf16 autocast over fp32 weights; ``bf16-master``: bf16 weights, fp32 master copies in the optimizer (no casts in the step); ``auto``: bf16 on CUDA devices that support it, fp32 elsewhere."""
    compile: bool = False
    """Run the model through torch.compile (faster on GPUs; first steps are slow)."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    """torch.compile mode: ``reduce-overhead`` and ``max-autotune`` replay CUDA graphs (best with static_shapes)."""
    static_shapes: bool = False
    """Pad every batch to the dataset's max_seq_length and score a fixed number of MLM predictions: the same tensor shapes every step, which CUDA graphs need."""
    sync_free: bool = False
    """MLM: score the masked positions through a padded gather built on the host, not a boolean index that makes the host wait for the device every step (implied by static_shapes and unpad)."""
    unpad: bool = False
    """MLM: drop the padding before the encoder and attend within each row through variable-length attention (MosaicBERT's unpadding)."""
    tensorboard: bool | None = None
    """Write TensorBoard event files beside metrics.jsonl; null = when the tensorboard package is installed."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: the local CUDA device when there is one, else the CPU."""
    log_every: int = 10
    """Write a metrics.jsonl record and a progress line every this many steps."""
    eval_every: int = 500
    """Evaluate on the validation split every this many steps (0 = only at the end)."""
    eval_batches: int | None = 50
    """Batches per rank in each evaluation; null = the whole validation split."""
    save_every: int = 1000
    """Write a checkpoint every this many steps (0 = only at the end)."""
    keep_last: int = 3
    """Checkpoints to keep; older ones are deleted once a newer one is complete."""

    #: Fields that say one thing two ways. ``loading.load`` keeps the one given last (a flag
    #: beats the file, the file beats the defaults) and refuses both from the same place.
    ALTERNATIVES: ClassVar[tuple[tuple[str, str], ...]] = (("max_steps", "epochs"), ("warmup_steps", "warmup_fraction"))

    def __post_init__(self) -> None:
        errors = []
        for name in ("batch_size", "grad_accum", "max_steps", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                errors.append(f"{name}: must be >= 1, found {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                errors.append(f"{name}: must be >= 0, found {getattr(self, name)}")
        if self.eval_batches is not None and self.eval_batches < 1:
            errors.append(f"eval_batches: must be >= 1 or null, found {self.eval_batches}")
        if self.epochs is not None and not self.epochs > 0:
            errors.append(f"epochs: must be > 0 or null, found {self.epochs}")
        if self.warmup_fraction is not None and not 0.0 <= self.warmup_fraction < 1.0:
            errors.append(f"warmup_fraction: must be in [0, 1) or null, found {self.warmup_fraction}")
        if self.warmup_fraction is not None and self.warmup_steps:
            errors.append(f"warmup_fraction: give it or warmup_steps, not both (found {self.warmup_fraction} and "
                          f"{self.warmup_steps}); set warmup_steps to 0 or warmup_fraction to null")
        if self.lr <= 0:
            errors.append(f"lr: must be > 0, found {self.lr}")
        if not 0.0 <= self.min_lr <= self.lr:
            errors.append(f"min_lr: must be between 0 and lr ({self.lr}), found {self.min_lr}")
        if self.weight_decay < 0:
            errors.append(f"weight_decay: must be >= 0, found {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            errors.append(f"betas: must be two numbers in [0, 1), found {list(self.betas)}")
        if self.eps <= 0:
            errors.append(f"eps: must be > 0, found {self.eps}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            errors.append(f"clip_grad_norm: must be > 0 or null, found {self.clip_grad_norm}")
        if self.compile_mode != "default" and not self.compile:
            errors.append(f"compile_mode: {self.compile_mode!r} takes effect only with compile: true")
        if self.unpad and self.static_shapes:
            errors.append("unpad: drops the padding that static_shapes adds; set one of them to false")
        check(errors)


@dataclass(frozen=True)
class DataConfig(LoaderOptions):
    """The datasets a run reads, and how its loaders read them: every ``LoaderOptions`` field
    (``num_workers``, ``cache_dir``, ``masking``, ...) is a field of this section too, so the
    section is passed whole to the loaders. A run always masks: ``masking`` is never null here."""

    sources: tuple[str, ...] = ()
    """Datasets (directories or URLs) to mix, each ``path``, ``path:weight`` or, in YAML,
    ``{path: ..., weight: ...}``; a list given as ``data:`` itself means these. --data replaces them."""
    eval_sources: tuple[str, ...] = ()
    """Datasets to evaluate on instead of the sources' eval_split (their eval_split, or their only split); --eval-data replaces them."""
    eval_split: str = "validation"
    """Held-out split used for evaluation; a dataset without it is trained without evaluation."""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """Dynamic masking applied by the loader (ignored for statically masked datasets and for non-MLM tasks)."""

    @staticmethod
    def expand_shorthand(value: Any, path: str, errors: list[str]) -> Any:
        """Accept the mixture written as YAML mappings, ``data: [{path: a, weight: 0.7}, ...]``
        or under ``data.sources``, by turning each entry into the ``path:weight`` text of the
        CLI. A path that itself ends in ``:<number>`` keeps it: the weight is always the last
        suffix. (Called by ``loading.load`` on each layer, before the layers are merged.)"""
        if isinstance(value, list):
            value = {"sources": value}
        if not isinstance(value, dict):
            return value
        value = dict(value)
        for name in ("sources", "eval_sources"):
            entries = value.get(name)
            if not isinstance(entries, list):
                continue
            value[name] = []  # a malformed entry is reported here once, not again by the type check
            for i, entry in enumerate(entries):
                if isinstance(entry, dict):
                    weight = entry.get("weight", 1.0)
                    if sorted(set(entry) - {"path", "weight"}) or not isinstance(entry.get("path"), str):
                        errors.append(f"{path}{name}[{i}]: expected {{path: DATASET, weight: NUMBER}}, found {entry!r}")
                        continue
                    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                        errors.append(f"{path}{name}[{i}].weight: expected a number, found {weight!r}")
                        continue
                    entry = f"{entry['path']}:{float(weight)!r}"
                value[name].append(entry)
        return value

    def problems(self) -> list[str]:
        errors = super().problems()
        for name in ("sources", "eval_sources"):
            for s in getattr(self, name):
                try:
                    parse_source(s)
                except ConfigError as e:
                    errors.append(f"{name}: {str(e).removeprefix('mlm-data error: ')}")
        if not self.eval_split:
            errors.append("eval_split: must not be empty")
        return errors


@dataclass(frozen=True)
class PretrainConfig:
    """A training run's configuration: ``mlm-train pretrain`` and ``mlm-train finetune`` alike."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, precision, logging, evaluation and checkpoint cadence."""
    data: DataConfig = field(default_factory=DataConfig)
    """Datasets and how the loader reads them."""
    output: str | None = None
    """Run folder or URL (config, metrics.jsonl, checkpoints, plot); --output replaces it."""
    init: str | None = None
    """Start from these weights: a run folder, a checkpoint file or a Hugging Face BERT directory; null = random."""


#: Fine-tuning defaults, under any --config: a few epochs at a small learning rate with 10%
#: warmup (BERT's GLUE recipe), evaluation and a checkpoint only at the end, the whole
#: evaluation split (entity F1 needs whole sentences). ``configs/train/finetune-*.yaml`` are
#: the full, commented recipes.
FINETUNE_DEFAULTS: dict[str, Any] = {
    "train": {"epochs": 3.0, "lr": 5e-5, "warmup_fraction": 0.1, "batch_size": 16, "eval_every": 0,
              "eval_batches": None, "save_every": 0, "keep_last": 1, "log_every": 20},
}


def parse_source(text: str) -> tuple[str, float]:
    """Split ``path:weight`` into its parts; a path without a numeric suffix has weight 1.

    >>> parse_source("out/a:0.25"), parse_source("s3://bucket/ds"), parse_source("memory://ds:3")
    (('out/a', 0.25), ('s3://bucket/ds', 1.0), ('memory://ds', 3.0))
    """
    path, sep, tail = text.rpartition(":")
    weight = 1.0
    if sep and path and not path.endswith(":"):
        try:
            weight = float(tail)
        except ValueError:
            path = text
    else:
        path = text
    if not path:
        raise ConfigError(f"data source {text!r} has no path")
    if not weight > 0:
        raise ConfigError(f"data source {text!r}: weight must be > 0, found {weight}")
    return path, weight


def resolve_for_dataset(cfg: PretrainConfig, *, vocab_size: int, task: str, max_seq_length: int,
                        source: str, num_labels: int | None = None) -> PretrainConfig:
    """Fill the fields only the dataset knows and check the model can read its rows."""
    m = cfg.model
    errors = []
    if m.task is not None and m.task != task:
        errors.append(f"model.task: {m.task!r}, but the dataset's task is {task!r}")
    if task in LABELLED_TASKS and not num_labels:
        errors.append(f"the dataset has task {task!r} but no labels in its manifest")
    elif m.num_labels is not None and num_labels is not None and m.num_labels != num_labels:
        errors.append(f"model.num_labels: {m.num_labels}, but the dataset has {num_labels} labels")
    if m.vocab_size is not None and m.vocab_size < vocab_size:
        errors.append(f"model.vocab_size: {m.vocab_size} is smaller than the dataset vocabulary ({vocab_size})")
    if m.max_position_embeddings < max_seq_length:
        errors.append(f"model.max_position_embeddings: {m.max_position_embeddings} is smaller than the "
                      f"dataset max_seq_length ({max_seq_length})")
    if m.nsp_head and task != "mlm_nsp":
        errors.append(f"model.nsp_head: the dataset task {task!r} has no next-sentence labels")
    if m.document_attention and task != "causal_lm":
        errors.append(f"model.document_attention: only for causal_lm datasets, this one is {task!r}")
    for name in ("unpad", "sync_free"):
        if getattr(cfg.train, name) and task not in MLM_TASKS:
            errors.append(f"train.{name}: only for MLM pretraining (tasks {', '.join(MLM_TASKS)}), this dataset is {task!r}")
    if errors:
        raise ConfigError(f"{source}: the config does not fit the dataset:\n" + "\n".join(f"  - {e}" for e in errors))
    model = replace(m, vocab_size=m.vocab_size or vocab_size, task=task,
                    num_labels=num_labels if task in LABELLED_TASKS else None,
                    nsp_head=(task == "mlm_nsp") if m.nsp_head is None else m.nsp_head)
    return replace(cfg, model=model)


def resolve_steps(cfg: PretrainConfig, *, steps_per_epoch: int) -> PretrainConfig:
    """Turn ``train.epochs`` and ``train.warmup_fraction`` into steps, once the loader knows
    how many batches an epoch holds; the result names steps only, so a resumed run reads the
    same numbers back (and a new ``--epochs`` on resume only moves max_steps).

    >>> t = resolve_steps(PretrainConfig(train=TrainConfig(epochs=2.5, warmup_fraction=0.1, grad_accum=2)),
    ...                   steps_per_epoch=95).train
    >>> (t.max_steps, t.warmup_steps, t.epochs, t.warmup_fraction)
    (119, 12, None, None)
    """
    t = cfg.train
    max_steps = t.max_steps if t.epochs is None else max(1, math.ceil(t.epochs * steps_per_epoch / t.grad_accum))
    warmup = t.warmup_steps if t.warmup_fraction is None else round(t.warmup_fraction * max_steps)
    return replace(cfg, train=replace(t, max_steps=max_steps, warmup_steps=warmup, epochs=None,
                                      warmup_fraction=None))


#: Fields a resumed run may change: logging, evaluation and checkpoint cadence, loader
#: resources, and the length of the run (a longer run stretches the rest of a decaying
#: learning-rate schedule; everything else a step computes stays as it was).
#: ``data.sources`` may name the same datasets at another place: the loader checks that the
#: shards, tokenizer and weights are the ones its saved state was made from. ``init`` was
#: read once, at step 0; ``data.eval_sources`` changes what is measured, not what is trained.
RESUMABLE_CHANGES = frozenset({
    "train.max_steps", "train.log_every", "train.eval_every", "train.eval_batches",
    "train.save_every", "train.keep_last", "train.compile", "train.compile_mode", "train.tensorboard",
    "data.sources", "data.eval_sources", "data.num_workers", "data.prefetch_shards", "data.cache_dir",
    "data.max_cache_bytes", "data.fuse_batches", "output", "init",
})


def check_resume_compatible(saved: dict[str, Any], now: dict[str, Any], *, source: str) -> None:
    """Refuse a resume whose config differs from the checkpoint's in anything but ``RESUMABLE_CHANGES``."""
    old, new = _leaves(saved), _leaves(now)
    diffs = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a != b and path not in RESUMABLE_CHANGES:
            diffs.append(f"{path}: the checkpoint has {a!r}, this command gives {b!r}")
    if diffs:
        allowed = ", ".join(sorted(RESUMABLE_CHANGES))
        raise ConfigError(f"{source}: cannot resume with a different configuration:\n"
                          + "\n".join(f"  - {d}" for d in diffs)
                          + f"\n  (only these may change on resume: {allowed})")


def _leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: list(d) if isinstance(d, tuple) else d}
