"""Hugging Face BERT interop: read a ``BertModel`` directory into our encoder, write ours back.

A HF BERT directory is ``config.json`` + ``model.safetensors``. Parameter names are those of
``transformers``' ``BertModel`` (``embeddings.word_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight``, ...), with a ``bert.`` prefix in the task
models (``BertForPreTraining``, ``BertForMaskedLM``, ...), whose heads live beside it
(``cls.predictions.*``, ``cls.seq_relationship.*``, ``classifier.*``). Our encoder is the same
network (post-LN BERT) under shorter names, except that query, key and value are one ``qkv``
matrix; the tables below are the whole mapping. Only ``safetensors`` is needed: no
``transformers`` import, no code from the directory is run.

Export writes the HF model class that holds everything the run trained:

* MLM + NSP (``mlm_nsp``): ``BertForPreTraining``: ``bert.*`` with the pooler,
  ``cls.predictions.*``, ``cls.seq_relationship.*``;
* MLM alone (``mlm_fullsent``, ``mlm_docsent``): ``BertForMaskedLM``: ``bert.*``, ``cls.predictions.*``;
* token classification: ``BertForTokenClassification``: ``bert.*``, ``classifier.*``, label names;
* sequence classification: ``BertForSequenceClassification``: ``bert.*`` with the pooler,
  ``classifier.*``, label names.

``BertModel.from_pretrained(dir)`` reads the encoder out of any of them. The MLM decoder weight
is tied to the word embeddings and stored once (HF ties it again on load).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from mlm_data import storage
from mlm_data.errors import ConfigError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

#: BertConfig's defaults, for the fields a config.json leaves out.
_HF_DEFAULTS = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512,
                "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
                "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02}
#: config.json field → ModelConfig field (copied as is).
_SAME = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
         "num_attention_heads": "num_heads", "intermediate_size": "intermediate_size",
         "max_position_embeddings": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
         "layer_norm_eps": "layer_norm_eps", "initializer_range": "initializer_range"}
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}

#: (ours, HF ``BertModel``) names of every tensor copied one to one, besides the per-layer ones.
_EMBEDDINGS = [("encoder.embeddings.word", "embeddings.word_embeddings"),
               ("encoder.embeddings.position", "embeddings.position_embeddings"),
               ("encoder.embeddings.token_type", "embeddings.token_type_embeddings"),
               ("encoder.embeddings.ln", "embeddings.LayerNorm"),
               ("pooler", "pooler.dense")]
_LAYER = [("attn.proj", "attention.output.dense"), ("ln_1", "attention.output.LayerNorm"),
          ("mlp.fc", "intermediate.dense"), ("mlp.proj", "output.dense"), ("ln_2", "output.LayerNorm")]
#: Heads: outside the ``bert.`` prefix in HF's task models.
_HEADS = [("mlm_head.dense", "cls.predictions.transform.dense"),
          ("mlm_head.ln", "cls.predictions.transform.LayerNorm"),
          ("nsp", "cls.seq_relationship"), ("classifier", "classifier")]


def is_hf_dir(path: str) -> bool:
    """True when ``path`` holds a HF model (``config.json``), not one of our run folders."""
    return storage.exists(storage.join(path, CONFIG_NAME))


def model_fields(config: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The ``ModelConfig`` fields a HF ``config.json`` describes (shape, activation, dropout)."""
    c = {**_HF_DEFAULTS, **config}
    errors = []
    if c.get("model_type", "bert") != "bert":
        errors.append(f"model_type is {c['model_type']!r}; only BERT (model_type 'bert') maps onto this encoder")
    if c.get("position_embedding_type", "absolute") != "absolute":
        errors.append(f"position_embedding_type is {c['position_embedding_type']!r}; only 'absolute' is supported")
    if c["hidden_act"] not in _ACTIVATIONS:
        errors.append(f"hidden_act is {c['hidden_act']!r}; supported: {', '.join(_ACTIVATIONS)}")
    if errors:
        raise ConfigError(f"{source}: cannot use this model:\n" + "\n".join(f"  - {e}" for e in errors))
    fields = {ours: c[theirs] for theirs, ours in _SAME.items()}
    return {**fields, "layer_norm": "post", "activation": _ACTIVATIONS[c["hidden_act"]]}


def read_dir(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config.json as a dict, tensors in our names)`` of a HF BERT directory."""
    from safetensors.torch import load

    source = storage.join(path, CONFIG_NAME)
    try:
        config = json.loads(storage.read_text(source))
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{source}: not a readable HF config ({e})") from None
    weights = storage.join(path, WEIGHTS_NAME)
    try:
        tensors = load(storage.read_bytes(weights))
    except FileNotFoundError:
        raise ConfigError(f"{weights}: not found; a HF model directory needs {WEIGHTS_NAME} (convert a "
                          "pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))") from None
    fields = model_fields(config, source=source)
    return config, from_hf(tensors, num_layers=fields["num_layers"])


def from_hf(tensors: Mapping[str, torch.Tensor], *, num_layers: int) -> dict[str, torch.Tensor]:
    """HF BERT tensors (with or without the ``bert.`` prefix) under our names; names we have no
    place for (``position_ids`` buffers, the tied decoder weight) are left out."""
    hf = {_modern(k.removeprefix("bert.")): v for k, v in tensors.items()}
    ours: dict[str, torch.Tensor] = {}
    for mine, theirs in _pairs(num_layers):
        if theirs in hf:
            ours[mine] = hf[theirs]
    for i in range(num_layers):
        for kind in ("weight", "bias"):
            q, k, v = (hf.get(f"encoder.layer.{i}.attention.self.{name}.{kind}") for name in ("query", "key", "value"))
            if q is not None and k is not None and v is not None:
                ours[f"encoder.blocks.{i}.attn.qkv.{kind}"] = torch.cat([q, k, v])
    bias = hf.get("cls.predictions.bias", hf.get("cls.predictions.decoder.bias"))
    if bias is not None:
        ours["mlm_head.decoder.bias"] = bias
    return ours


def to_hf(state: Mapping[str, torch.Tensor], *, num_layers: int, prefix: str = "bert.") -> dict[str, torch.Tensor]:
    """Our tensors under HF names: the encoder (and pooler) below ``prefix``, heads beside it.
    Every tensor is its own contiguous copy, as safetensors requires."""
    out: dict[str, torch.Tensor] = {}
    for mine, theirs in _pairs(num_layers):
        if mine in state:
            name = theirs if theirs.startswith(("cls.", "classifier.")) else prefix + theirs
            out[name] = state[mine].detach().clone().contiguous()
    for i in range(num_layers):
        for kind in ("weight", "bias"):
            q, k, v = state[f"encoder.blocks.{i}.attn.qkv.{kind}"].chunk(3)
            for name, t in (("query", q), ("key", k), ("value", v)):
                out[f"{prefix}encoder.layer.{i}.attention.self.{name}.{kind}"] = t.detach().clone().contiguous()
    if "mlm_head.decoder.bias" in state:
        out["cls.predictions.bias"] = state["mlm_head.decoder.bias"].detach().clone().contiguous()
    return out


def _pairs(num_layers: int) -> list[tuple[str, str]]:
    pairs = [*_EMBEDDINGS, *_HEADS]
    for i in range(num_layers):
        pairs += [(f"encoder.blocks.{i}.{mine}", f"encoder.layer.{i}.{theirs}") for mine, theirs in _LAYER]
    return [(f"{mine}.{kind}", f"{theirs}.{kind}") for mine, theirs in pairs for kind in ("weight", "bias")]


def _modern(name: str) -> str:
    """TF-era checkpoints call LayerNorm parameters gamma and beta."""
    if ".LayerNorm." in name:
        return name.replace(".gamma", ".weight").replace(".beta", ".bias")
    return name


def hf_config(model: Mapping[str, Any], *, architecture: str, labels: list[str] | None,
              pad_token_id: int | None) -> dict[str, Any]:
    """config.json for our resolved model config (a dict from the run's config.yaml)."""
    if model.get("layer_norm") != "post":
        raise ConfigError("model.layer_norm is 'pre': HF BERT is post-LN, so this encoder has no HF equivalent")
    config: dict[str, Any] = {
        "architectures": [architecture], "model_type": "bert",
        **{theirs: model[ours] for theirs, ours in _SAME.items()},
        "hidden_act": {"gelu": "gelu", "gelu_tanh": "gelu_new"}[model["activation"]],
        "hidden_dropout_prob": model["dropout"], "attention_probs_dropout_prob": model["attention_dropout"],
        "position_embedding_type": "absolute", "pad_token_id": pad_token_id or 0, "tie_word_embeddings": True,
    }
    if labels:
        config["id2label"] = dict(enumerate(labels))
        config["label2id"] = {name: i for i, name in enumerate(labels)}
    return config
