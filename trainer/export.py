"""``mlm-train export --format hf``: a checkpoint as a Hugging Face model directory.

The directory holds ``config.json``, ``model.safetensors`` (layout in ``trainer.models.hf_interop``), the
run's ``tokenizer.json`` and, for a WordPiece tokenizer, ``vocab.txt``; ``transformers``
loads it with ``from_pretrained`` and nothing of ours installed.
"""

from __future__ import annotations

import json

from mlm_data import storage
from mlm_data.dataset.manifest import TOKENIZER_NAME
from mlm_data.errors import ConfigError
from trainer import checkpoint
from trainer.models import hf_interop

#: ``model.task`` → the HF class whose layout holds everything the run trained.
_ARCHITECTURES = {"token_classification": "BertForTokenClassification",
                  "sequence_classification": "BertForSequenceClassification"}


def export_hf(ckpt: str, out: str) -> list[str]:
    """Write the checkpoint ``ckpt`` (a run folder or a ``.pt`` file) to ``out``; return the
    files written."""
    from safetensors.torch import save

    state, run = checkpoint.load_path(ckpt)
    model = state["config"]["model"]
    task = model.get("task")
    if task == "causal_lm":
        raise ConfigError(f"{ckpt}: a causal-LM decoder has no HF BERT layout; export writes encoders "
                          "(pretrained with MLM, or fine-tuned)")
    architecture = _ARCHITECTURES.get(task, "BertForPreTraining" if model.get("nsp_head") else "BertForMaskedLM")
    dataset = state.get("dataset") or {}
    specials = (dataset.get("tokenizer") or {}).get("special_tokens") or {}
    config = hf_interop.hf_config(model, architecture=architecture, labels=dataset.get("labels"),
                          pad_token_id=specials.get("pad"))
    tensors = hf_interop.to_hf(state["model"], num_layers=model["num_layers"])
    written = {hf_interop.CONFIG_NAME: json.dumps(config, indent=2).encode("utf-8"),
               hf_interop.WEIGHTS_NAME: save(tensors, metadata={"format": "pt"})}
    url = storage.join(run, TOKENIZER_NAME)
    tokenizer = checkpoint.tokenizer_text(state, url) if storage.exists(url) else None
    if tokenizer is not None:
        written[TOKENIZER_NAME] = tokenizer.encode("utf-8")
        vocab = wordpiece_vocab(tokenizer)
        if vocab is not None:
            written["vocab.txt"] = "".join(token + "\n" for token in vocab).encode("utf-8")
    for name, data in written.items():
        storage.write_bytes(storage.join(out, name), data)
    return [storage.join(out, name) for name in written]


def wordpiece_vocab(tokenizer_json: str) -> list[str] | None:
    """The tokens of a WordPiece ``tokenizer.json`` in id order (``vocab.txt``, one per line),
    or None for another model type or ids with gaps."""
    model = json.loads(tokenizer_json).get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "WordPiece" or not isinstance(vocab, dict):
        return None
    by_id = sorted(vocab, key=vocab.__getitem__)
    return by_id if [vocab[t] for t in by_id] == list(range(len(by_id))) else None
