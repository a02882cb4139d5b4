"""``--init``: start a run from trained weights instead of random ones.

The weights come from one of our checkpoints (a run folder or a ``.pt`` file) or from a Hugging
Face BERT directory (``trainer.models.hf_interop``). Only weights are taken: the optimizer, the step and the
loader start afresh, so the same mechanism serves fine-tuning a pretrained encoder and
continued (domain-adaptive) pretraining on a new dataset.

Three rules make a warm start safe:

* the network's shape (sizes, LayerNorm placement, activation, vocabulary) is the init's, so
  these fields of the run's config are replaced; dropout and everything else stay the run's;
* token ids must mean the same tokens: our checkpoints record their tokenizer's sha256, which
  must equal the dataset's; a HF directory's vocabulary (``tokenizer.json`` or ``vocab.txt``)
  must equal the dataset tokenizer's;
* the body (encoder or decoder) must load completely; heads load when the init has them with
  the same shape (the MLM head for continued pretraining, BERT's pooler for sequence
  classification), except a classifier, which always starts afresh for the new labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from mlm_data import storage
from mlm_data.dataset.compatibility import INIT, Made, check_alike
from mlm_data.dataset.manifest import Manifest
from mlm_data.errors import MARKER, ConfigError
from trainer import checkpoint
from trainer.config import ModelConfig
from trainer.models import hf_interop

#: The ModelConfig fields that fix the shape and function of the weights.
ARCHITECTURE = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm", "layer_norm_eps", "activation")
#: Names that alias another parameter (tied output embeddings): never "unused".
_TIED = {"mlm_head.decoder.weight", "lm_head.weight"}


@dataclass(frozen=True)
class Init:
    """Weights to start from, with what is needed to check they fit the run."""

    where: str
    """What --init named."""
    description: str
    architecture: dict[str, Any]
    """Values of ``ARCHITECTURE`` fields."""
    weights: Mapping[str, torch.Tensor]
    """Tensors under our parameter names."""
    tokenizer_sha256: str | None = None
    """Our checkpoints: the sha256 of the tokenizer the weights were trained with."""
    vocabulary: Mapping[str, int] | None = None
    """HF directories: token → id, from the directory's tokenizer.json or vocab.txt, if any."""


def open_init(where: str) -> Init:
    if hf_interop.is_hf_dir(where):
        config, weights = hf_interop.read_dir(where)
        fields = hf_interop.model_fields(config, source=storage.join(where, hf_interop.CONFIG_NAME))
        return Init(where, f"Hugging Face {'/'.join(config.get('architectures') or ['BERT'])} {where}",
                    {k: fields[k] for k in ARCHITECTURE}, weights, vocabulary=_hf_vocabulary(where))
    try:
        state, _ = checkpoint.load_path(where)
    except checkpoint.CheckpointError as e:
        raise ConfigError(f"--init {where}: not a run folder with checkpoints, a checkpoint file or a Hugging Face "
                          f"model directory (config.json + model.safetensors): {str(e).removeprefix(MARKER)}") from None
    model = state["config"]["model"]
    tokenizer = (state.get("dataset") or {}).get("tokenizer") or {}
    return Init(where, f"{where} (step {state['step']}, task {model.get('task') or 'mlm'})",
                {k: model[k] for k in ARCHITECTURE}, state["model"], tokenizer_sha256=tokenizer.get("sha256"))


def adopt_architecture(model: ModelConfig, init: Init) -> ModelConfig:
    return replace(model, **init.architecture)


def check_tokenizer(init: Init, manifest: Manifest, *, source: str) -> None:
    """Refuse a dataset whose token ids would mean other tokens than the init's."""
    check_alike(Made(f"the weights of --init {init.where}", None, init.tokenizer_sha256, None),
                [Made.of(manifest)], purpose=INIT)
    fix = f"preprocess {source} with the init's tokenizer"
    if init.vocabulary is not None:
        from tokenizers import Tokenizer

        from mlm_data.text.tokenizer import dataset_tokenizer_text

        ours = Tokenizer.from_str(dataset_tokenizer_text(manifest)).get_vocab(with_added_tokens=True)
        differ = sorted(t for t in set(ours) | set(init.vocabulary) if ours.get(t) != init.vocabulary.get(t))
        if differ:
            raise ConfigError(f"--init {init.where}: its vocabulary differs from {source}'s tokenizer in "
                              f"{len(differ)} token(s) (e.g. {', '.join(map(repr, differ[:3]))}); {fix} "
                              f"({storage.join(init.where, 'tokenizer.json')})")


def load_into(model: nn.Module, init: Init) -> str:
    """Copy the init's weights into ``model`` in place; return a one-line account of it."""
    body = getattr(model, "body")  # noqa: B009 (every network of trainer.models.architectures has one)
    params = dict(model.named_parameters())  # each tied parameter once
    loaded, fresh = [], []
    with torch.no_grad():
        for name, param in params.items():
            source = init.weights.get(name)
            if name.startswith("classifier.") or source is None or source.shape != param.shape:
                fresh.append(name)
                continue
            param.copy_(source)
            loaded.append(name)
    missing = [n for n in fresh if n.startswith(body + ".")]
    if missing:
        examples = [f"{n} {tuple(init.weights[n].shape)} vs {tuple(params[n].shape)}" if n in init.weights else n
                    for n in missing[:3]]
        total = sum(n.startswith(body + ".") for n in params)
        raise ConfigError(f"--init {init.where}: no matching weights for {len(missing)} of the {total} {body} "
                          f"tensors of this model (e.g. {', '.join(examples)}); is it the same kind of model "
                          "(an encoder for the BERT tasks, a decoder for causal_lm)?")
    unused = [n for n in init.weights if n not in set(loaded) | _TIED]
    text = f"init: {len(loaded)} tensors from {init.description}"
    if fresh:
        text += f"; new: {_by_module(fresh)}"
    if unused:
        text += f"; not used: {_by_module(unused)}"
    return text


def _by_module(names: list[str]) -> str:
    """``['nsp.weight', 'nsp.bias', 'pooler.weight']`` → ``'nsp (2), pooler (1)'``."""
    counts = Counter(n.split(".")[0] for n in names)
    return ", ".join(f"{module} ({n})" for module, n in counts.items())


def _hf_vocabulary(where: str) -> dict[str, int] | None:
    """The directory's token → id map, from tokenizer.json or vocab.txt; None if it has neither."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(storage.read_text(storage.join(where, "tokenizer.json"))).get_vocab(
            with_added_tokens=True)
    except FileNotFoundError:
        pass
    try:
        return {token: i for i, token in enumerate(storage.read_text(storage.join(where, "vocab.txt")).splitlines())}
    except FileNotFoundError:
        return None
